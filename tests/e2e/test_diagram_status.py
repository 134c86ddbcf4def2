"""`nsupctl status --diagram FILE` against a running nsup: the lifecycle, its state highlighted."""

from __future__ import annotations

import json

import pytest

from supervisor.control.commands.base import EXIT_OK
from supervisor.diagram import lifecycle_mermaid
from tests.e2e.test_nsupctl import nsupctl

pytestmark = pytest.mark.e2e


def test_status_writes_the_lifecycle_with_the_current_state_highlighted(nsup_run, tmp_path):
    run = nsup_run()
    run.wait_for_state("RUNNING")
    human, scripted = tmp_path / "human.mmd", tmp_path / "scripted.mmd"

    result = nsupctl(run, "status", "--diagram", str(human))
    assert result.returncode == EXIT_OK, result.stderr
    assert "RUNNING" in result.stdout.splitlines()[0] and f"diagram        {human}" in result.stdout
    assert human.read_text() == lifecycle_mermaid(highlight="RUNNING")
    assert "  Class RUNNING s_active" in human.read_text().splitlines()

    result = nsupctl(run, "--json", "status", "--diagram", str(scripted))
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["state"] == "RUNNING"  # stdout is still the one JSON object
    assert scripted.read_text() == human.read_text()
