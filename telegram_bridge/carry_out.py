"""Carries out what an allow-listed operator asked (commands.py) on a node's control socket, as
`telegram:<user id>`, and says what came of it: nsup's answer, or nsup's reason for refusing.

nsup decides and journals everything: the bridge adds no rule of its own. It remembers only which
node and action each challenge it showed was for, so that `/approve NONCE ...` needs no node name.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from supervisor.control.client.client import ControlClient, NotReachable, ProtocolViolation
from supervisor.control.client.host_view import on_every_node
from supervisor.control.commands import COMMANDS
from supervisor.control.commands.base import Refusal
from supervisor.control.commands.status import counts
from telegram_bridge.commands import HELP, Approve, Asked, Challenge, Control, Help, Status, Unusable

CHALLENGES_REMEMBERED = 256


def actor_for(user_id: int) -> str:
    """Who asks, as nsup journals it (with @host after it)."""
    return f"telegram:{user_id}"


class Operator:
    def __init__(self, nodes: Callable[[], dict[str, Path]], timeout_secs: float = 5.0):
        self._nodes = nodes
        self._timeout_secs = timeout_secs
        self._lock = threading.Lock()  # commands run on a few threads at once
        self._issued: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()  # nonce -> (node, action)

    def answer(self, asked: Asked, user_id: int) -> str:
        """The reply to send back; never raises for anything nsup or the node says."""
        user = actor_for(user_id)
        try:
            match asked:
                case Help():
                    return HELP
                case Unusable(reason=reason):
                    return reason
                case Status(node=None):
                    return self._every_node(user)
                case Status(node=node):
                    return f"{node}\n{COMMANDS['status'].render(self._call(node, 'status', user))}"
                case Control(action=action, node=node):
                    data = self._call(node, action, user)
                    return f"{node}: {action}: {data.get('result', 'done')}"
                case Challenge(action=action, node=node):
                    return self._challenge(action, node, user)
                case Approve(nonce=nonce, confirmation=confirmation, reason=reason):
                    return self._approve(nonce, confirmation, reason, user)
        except Refusal as exc:
            return str(exc)
        raise AssertionError(f"unhandled {asked!r}")

    def put_on_record(self, node: str, user_id, asked: str, reason: str) -> None:
        """A refusal the bridge made (a stranger's command), put on the node's record: nsup answers
        with the refusal itself, on record. A node that cannot be reached keeps it in the log only."""
        try:
            self._call(node, "refused", actor_for(user_id), asked=asked[:200], reason=reason)
        except Refusal as exc:
            if "refused: asked" not in str(exc):
                logger.info("telegram: the refusal is not on {}'s record: {}", node, exc)

    def _every_node(self, user: str) -> str:
        """A line a node, every node asked at once: a silent nsup costs its own timeout, not the sum."""
        nodes = self._nodes()
        if not nodes:
            return "no nodes on this host"
        return "\n".join(on_every_node(nodes, lambda name, state_dir: self._status_line(name, state_dir, user)))

    def _status_line(self, name: str, state_dir: Path, user: str) -> str:
        try:
            s = self._ask(name, state_dir, "status", user)
        except Refusal as exc:
            return str(exc)
        return (f"{name}: {s['state']} ({s['trading_state']}{', paused' if s['paused'] else ''}) "
                f"{counts(s)} health={s['health']} heartbeat {s['heartbeat_age_secs']}s ago")

    def _challenge(self, action: str, node: str, user: str) -> str:
        data = self._call(node, action, user)
        with self._lock:
            self._issued[data["nonce"]] = (node, action)
            while len(self._issued) > CHALLENGES_REMEMBERED:
                self._issued.popitem(last=False)
        lines = COMMANDS[action].describe_challenge(data)
        return "\n".join([f"{node}: {lines[0]}", *lines[1:],
                          f"To approve: /approve {data['nonce']} TRADER_ID REASON"])

    def _approve(self, nonce: str, confirmation: str, reason: str, user: str) -> str:
        with self._lock:
            issued = self._issued.get(nonce)
            # A nonce not shown here (a typo, most often) goes to the node of the latest challenge, whose
            # nsup answers for it (unknown nonce): the bridge keeps no rule of its own.
            issued = issued or (next(reversed(self._issued.values())) if self._issued else None)
        if issued is None:
            raise Refusal("no challenge was shown here: ask with /abort NODE or /recover NODE first")
        node, action = issued
        data = self._call(node, f"{action}_confirm", user, timeout_secs=COMMANDS[action].timeout_secs, nonce=nonce,
                          confirmation=confirmation, reason=reason)
        return f"{node}: {data.get('result', 'done')}"

    def _call(self, node: str, command: str, user: str, timeout_secs: float | None = None, **fields) -> dict:
        """nsup's answer, or Refusal with its reason (or why it could not be asked)."""
        nodes = self._nodes()
        if node not in nodes:
            raise Refusal(f"no node named {node!r} (nodes: {', '.join(nodes) or 'none'})")
        return self._ask(node, nodes[node], command, user, timeout_secs, **fields)

    def _ask(self, node: str, state_dir: Path, command: str, user: str, timeout_secs: float | None = None,
             **fields) -> dict:
        try:
            client = ControlClient.from_state_dir(state_dir, self._timeout_secs, user=user)
        except NotReachable as exc:
            raise Refusal(f"{node}: not reachable: {exc}") from None
        try:
            reply = client.call(command, timeout_secs, **fields)
        except (NotReachable, ProtocolViolation) as exc:
            raise Refusal(f"{node}: {command}: {exc}") from None
        finally:
            client.close()
        if reply.status != "ok":
            raise Refusal(f"{node}: {command} refused: {reply.reason}")
        return reply.data or {}
