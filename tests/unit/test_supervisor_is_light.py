"""supervisor/ never imports nautilus_trader; protocol.py imports neither nautilus nor the FSM."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import supervisor

PACKAGE = Path(supervisor.__file__).resolve().parent
PROTOCOL = PACKAGE / "protocol.py"

# supervisor.__main__ runs the CLI (and sys.exit) when imported; it only imports supervisor.cli, which
# is imported below, and its own imports are checked by the AST test.
NOT_IMPORTABLE = {"supervisor.__main__"}


def all_modules() -> list[str]:
    names = ["supervisor"] + [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="supervisor.")]
    return sorted(set(names) - NOT_IMPORTABLE)


def imports_in_fresh_interpreter(modules: list[str]) -> dict:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_every_supervisor_module_is_found():
    modules = all_modules()
    for expected in ("cli", "config", "console", "daemon", "journal", "lifecycle", "protocol", "stop_gate",
                     "worker_link", "worker_process"):
        assert f"supervisor.{expected}" in modules
    on_disk = {
        "supervisor." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for p in PACKAGE.rglob("*.py")
        if p != PACKAGE / "__init__.py"
    }
    assert "supervisor.control.client.nsupctl" in on_disk
    assert set(modules) | NOT_IMPORTABLE == {"supervisor"} | on_disk


def test_importing_all_of_supervisor_does_not_import_nautilus():
    modules = all_modules()
    loaded = imports_in_fresh_interpreter(modules)
    assert set(modules) <= loaded  # they really were imported
    nautilus = sorted(m for m in loaded if m == "nautilus_trader" or m.startswith("nautilus_trader."))
    assert nautilus == []
    assert "node_worker" not in loaded  # which would import nautilus on its own


def test_the_check_would_see_nautilus():
    loaded = imports_in_fresh_interpreter(["supervisor.protocol", "nautilus_trader"])
    assert "nautilus_trader" in loaded


def test_protocol_imports_neither_nautilus_nor_the_fsm_statically():
    tree = ast.parse(PROTOCOL.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    forbidden = ("nautilus_trader", "transitions", "supervisor.lifecycle", ".lifecycle", "lifecycle")
    bad = {m for m in imported for f in forbidden if m == f or m.startswith(f + ".")}
    assert bad == set(), bad
    assert "supervisor.lifecycle" not in PROTOCOL.read_text() and "import transitions" not in PROTOCOL.read_text()


def test_protocol_alone_loads_neither_nautilus_nor_the_fsm():
    loaded = imports_in_fresh_interpreter(["supervisor.protocol"])
    assert "supervisor.protocol" in loaded
    for name in ("nautilus_trader", "transitions", "supervisor.lifecycle", "supervisor.daemon", "zmq"):
        assert name not in loaded, name


def test_main_module_only_imports_the_cli():
    tree = ast.parse((PACKAGE / "__main__.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"sys", "supervisor.cli"}


def test_nsup_starts_without_openssl_and_can_still_load_it_for_tls():
    """supervisor.cli keeps ssl and _hashlib out while asyncio, hashlib and hmac load (libcrypto and
    libssl are some 5 MB of nsup's memory); what needs TLS later (rediss://, an https webhook) imports
    ssl as usual, and sha256 (the node's fingerprint) is the same digest."""
    done = subprocess.run([sys.executable, "-c", (
        "import json, sys\n"
        "import supervisor.cli\n"
        "loaded = sorted(m for m in ('ssl', '_ssl', '_hashlib') if m in sys.modules)\n"
        "mapped = 'libcrypto' in open('/proc/self/maps').read()\n"
        "import asyncio, hashlib, ssl\n"
        "ran = asyncio.run(asyncio.sleep(0, 'ran'))\n"
        "print(json.dumps([loaded, mapped, hashlib.sha256(b'node').hexdigest(), ran, bool(ssl.create_default_context())]))\n"
    )], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        [], False, "545ea538461003efdc8c81c244531b003f6f26cfccf6c0073b3239fdedf49446", "ran", True]
