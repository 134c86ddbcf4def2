"""The nodes on this host: every directory under one root is a node's state dir, named as the directory.

The same convention as the host view of nsupctl; until that lands on main this is the bridge's own
(to be folded into supervisor/control/client/host.py).
"""

from __future__ import annotations

from pathlib import Path


def nodes_under(root: Path) -> dict[str, Path]:
    """Node name -> state dir, sorted by name; nothing if the root does not exist (yet)."""
    try:
        return {entry.name: entry for entry in sorted(root.iterdir()) if entry.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        return {}
