"""fsm_diagrams/: the lifecycle diagram is the code's (it cannot drift), and the hand-written
sequence diagrams are well formed and speak only of transitions the lifecycle has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import diagram
from supervisor import lifecycle as lc
from supervisor.diagram import lifecycle_mermaid

REPO = Path(__file__).resolve().parents[2]
DIAGRAMS = REPO / "fsm_diagrams"
COMMITTED = DIAGRAMS / diagram.MERMAID_FILE

EDGE = re.compile(r"^\s*(\w+) --> (\w+): (.+)$")
STATE = re.compile(r'^\s*state "(\w+)" as (\w+)$')
CLASS = re.compile(r"^\s*Class (\w+) (\w+)$")


def table() -> set[tuple[str, str, str, str | None]]:
    """supervisor.lifecycle.TRANSITIONS, one row per source: (trigger, source, dest, guard); an internal
    transition (no dest) goes from its source to itself, and guards that go together are joined by &."""
    return {(t, s, d or s, " & ".join(g) if isinstance(g, list) else g)
            for t, sources, d, g in lc.TRANSITIONS for s in (sources if isinstance(sources, list) else [sources])}


def drawn(text: str) -> set[tuple[str, str, str, str | None]]:
    """The edges of a Mermaid lifecycle: one "trigger [internal] [guard]" label per transition."""
    edges = set()
    for source, dest, labels in (m.groups() for line in text.splitlines() if (m := EDGE.match(line))):
        if source == "[*]":
            continue
        for label in labels.split(" | "):
            trigger, *marks = label.removesuffix("]").split(" [")
            guards = [mark.removesuffix("]") for mark in marks if mark.removesuffix("]") != "internal"]
            edges.add((trigger, source, dest, guards[0] if guards else None))
    return edges


def classes(text: str) -> dict[str, str]:
    return {m[1]: m[2] for line in text.splitlines() if (m := CLASS.match(line))}


# (a) the committed diagram is what the code draws ---------------------------------------------

def test_committed_lifecycle_diagram_is_what_the_code_draws():
    assert COMMITTED.read_text() == lifecycle_mermaid(), (
        "fsm_diagrams/lifecycle.mmd is not what supervisor/lifecycle.py draws: run `nsup diagram` and commit it")


def test_the_drift_test_fails_when_a_transition_is_added(monkeypatch):
    monkeypatch.setattr(lc, "TRANSITIONS", [*lc.TRANSITIONS, ("panic", lc.RUNNING, lc.ABORTED, "abort_is_approved")])
    changed = lifecycle_mermaid()
    assert changed != COMMITTED.read_text()
    assert ("panic", "RUNNING", "ABORTED", "abort_is_approved") in drawn(changed)


def test_the_drift_test_fails_when_a_guard_is_dropped(monkeypatch):
    monkeypatch.setattr(lc, "TRANSITIONS", [(t, s, d, None if t == "flat" else g) for t, s, d, g in lc.TRANSITIONS])
    changed = lifecycle_mermaid()
    assert changed != COMMITTED.read_text()
    assert ("flat", "HALTING", "FLAT", None) in drawn(changed)


def test_the_diagram_is_deterministic():
    assert lifecycle_mermaid() == lifecycle_mermaid()


# (b) every state and every transition, guards on the edges ------------------------------------

def test_every_state_and_transition_is_drawn_and_nothing_else():
    text = lifecycle_mermaid()
    states = {m[1] for line in text.splitlines() if (m := STATE.match(line))}
    assert states == set(lc.STATES)
    assert drawn(text) == table()
    assert f"[*] --> {lc.CREATED}" in text.splitlines()[-1]


def test_guards_are_on_the_edges():
    text = lifecycle_mermaid()
    assert "HALTING --> FLAT: flat [flat_is_verified]" in text
    assert "STUCK --> ABORTING: abort [abort_is_approved]" in text
    assert "FLAT --> STOPPED: stop [worker_exited_cleanly]" in text
    assert "RESTARTING --> RECOVERING: flat [flat_is_verified] | worker_lost" in text
    assert "STUCK --> RUNNING: resume [stop_is_resumable]" in text
    assert "RUNNING --> RUNNING: pause [internal] | unpause [internal] | flatten [internal] | recover [internal] " \
           "[worker_is_hung & recover_is_approved]" in text


def test_it_is_a_mermaid_state_diagram_without_trailing_blanks():
    text = lifecycle_mermaid()
    lines = text.splitlines()
    assert lines[:4] == ["---", f"title: {diagram.TITLE}", "---", "stateDiagram-v2"]
    assert text.endswith("\n") and all(line == line.rstrip() for line in lines)


# (c) the highlight ---------------------------------------------------------------------------

@pytest.mark.parametrize("state", lc.STATES)
def test_highlight_marks_exactly_the_given_state(state):
    text = lifecycle_mermaid(highlight=state)
    marked = classes(text)
    assert set(marked) == set(lc.STATES)
    assert [s for s, style in marked.items() if style == "s_active"] == [state]
    assert "classDef s_active " in text
    plain = lifecycle_mermaid().splitlines()
    assert [(a, b) for a, b in zip(plain, text.splitlines(), strict=True) if a != b] == [
        (f"  Class {state} s_default", f"  Class {state} s_active")]


def test_no_highlight_marks_nothing():
    assert set(classes(lifecycle_mermaid()).values()) == {"s_default"}


def test_an_unknown_state_is_refused():
    with pytest.raises(ValueError, match="NAPPING"):
        lifecycle_mermaid(highlight="NAPPING")


# (d) nsup diagram ----------------------------------------------------------------------------

def test_nsup_diagram_writes_the_generated_files(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "supervisor", "diagram", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (out / diagram.MERMAID_FILE).read_text() == COMMITTED.read_text()
    assert f"wrote {out / diagram.MERMAID_FILE}" in done.stdout
    svg = out / diagram.SVG_FILE
    if diagram.svg_unavailable() is None:
        assert f"wrote {svg}" in done.stdout and "<svg" in svg.read_text()
    else:
        assert f"skipped {svg}: " in done.stdout and not svg.exists()


def test_svg_is_skipped_with_a_reason_without_graphviz(monkeypatch, tmp_path):
    monkeypatch.setattr(diagram.shutil, "which", lambda _: None)
    reason = diagram.lifecycle_svg(tmp_path / "l.svg")
    assert "dot" in reason and not (tmp_path / "l.svg").exists()


@pytest.mark.skipif(diagram.svg_unavailable() is not None, reason=f"no SVG here: {diagram.svg_unavailable()}")
def test_svg_with_graphviz_has_the_guards_and_the_highlight(tmp_path):
    assert diagram.lifecycle_svg(tmp_path / "l.svg", highlight="HALTING") is None
    svg = (tmp_path / "l.svg").read_text()
    assert "flat [flat_is_verified]" in svg and 'fill="darksalmon"' in svg


# (e) the hand-written sequence diagrams --------------------------------------------------------

PARTICIPANTS = {"op", "nsup", "worker", "venue"}
MESSAGE = re.compile(r"^(\w+)\s*(?:->>|-->>|-\)|--\)|->|-->|-x|--x)\s*(\w+)\s*:\s*\S")
OPENS = ("loop ", "alt ", "opt ", "rect ", "par ", "critical ", "break ")
NAMED_TRANSITION = re.compile(r"\b([A-Z]+(?:/[A-Z]+)*) -> ([A-Z]+) \((\w+)")


def sequence_body(name: str) -> list[str]:
    """The lines after the front matter; asserts the minimal grammar on the way."""
    lines = (DIAGRAMS / name).read_text().splitlines()
    if lines[0] == "---":
        lines = lines[lines.index("---", 1) + 1:]
    assert lines[0] == "sequenceDiagram", f"{name} must start with sequenceDiagram"
    body = [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith("%%")]
    depth = 0
    for line in body:
        if line.startswith(("participant ", "actor ")):
            assert line.split()[1] in PARTICIPANTS, line
        elif line.startswith(OPENS):
            depth += 1
        elif line == "end":
            depth -= 1
            assert depth >= 0, f"{name}: an end without a block"
        elif line.startswith("else"):
            assert depth > 0, f"{name}: else outside a block"
        elif line.startswith("Note "):
            assert re.match(r"Note (over|left of|right of) \w+(,\w+)?: \S", line), line
        else:
            m = MESSAGE.match(line)
            assert m, f"{name}: not a message, note or block: {line!r}"
            assert {m[1], m[2]} <= PARTICIPANTS, line
        assert ";" not in line, f"{name}: a ';' ends a Mermaid statement: {line!r}"
    assert depth == 0, f"{name}: a block is not closed"
    return body


def in_order(body: list[str], *steps: str) -> None:
    text, at = "\n".join(body), 0
    for step in steps:
        found = text.find(step, at)
        assert found >= 0, f"{step!r} missing (or out of order) after {text[at - 80:at]!r}"
        at = found + len(step)


@pytest.mark.parametrize("name", ["graceful_stop.mmd", "recovery.mmd"])
def test_sequence_diagrams_parse_and_name_only_real_transitions(name):
    body = sequence_body(name)
    named = {(t, s, d) for line in body for states, d, t in NAMED_TRANSITION.findall(line) for s in states.split("/")}
    assert named, name
    assert named <= {(t, s, d) for t, s, d, _ in table()}, f"{name} names transitions the lifecycle does not have"
    declared = {line.split()[1] for line in body if line.startswith(("participant ", "actor "))}
    assert declared == PARTICIPANTS


def test_graceful_stop_shows_the_steps_in_order():
    in_order(sequence_body("graceful_stop.mmd"),
             "SIGTERM", "RUNNING -> HALTING (halt)", "SetTradingState(REDUCING)", "loop market_exit rounds",
             "MarketExit", "two flat reads", "SetTradingState(HALTED)", "CheckVenues",
             "HALTING/STUCK -> FLAT (flat", "StopNode(require_flat=true)", "exit 0", "FLAT -> STOPPED (stop", "exit 0")


def test_recovery_shows_exit_hang_and_reattach():
    body = sequence_body("recovery.mmd")
    in_order(body, "pidfd", "-> RECOVERING (worker_lost)", "RECOVERING -> ABORTED (give_up)", "tenacity",
             "spawn", "Hello", "RECOVERING -> BUILT (build)", "SetTradingState(REDUCING)", "RunNode",
             "reconciliation", "BUILT -> RUNNING (run)", "RUNNING -> HALTING (halt)")
    in_order(body, "The worker hangs", "hung", "SIGKILL", "hung_with_exposure", "nsupctl recover", "SIGKILL")
    in_order(body, "nsup crashes", "state.json", "re-attach", "resume_at")


def test_the_diagram_code_is_loaded_only_when_asked_for():
    code = ("import json, sys, supervisor.cli, supervisor.control.client.nsupctl, supervisor.daemon\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('supervisor.diagram', 'transitions.extensions')))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
