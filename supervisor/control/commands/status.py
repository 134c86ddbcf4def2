"""`status`: what nsup knows now, from its snapshot (answered without asking the worker)."""

from __future__ import annotations

from pathlib import Path

from supervisor.control.commands.base import Command, Context


class StatusCommand(Command):
    name = "status"
    requests = ("status",)
    help = "state, trading state, counts, positions, pids, heartbeat age, restarts"
    changes = False
    nodes = "many"

    def read(self, ctx: Context, request) -> dict:
        return {**ctx.nsup.snapshot().status(), "events_endpoints": ctx.events_endpoints}

    def render(self, data: dict) -> str:
        stop = data.get("stop") or {}
        lines = [
            f"state          {data['state']}  (trading {data['trading_state']}{', paused' if data['paused'] else ''}"
            f"{', stop requested by ' + stop['actor'] if stop else ''}{', hung' if data.get('hung') else ''})",
            f"counts         {counts(data)}",
            f"worker         pid {data['worker_pid']}, up {data['worker_uptime_secs']}s, heartbeat "
            f"{data['heartbeat_age_secs']}s ago, restarts {data['restarts']}, health {data['health']}",
            f"supervisor     pid {data['supervisor_pid']}, up {data['supervisor_uptime_secs']}s",
        ]
        if data.get("components_heard"):
            lines.append(f"components     {components(data)}")
        if data.get("degraded"):  # the journal or state.json cannot be written: nsup supervises on, and says so
            lines.append(f"degraded       {data['degraded'].removeprefix('degraded: ')}")
        if data.get("lease_lost"):  # with Redis: the node runs closing-only until its lease is held again
            lines.append(f"lease lost     {data['lease_lost']}; closing-only until it is held again")
        if data.get("worker_log"):
            lines.append(f"worker.log     not written: {data['worker_log']}")
        if schedule := data.get("schedule"):
            lines.append(f"schedule       {scheduled(schedule)}")
        if data["last_transition"]:
            t = data["last_transition"]
            lines.append(f"last           {t['source']} -> {t['dest']} ({t['trigger']}) at {t['ts']}")
        lines += [f"position       {position_line(p)}" for p in data["positions"]]
        lines += [f"order          {order_line(o)}" for o in data.get("orders", [])]
        lines += [f"mismatch       {line}" for line in data.get("reconciliation_mismatch", [])]
        return "\n".join(lines)

    def add_arguments(self, parser) -> None:
        parser.add_argument("--diagram", type=Path, metavar="FILE",
                            help="also write the lifecycle (Mermaid) with the current state highlighted to FILE")

    def client(self, ctl) -> int:
        data = ctl.call(self.name)
        ctl.say(self.render(data), data)
        if ctl.args.diagram is not None:
            from supervisor.diagram import lifecycle_mermaid

            ctl.args.diagram.write_text(lifecycle_mermaid(highlight=data["state"]))
            if not ctl.args.json:  # one more line of the table; --json output stays one object
                print(f"diagram        {ctl.args.diagram} (the lifecycle, {data['state']} highlighted)", flush=True)
        return 0


def components(data: dict) -> str:
    """NautilusTrader's components, naming only those in trouble: the rest run (or are being started or
    stopped with the node)."""
    troubled = data.get("components") or {}
    named = ", ".join(f"{component} {state}" for component, state in sorted(troubled.items()))
    return f"{len(troubled)} of {data['components_heard']} DEGRADED or FAULTED" + (f": {named}" if named else "")


def scheduled(schedule: dict) -> str:
    """The trading-session schedule's next action, in its own zone."""
    session = "in session" if schedule["in_session"] else "out of session"
    upcoming = schedule.get("next_kind")
    if upcoming is None:
        return f"{session}; nothing scheduled ({schedule['timezone']})"
    return f"{session}; next {upcoming} at {schedule['next_at']} ({schedule['timezone']})"


def counts(data: dict) -> str:
    return f"positions={data.get('positions_open')} inflight={data.get('orders_inflight')} open={data.get('orders_open')}"


def position_line(position: dict) -> str:
    p = position
    return f"{p['instrument_id']} {p['side']} {p['quantity']} unrealized {p['unrealized_pnl']}"


def order_line(order: dict) -> str:
    o = order
    return f"{o['client_order_id']} {o['instrument_id']} {o['side']} {o['quantity']} {o['order_type']} {o['status']} ({o['owner']})"
