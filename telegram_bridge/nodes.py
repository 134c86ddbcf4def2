"""The nodes on this host: node NAME's state dir is ROOT/NAME (nsup@NAME's StateDirectory=nsup/%i).

The same convention, and the same answer, as nsupctl's host view (supervisor/control/client/host.py's
`nodes`, on its way to main); until it lands this is the bridge's own copy, to be replaced by it.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.control.client.client import ENDPOINTS_FILE

# What nsup leaves in its state dir: the endpoints file while it runs, the journal and state.json from
# its first start on. Any one of them makes a directory a node's, stopped or running.
NODE_FILES = (ENDPOINTS_FILE, "journal.jsonl", "state.json")


def nodes(root: Path) -> dict[str, Path]:
    """Node name -> state dir, sorted by name; nothing if the root does not exist (yet)."""
    try:
        entries = sorted(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {entry.name: entry for entry in entries if entry.is_dir() and _is_node_dir(entry)}


def _is_node_dir(path: Path) -> bool:
    try:
        return any((path / name).exists() for name in NODE_FILES)
    except PermissionError:
        return True  # not ours to look into, but a node's: whoever asks hears it cannot be reached
