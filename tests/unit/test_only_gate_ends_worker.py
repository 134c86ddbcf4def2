"""Only supervisor/stop_gate.py may signal the worker or send it StopNode (DESIGN.md, safety guards).

Two independent scans of every .py file in supervisor/: the source text (comments and docstrings
stripped by the tokenizer, so prose may mention StopNode) and the AST (so an alias such as
`from os import kill` or `getattr(os, "kill")` is caught too).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

import supervisor

PACKAGE = Path(supervisor.__file__).resolve().parent
SOURCES = sorted(PACKAGE.glob("**/*.py"))
GATE = PACKAGE / "stop_gate.py"
PROTOCOL = PACKAGE / "protocol.py"

TEXT_PATTERNS = ["pidfd_send_signal", "os.kill", "killpg", "send_signal", ".terminate(", ".kill(", "StopNode("]
SIGNAL_NAMES = {"pidfd_send_signal", "kill", "killpg", "send_signal", "terminate", "pthread_kill", "sigqueue"}


def code_text(source: str) -> str:
    """The source with comments and string literals removed, token by token."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING) or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            continue
        out.append(tok.string)
    return "".join(out)


def text_hits(source: str) -> set[str]:
    text = code_text(source)
    return {pat for pat in TEXT_PATTERNS if pat.replace(" ", "") in text}


def ast_hits(source: str, allow_stopnode_definition: bool = False) -> set[str]:
    hits = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in SIGNAL_NAMES:
            hits.add(node.attr)
        elif isinstance(node, ast.Name) and node.id in SIGNAL_NAMES:
            hits.add(node.id)
        elif isinstance(node, ast.alias) and node.name.split(".")[-1] in SIGNAL_NAMES | {"StopNode"}:
            hits.add(f"import {node.name}")
        elif isinstance(node, ast.Constant) and node.value in SIGNAL_NAMES:
            hits.add(f"string {node.value!r}")  # getattr(os, "kill")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name == "StopNode":
                hits.add("StopNode(")
    if not allow_stopnode_definition:
        return hits
    # protocol.py defines the class (and names it in the Command union); it must not construct one.
    return {h for h in hits if h != "StopNode("}


def test_the_scan_sees_the_package():
    names = {p.name for p in SOURCES}
    assert GATE in SOURCES
    assert {"stop_gate.py", "protocol.py", "daemon.py", "worker_process.py", "worker_link.py", "cli.py"} <= names


@pytest.mark.parametrize("path", [p for p in SOURCES if p != GATE], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_but_the_gate_signals_or_stops_the_worker(path):
    source = path.read_text()
    hits = text_hits(source)
    if path == PROTOCOL:
        assert "class StopNode(" in source
        hits.discard("StopNode(")
        assert code_text(source).count("StopNode(") == 1, "protocol.py may define StopNode, not construct one"
    assert hits == set(), f"{path.name} contains {sorted(hits)}"
    assert ast_hits(source, allow_stopnode_definition=path == PROTOCOL) == set()


def test_the_gate_does_signal_and_send_stopnode():
    """The scans would find the real thing: they find it in the gate."""
    source = GATE.read_text()
    assert {"pidfd_send_signal", "StopNode("} <= text_hits(source)
    assert {"pidfd_send_signal", "StopNode("} <= ast_hits(source)


@pytest.mark.parametrize(
    "snippet",
    [
        "import os\nos.kill(pid, 9)\n",
        "import os\nos.killpg(pgid, 15)\n",
        "import signal\nsignal.pidfd_send_signal(fd, signal.SIGKILL)\n",
        "popen.send_signal(15)\n",
        "popen.terminate()\n",
        "popen.kill()\n",
        "from os import kill\nkill(pid, 9)\n",
        "import os\ngetattr(os, 'kill')(pid, 9)\n",
        "from supervisor import protocol as p\nmsg = p.StopNode(require_flat=False)\n",
        "from supervisor.protocol import StopNode\n",
    ],
)
def test_the_scanner_catches_each_forbidden_form(snippet):
    assert text_hits(snippet) or ast_hits(snippet)
    assert ast_hits(snippet)


def test_the_scanner_ignores_prose():
    snippet = '"""It never sends StopNode( on its own; see os.kill docs."""\n# popen.kill() would be wrong\nx = 1\n'
    assert text_hits(snippet) == set() and ast_hits(snippet) == set()
