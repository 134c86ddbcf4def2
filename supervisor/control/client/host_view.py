"""nsupctl over several nodes of one host: the status table (`supervisorctl status`), and one command
sent to several nodes at once (`stop --wait all`), each node through its own nsup and its own gate.

Every node is asked in its own thread, so one slow or silent nsup costs its own timeout, not the sum of
them, and a node that cannot be reached is a row (or a line) that says so, never the end of the command.
The exit code is the worst of the nodes' (the highest: see nsupctl's table of codes).
"""

from __future__ import annotations

import json

from supervisor.control.commands.base import EXIT_OK, EXIT_UNREACHABLE

COLUMNS = ("NODE", "STATE", "TRADING", "POS", "INFLIGHT", "OPEN", "HEALTH", "HEARTBEAT", "UPTIME", "RESTARTS")


def on_every_node(nodes: dict, work) -> list:
    """`work(name, state_dir)` for each node, concurrently (threads: nsupctl loads no asyncio), its
    answers in the nodes' order. A single node is asked in this thread: the fast path stays fast."""
    if len(nodes) == 1:
        return [work(*next(iter(nodes.items())))]
    import threading

    answers: dict[str, object] = {}
    threads = [threading.Thread(target=lambda n=name, d=directory: answers.__setitem__(n, work(n, d)), daemon=True)
               for name, directory in nodes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answers[name] for name in nodes]


def unreachable_row(name: str, state_dir, reason: str) -> dict:
    """A node whose nsup did not answer: what its state.json last said (its final state, for a node
    that stopped), and why it did not answer."""
    row = {"node": name, "reachable": False, "error": reason, "state": None, "restarts": None}
    try:
        persisted = json.loads((state_dir / "state.json").read_text())
        row.update(state=persisted.get("state"), restarts=persisted.get("restarts"))
    except (OSError, ValueError, AttributeError):
        pass  # never started, or unreadable to this user: the reason says enough
    return row


def render_table(rows: list[dict]) -> str:
    """One line per node, columns aligned; a node that did not answer shows its last persisted state
    and why, in place of the live columns."""
    lines = [COLUMNS]
    for row in rows:
        if row.get("reachable"):
            lines.append((row["node"], row["state"], row.get("trading_state") or "-", _n(row.get("positions_open")),
                          _n(row.get("orders_inflight")), _n(row.get("orders_open")), row.get("health") or "-",
                          _age(row.get("heartbeat_age_secs")), _uptime(row.get("worker_uptime_secs")),
                          _n(row.get("restarts"))))
        else:  # the state state.json last held, and why there is nothing live to show
            lines.append((row["node"], row.get("state") or "?", row["error"]))
    widths = [max(len(line[i]) for line in lines if i < 2 or len(line) == len(COLUMNS)) for i in range(len(COLUMNS))]
    return "\n".join(_line(line, widths) for line in lines)


def worst(codes: list[int]) -> int:
    """The exit code of several nodes' answers: the worst (highest) one."""
    return max(codes, default=EXIT_OK)


def table_code(rows: list[dict]) -> int:
    return EXIT_UNREACHABLE if any(not row.get("reachable") for row in rows) else EXIT_OK


def _line(cells: tuple, widths: list[int]) -> str:
    if len(cells) < len(COLUMNS):  # an unreachable node: name and state aligned, then the reason
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), *cells[2:]]).rstrip()
    numeric = {"POS", "INFLIGHT", "OPEN", "RESTARTS"}
    return "  ".join(cell.rjust(width) if COLUMNS[i] in numeric else cell.ljust(width)
                     for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()


def _n(value) -> str:
    return "-" if value is None else str(value)


def _age(secs) -> str:
    return "-" if secs is None else f"{secs:.1f}s"


def _uptime(secs) -> str:
    """As supervisorctl shows it: H:MM:SS, and days in front past one."""
    if secs is None:
        return "-"
    days, rest = divmod(int(secs), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock
