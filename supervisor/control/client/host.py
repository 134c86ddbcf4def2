"""The nodes of one host, by name: where `nsup@NAME` keeps its state, and which nodes there are.

systemd's template unit (deploy/systemd/nsup@.service) gives node NAME the state dir ROOT/NAME
(StateDirectory=nsup/%i, so ROOT is /var/lib/nsup); nsup writes its journal and state.json there, and
while it runs, the endpoints file that says where its sockets are (client.py's endpoints_in). A
client that knows a node's name therefore knows everything else: nsupctl's host view, and any
bridge that serves every node of the host, ask this module and nothing else.

ROOT is /var/lib/nsup unless NSUP_ROOT says otherwise (or the caller passes one: nsupctl --root).
"""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.control.client.client import ENDPOINTS_FILE

DEFAULT_ROOT = Path("/var/lib/nsup")
ROOT_ENV = "NSUP_ROOT"
ALL = "all"  # names every node, as in `supervisorctl stop all`
# What nsup leaves in its state dir: the endpoints file while it runs, the journal and state.json from
# its first start on. Any one of them makes a directory a node's, stopped or running.
NODE_FILES = (ENDPOINTS_FILE, "journal.jsonl", "state.json")


def host_root(root: Path | str | None = None) -> Path:
    """The directory that holds one state dir per node: `root` if given, else $NSUP_ROOT, else /var/lib/nsup."""
    return Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def state_dir(name: str, root: Path | str | None = None) -> Path:
    """Node NAME's state dir (whether or not a node lives there yet)."""
    if not name or name in (".", "..", ALL) or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a node name (the NAME of nsup@NAME: one path component, not {ALL!r})")
    return host_root(root) / name


def nodes(root: Path | str | None = None) -> dict[str, Path]:
    """Every node under the root, by name, sorted: each directory holding one of nsup's files. A
    directory this user may not look into is listed too: it is a node's (the unit makes them 0700 or
    0750), and whoever asks should hear that it cannot be reached rather than not hear of it."""
    base = host_root(root)
    try:
        entries = sorted(os.scandir(base), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for entry in entries:
        if entry.is_dir() and is_node_dir(Path(entry.path)):
            found[entry.name] = Path(entry.path)
    return found


def select(names: list[str], root: Path | str | None = None) -> dict[str, Path]:
    """The nodes an operator named (`all` for every one), in the order named; a name with no node
    under the root is a ValueError that lists the nodes there are."""
    present = nodes(root)
    if ALL in names:
        if not present:
            raise ValueError(f"no nsup node under {host_root(root)} (set --root or ${ROOT_ENV})")
        return present
    chosen = {}
    for name in names:
        directory = state_dir(name, root)
        if name not in present:
            there = ", ".join(present) or "none"
            raise ValueError(f"no nsup node {name!r} under {directory.parent} (nodes there: {there})")
        chosen[name] = directory
    return chosen


def is_node_dir(directory: Path) -> bool:
    """Whether nsup has used this directory as a node's state dir (or it may not be looked into)."""
    try:
        return any((directory / name).exists() for name in NODE_FILES)
    except PermissionError:
        return True
