"""The Telegram bridge against real nsups on a real demo node, and a fake of the Bot API (Telegram is
the world outside): the messages for the main events, commands from allow-listed users only, an abort
approved through nsup's own challenge, and a Bot API that hangs never delaying a stop."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from tests.e2e.conftest import REPO
from tests.telegram_fake import FakeBotApi, bridge_config

pytestmark = pytest.mark.e2e

OPERATOR, STRANGER = 42, 99
ALWAYS_IN = {"hold_secs": 3600.0, "flat_secs": 0.0}
UNFLATTENABLE = {**ALWAYS_IN, "reject_reduce_only": True, "exit_max_attempts": 5}
STUCK_FAST = {"flatten_rounds": 1, "flatten_round_wait_secs": 0.5}


class BridgeProcess:
    """`python -m telegram_bridge --config FILE`, as the service runs it; its log kept."""

    def __init__(self, config):
        self.process = subprocess.Popen([sys.executable, "-m", "telegram_bridge", "--config", str(config)], cwd=REPO,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        self.log: list[str] = []
        self._reader = threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True)
        self._reader.start()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(10)
        self._reader.join(5)
        return code


@pytest.fixture
def telegram(tmp_path):
    """The fake Bot API, and a bridge over every node under tmp_path/nodes."""
    fake = FakeBotApi()
    root = tmp_path / "nodes"
    root.mkdir()
    bridge = BridgeProcess(bridge_config(tmp_path, fake.url, root))
    fake.wait_for_text("bridge up")
    yield fake, root, bridge
    fake.hang(False)
    assert bridge.stop() == 0, "".join(bridge.log)
    fake.close()


def ask(fake: FakeBotApi, text: str, needle: str, user: int = OPERATOR, timeout: float = 20.0) -> str:
    """Says `text` as `user`; the bridge's first message after it that contains `needle`."""
    after = len(fake.sent)
    fake.say(user, text)
    return fake.wait_for_text(needle, timeout, after=after)


def node(nsup_run, root, name: str, params: dict, supervisor: dict | None = None):
    """An nsup whose state dir is ROOT/NAME: the node the bridge calls NAME."""
    run = nsup_run(params, {"state_dir": str(root / name), **(supervisor or {})})
    run.state_dir = root / name  # where its journal is
    return run


def sigterm_to_exit(run) -> tuple[float, float]:
    """Seconds from SIGTERM to nsup's exit 0, and from the stop on record to STOPPED on record."""
    started = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.exit_code() == 0
    exited = time.monotonic() - started
    asked = next(r["ts"] for r in run.records("command") if r["actor"] == "signal:SIGTERM")
    stopped = run.records("transition")[-1]
    assert stopped["dest"] == "STOPPED"
    return exited, (datetime.fromisoformat(stopped["ts"]) - datetime.fromisoformat(asked)).total_seconds()


