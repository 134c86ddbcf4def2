"""`stop`: the graceful stop (REDUCING, market_exit in rounds, verified flat, then the worker stops).
Signals (systemd's SIGTERM, a Ctrl-C) ask for it too, as final stops (server/operators.py): whoever
sent them expects nsup to exit, so no `resume` undoes them. `--wait` follows the stop
to its end: STOPPED (exit 0), STUCK (4) or ABORTED (6); on a node that had already ended, at once
(so that `stop --wait all`, asked again, says how each ended rather than that it is gone)."""

from __future__ import annotations

import json
import time

from supervisor.control.commands.base import EXIT_ABORTED, EXIT_STUCK, Command, Context
from supervisor.control.commands.status import counts

FOLLOWED = (b"transition", b"flatten_round", b"flat_seen", b"halt_stuck", b"fault", b"refusal")
ENDS = {"STOPPED": 0, "ABORTED": EXIT_ABORTED, "STUCK": EXIT_STUCK}


class StopCommand(Command):
    name = "stop"
    requests = ("stop",)
    help = "the graceful stop; --wait follows rounds and counts to the end"
    nodes = "many"

    async def run(self, ctx: Context, request, actor: str) -> dict:
        return {"result": ctx.nsup.request_stop(actor), "state": ctx.nsup.lifecycle.state}

    def render(self, data: dict) -> str:
        return f"{data['result']} (state {data['state']})"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--wait", action="store_true", help="follow rounds and counts until STOPPED or stuck")

    def client(self, ctl) -> int:
        if not ctl.args.wait:
            return super().client(ctl)
        if (ended := ctl.ended()) is not None:
            return self._end(ctl, ended, before=True)
        events = ctl.subscribe()
        time.sleep(0.2)  # let the subscription reach nsup before the first event it must not miss
        super().client(ctl)
        last_counts, next_check = None, time.monotonic() + 1.0
        while True:
            if time.monotonic() >= next_check:  # on a clock: heartbeats keep the stream busy, never silent
                next_check = time.monotonic() + 1.0
                state = ctl.current_state()
                if state in ENDS:
                    return self._end(ctl, state)
            if not events.poll(max(0, int((next_check - time.monotonic()) * 1000))):
                continue
            topic, payload = events.recv_multipart()
            event = json.loads(payload)
            if topic == b"heartbeat":
                if event["status"]["counts"] != last_counts:
                    last_counts = event["status"]["counts"]
                    ctl.say(f"  [{event['state']}] {counts(last_counts)}", event)
            elif topic in FOLLOWED:
                ctl.say(f"  {ctl.record_line(event)}", event)
                end = event["dest"] if topic == b"transition" else "STUCK" if topic == b"halt_stuck" else None
                if end in ENDS:
                    return ENDS[end]

    @staticmethod
    def _end(ctl, state: str, before: bool = False) -> int:
        said = (f"nsup had already ended {state}" if before
                else f"nsup is {state}" + (": not flat after its rounds" if state == "STUCK" else ""))
        ctl.say(said, {"kind": "end", "state": state, "stuck": state == "STUCK"})
        return ENDS[state]
