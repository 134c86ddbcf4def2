"""A fake of the Telegram Bot API on loopback, for tests: Telegram is the world outside.

It records every sendMessage, serves getUpdates as a long poll from messages a test `say`s, and can
hang (every call waits until `hang(False)` or the server stops), to play a Bot API that is down.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "123456:TEST-token"


class FakeBotApi:
    def __init__(self):
        self.sent: list[dict] = []  # sendMessage bodies, in order
        self._updates: list[dict] = []
        self._cv = threading.Condition()
        self._hung = False
        self._closed = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                token, _, method = self.path.removeprefix("/bot").partition("/")
                status, answer = fake._answer(token, method, body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _answer(self, token: str, method: str, body: dict) -> tuple[int, dict]:
        with self._cv:
            self._cv.wait_for(lambda: not self._hung or self._closed)
        if token != TOKEN:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if method == "sendMessage":
            with self._cv:
                self.sent.append(body)
                self._cv.notify_all()
            return 200, {"ok": True, "result": {"message_id": len(self.sent)}}
        if method == "getUpdates":
            offset = body.get("offset") or 0
            with self._cv:
                self._cv.wait_for(lambda: any(u["update_id"] >= offset for u in self._updates) or self._closed,
                                  timeout=min(body.get("timeout", 0), 2))  # short: a test's bridge stops soon
                return 200, {"ok": True, "result": [u for u in self._updates if u["update_id"] >= offset]}
        return 404, {"ok": False, "description": f"no method {method}"}

    def say(self, user_id: int, text: str, chat_id: int = -100, age_secs: float = 0.0) -> None:
        """A message from `user_id` in `chat_id`, for the bot to read."""
        with self._cv:
            update_id = len(self._updates) + 1
            self._updates.append({"update_id": update_id, "message": {
                "message_id": update_id, "date": int(time.time() - age_secs), "text": text,
                "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
                "chat": {"id": chat_id, "type": "group"}}})
            self._cv.notify_all()

    def hang(self, hung: bool) -> None:
        with self._cv:
            self._hung = hung
            self._cv.notify_all()

    def texts(self) -> list[str]:
        with self._cv:
            return [m["text"] for m in self.sent]

    def wait_for_text(self, needle: str, timeout: float = 20.0, after: int = 0) -> str:
        """The first message sent (from index `after` on) containing `needle`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                found = next((m["text"] for m in self.sent[after:] if needle in m["text"]), None)
                if found is not None:
                    return found
                if not self._cv.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() >= deadline:
                    raise AssertionError(f"no message with {needle!r} within {timeout}s; sent: {self.texts()}")

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._server.shutdown()
        self._server.server_close()


def bridge_config(directory, api_url: str, root, allowed=(42,), chat_id: int = -100, coalesce_secs: float = 60.0):
    """A bridge config file (and its 0600 token file) in `directory`, for nodes under `root`."""
    import os

    token_file = directory / "telegram.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    config = directory / "telegram.toml"
    config.write_text("\n".join([
        "[telegram]", f'token_file = "{token_file}"', f"chat_id = {chat_id}",
        f"allowed_user_ids = [{', '.join(map(str, allowed))}]", f'api_url = "{api_url}"',
        f"coalesce_secs = {coalesce_secs}", "poll_secs = 1", "",
        "[nodes]", f'root = "{root}"', "scan_secs = 0.2", ""]))
    return config
