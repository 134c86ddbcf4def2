"""The bridge's loops: events from every node to Telegram, and operators' commands to the nodes.

Three kinds of thread, none waiting on another:
- the main thread reads every node's event stream (a SUB socket per node, found under the nodes'
  root and found again when a node starts or restarts), turns records into messages (messages.py),
  coalesces them and hands them to the outbox; it never calls Telegram;
- the outbox's thread sends (outbox.py): a slow or dead Bot API delays only the messages;
- one thread long-polls getUpdates; each allow-listed command runs on a small pool (an abort waits
  for the worker's end), and anyone else's is ignored and logged, coalesced per user.
"""

from __future__ import annotations

import json
import socket as net
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq
from loguru import logger

from supervisor.control.client.client import NotReachable, endpoints_in, subscribe
from telegram_bridge.bot_api import UNAUTHORIZED, BotApi, BotApiError
from telegram_bridge.carry_out import Operator
from telegram_bridge.commands import parse
from telegram_bridge.config import BridgeConfig
from telegram_bridge.messages import KINDS, Coalescer, message_for
from supervisor.control.client import host
from telegram_bridge.outbox import Outbox

POLL_MS = 200  # the main loop's tick: coalescing windows and node scans are checked this often
STALE_SECS = 120.0  # a command older than this was sent while the bridge was not reading: not carried out
COMMAND_THREADS = 4
UPDATES_RETRY_MAX_SECS = 30.0


class Bridge:
    def __init__(self, config: BridgeConfig, token: str):
        self.config = config
        t = config.telegram
        self._chat_id = t.chat_id
        self._allowed = frozenset(t.allowed_user_ids)
        self._root = host.host_root(config.nodes.root)
        self._bot = BotApi(t.api_url, token)
        self.outbox = Outbox(self._bot.send_message, t.outbox_size)
        self._coalescer = Coalescer(t.coalesce_secs)  # the main thread's
        self._strangers = Coalescer(t.coalesce_secs)  # the updates thread's
        self._operator = Operator(self.nodes)
        self._commands = ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="telegram-command")
        self._events: dict[str, tuple[str, zmq.Socket]] = {}  # node -> (events endpoint, SUB socket)
        self._cannot_follow: dict[str, str] = {}  # node -> why, as last logged
        self._poller = zmq.Poller()
        self._stopping = threading.Event()
        self.fatal: str | None = None  # why the bridge cannot go on (the token refused), once it has stopped

    def nodes(self) -> dict[str, Path]:
        return host.nodes(self._root)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        """Until stop(): the event loop on this thread, the updates on one of their own."""
        threading.Thread(target=self._read_updates, name="telegram-updates", daemon=True).start()
        self._scan()
        self.outbox.put(self._chat_id, f"nsup Telegram bridge up on {net.gethostname()}: nodes "
                                       f"{', '.join(self.nodes()) or 'none yet'} under {self._root}")
        next_scan = time.monotonic() + self.config.nodes.scan_secs
        try:
            while not self._stopping.is_set():
                if not self._events:  # zmq's poll returns at once with nothing to poll
                    self._stopping.wait(POLL_MS / 1000)
                for sub, _ in self._poller.poll(POLL_MS):
                    self._drain(sub)
                for _, text in self._coalescer.due():
                    self.outbox.put(self._chat_id, text)
                if time.monotonic() >= next_scan:
                    self._scan()
                    next_scan = time.monotonic() + self.config.nodes.scan_secs
        finally:
            self._commands.shutdown(wait=False, cancel_futures=True)
            self.outbox.close(drain_secs=0.0 if self.fatal else 2.0)  # a refused token sends nothing more
            for _, sub in self._events.values():
                sub.close(linger=0)

    # Events -> messages -----------------------------------------------------------------------------

    def _scan(self) -> None:
        """A SUB socket for every node that runs (its endpoints.json), again when its endpoint changes.
        A node that stops keeps its socket: ZeroMQ reconnects when its nsup comes back."""
        nodes = self.nodes()
        for name in [n for n in self._events if n not in nodes]:
            self._unwatch(name)
        for name, state_dir in nodes.items():
            try:
                endpoint = endpoints_in(state_dir)["events"][0]
            except NotReachable:
                continue
            if name in self._events and self._events[name][0] == endpoint:
                continue
            self._unwatch(name)
            try:
                sub = subscribe(endpoint, KINDS)
            except (NotReachable, ValueError) as exc:
                if self._cannot_follow.get(name) != str(exc):  # once per reason, not every scan
                    logger.warning("telegram: cannot follow {}'s events yet: {}", name, exc)
                self._cannot_follow[name] = str(exc)
                continue
            self._cannot_follow.pop(name, None)
            self._events[name] = (endpoint, sub)
            self._poller.register(sub, zmq.POLLIN)
            logger.info("telegram: following {} at {}", name, endpoint)

    def _unwatch(self, name: str) -> None:
        if name in self._events:
            _, sub = self._events.pop(name)
            self._poller.unregister(sub)
            sub.close(linger=0)

    def _drain(self, sub: zmq.Socket) -> None:
        name = next(n for n, (_, s) in self._events.items() if s is sub)
        while True:
            try:
                topic, payload = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:  # not two frames: not nsup's
                continue
            try:
                record = json.loads(payload)
                said = message_for(name, topic.decode(), record)
            except Exception:  # noqa: BLE001 - one odd record must not end the bridge; its traceback is logged
                logger.exception("telegram: a {} event of {} could not be read", topic[:40], name)
                continue
            if said is not None and (text := self._coalescer.offer(*said)) is not None:
                self.outbox.put(self._chat_id, text)

    # Updates -> commands ----------------------------------------------------------------------------

    def _read_updates(self) -> None:
        offset, retry, failing = None, 1.0, False
        while not self._stopping.is_set():
            try:
                updates = self._bot.get_updates(offset, self.config.telegram.poll_secs)
            except BotApiError as exc:
                if exc.code == UNAUTHORIZED:
                    self.fatal = f"the Bot API refused the token ({exc}): check token_file, or ask @BotFather for a new one"
                    self.stop()
                    return
                if not failing:
                    logger.warning("telegram: cannot read commands ({}); trying again", exc)
                failing = True
                self._stopping.wait(retry)
                retry = min(retry * 2, UPDATES_RETRY_MAX_SECS)
                continue
            if failing:
                logger.info("telegram: reading commands again")
            failing, retry = False, 1.0
            for update in updates if isinstance(updates, list) else []:
                try:
                    offset = max(offset or 0, int(update["update_id"]) + 1)
                    self._on_update(update)
                except Exception:  # noqa: BLE001 - an update of a shape not foreseen must not end the reading
                    logger.exception("telegram: an update could not be read: {!r}", str(update)[:200])
            for (user_id, node), asked in self._strangers.due():
                self._refuse(user_id, node, asked)

    def _on_update(self, update: dict) -> None:
        message = update.get("message") or {}
        text = message.get("text") if isinstance(message.get("text"), str) else ""
        user_id = (message.get("from") or {}).get("id")
        asked = parse(text)
        if asked is None:
            return
        if user_id not in self._allowed:  # ignored: no answer, so a stranger learns nothing
            node = getattr(asked, "node", None)
            if (said := self._strangers.offer((user_id, node), " ".join(text.split())[:120])) is not None:
                self._refuse(user_id, node, said)
            return
        chat_id = (message.get("chat") or {}).get("id", self._chat_id)
        age = time.time() - message.get("date", time.time())
        if age > STALE_SECS:
            logger.warning("telegram: {!r} from {} is {:.0f}s old; not carried out", text[:60], user_id, age)
            self.outbox.put(chat_id, f"not carried out: {text[:60]!r} was sent {age:.0f}s ago, while the bridge "
                                     "was not reading; send it again if it still stands")
            return
        logger.info("telegram: user {} asks {!r}", user_id, text[:200])
        self._commands.submit(self._carry_out, asked, user_id, chat_id)

    def _refuse(self, user_id, node: str | None, asked: str) -> None:
        """A stranger's command (or the count of them, coalesced): in the bridge's log, and on the
        record of the node it named, through nsup's own coalesced refusal records."""
        reason = f"telegram user {user_id} is not in the bridge's allowed_user_ids; ignored"
        logger.warning("telegram: refused {!r}: {}", asked, reason)
        if node is not None:
            self._commands.submit(self._operator.put_on_record, node, user_id, asked, reason)

    def _carry_out(self, asked, user_id: int, chat_id: int) -> None:
        try:
            reply = self._operator.answer(asked, user_id)
        except Exception as exc:  # noqa: BLE001 - a bug of the bridge's: the operator gets one line, the log the rest
            logger.exception("telegram: {!r} failed", asked)
            reply = f"the bridge failed to carry that out: {type(exc).__name__}: {exc}"
        self.outbox.put(chat_id, reply)