def test_events_and_commands_and_a_hung_bot_api_never_delays_a_stop(nsup_run, telegram):
    fake, root, bridge = telegram
    run = node(nsup_run, root, "alpha", ALWAYS_IN)
    baseline = nsup_run(ALWAYS_IN)  # not under the root: no bridge follows it
    assert "alpha: 🟢 up and reconciled, RUNNING" in fake.wait_for_text("alpha: 🟢 up and reconciled")
    run.wait_for_positions(2)

    fake.say(STRANGER, "/stop alpha")  # ignored: no answer, nothing done, logged (coalesced)
    fake.say(STRANGER, "/pause alpha")
    assert "alpha: pause:" in ask(fake, "/pause alpha", "alpha: pause")
    assert "(REDUCING, paused)" in ask(fake, "/status", "alpha: RUNNING")
    assert "alpha: resume:" in ask(fake, "/resume alpha", "alpha: resume")
    assert "no node named 'nope'" in ask(fake, "/stop nope", "no node named")
    commands = [(r["command"], r["actor"]) for r in run.records("command")]
    assert [c for c, _ in commands] == ["pause", "resume"], "the stranger's commands never reached nsup"
    assert all(actor.startswith(f"telegram:{OPERATOR}@") for _, actor in commands)
    refused = [line for line in bridge.log if f"telegram user {STRANGER} is not" in line]
    assert len(refused) == 1 and "/stop alpha" in refused[0], "the stranger's second command is counted, not logged"
    on_record, = run.wait_for(lambda: run.records("refusal"), what="the stranger's refusal on record")
    assert on_record["actor"].startswith(f"telegram:{STRANGER}@") and on_record["command"] == "refused"
    assert on_record["reason"] == f"asked '/stop alpha': telegram user {STRANGER} is not in the bridge's allowed_user_ids; ignored"

    baseline.wait_for_positions(2)
    without_bridge = sigterm_to_exit(baseline)
    fake.hang(True)  # the Bot API stops answering: sends and long polls wait
    time.sleep(0.5)
    with_hung_bridge = sigterm_to_exit(run)
    print("SIGTERM -> exit 0 (stop -> STOPPED on record): without a bridge {:.2f}s ({:.2f}s); with the bridge and a "
          "hung Bot API {:.2f}s ({:.2f}s)".format(*without_bridge, *with_hung_bridge))
    assert with_hung_bridge[0] < without_bridge[0] + 1.0
    assert run.transitions()[-1] == ("FLAT", "STOPPED")

    fake.hang(False)  # what the bridge read meanwhile was kept, and goes out now
    assert "stop asked by signal:SIGTERM" in fake.wait_for_text("alpha: 🟠 HALTING")
    fake.wait_for_text("alpha: ✅ flat and stopped cleanly")


def test_an_abort_approved_on_telegram_with_nsups_challenge(nsup_run, telegram):
    fake, root, _ = telegram
    run = node(nsup_run, root, "bravo", UNFLATTENABLE, STUCK_FAST)
    run.wait_for_positions(2)
    ask(fake, "/stop bravo", "bravo: stop")
    stuck = fake.wait_for_text("bravo: 🔴 STUCK in HALTING")
    assert "position EUR/USD.SIM" in stuck and "position GBP/USD.SIM" in stuck

    challenge = ask(fake, "/abort bravo", "/approve ")
    assert "ABORT stops the node WITH EXPOSURE. Trader DEMO-001" in challenge and "EUR/USD.SIM" in challenge
    nonce = re.search(r"/approve (\w+) ", challenge).group(1)
    assert "unknown nonce" in ask(fake, "/approve 0123456789abcdef DEMO-001 a typo", "refused")
    assert "does not match the trader id" in ask(fake, f"/approve {nonce} DEMO-002 wrong node", "refused")
    assert "nonce already used" in ask(fake, f"/approve {nonce} DEMO-001 again", "refused")
    assert run.process.poll() is None and run.transitions()[-1] == ("HALTING", "STUCK")

    nonce = re.search(r"/approve (\w+) ", ask(fake, "/abort bravo", "/approve ")).group(1)
    done = ask(fake, f"/approve {nonce} DEMO-001 the venue rejects every close", "bravo: the worker was ended",
               timeout=60)
    assert "nsup is ABORTED" in done
    assert run.exit_code() == 3
    approval, = run.records("approval")
    assert approval["operator"] == f"telegram:{OPERATOR}" and approval["actor"].startswith(f"telegram:{OPERATOR}@")
    assert (approval["nonce"], approval["reason"]) == (nonce, "the venue rejects every close")
    assert run.transitions()[-2:] == [("STUCK", "ABORTING"), ("ABORTING", "ABORTED")]
    assert fake.wait_for_text("bravo: 🟠 abort approved by").startswith(
        f"bravo: 🟠 abort approved by telegram:{OPERATOR}@")
    aborted = fake.wait_for_text("bravo: 🔴 ABORTED")
    assert aborted.startswith("bravo: 🔴 ABORTED (ended by") and "positions=2" in aborted, aborted
