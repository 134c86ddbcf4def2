"""The terminal gets one line per exception; its traceback goes on record."""

from __future__ import annotations

import asyncio
import json

from loguru import logger

from supervisor.console import journal_tracebacks, setup_logging
from supervisor.journal import Journal, read_journal


def fail():
    raise KeyError("no such thing")


def test_an_exception_is_one_line_on_the_terminal_and_its_traceback_on_record(tmp_path, capfd):
    journal = Journal(tmp_path / "journal.jsonl")

    async def main():
        sink = journal_tracebacks(journal)
        try:
            fail()
        except KeyError:
            logger.exception("control: a message could not be handled")
        await asyncio.sleep(0)  # the record is made on the loop, outside the logging call
        logger.remove(sink)

    for json_lines in (False, True):
        setup_logging(json_lines=json_lines)
        asyncio.run(main())
        err = capfd.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        line = json.loads(err)["text"] if json_lines else err
        assert "could not be handled [KeyError: 'no such thing']" in line
    faults = [r for r in read_journal(journal.path) if r["kind"] == "fault"]
    assert len(faults) == 2 and "Traceback" in faults[0]["traceback"] and "in fail" in faults[0]["traceback"]
    assert faults[0]["reason"] == "control: a message could not be handled (KeyError: 'no such thing')"
    journal.close()
