"""The Telegram Bot API, the two calls the bridge makes: sendMessage and getUpdates (long poll).

The standard library's urllib, JSON both ways. The token is part of every URL, so no URL is ever
logged or put in an error: errors name the method only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

MAX_TEXT = 4096  # Telegram's limit for one message


class BotApiError(RuntimeError):
    """A call that failed: unreachable, timed out, or answered with ok=false (`code`: the HTTP status)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


UNAUTHORIZED = 401  # the token is wrong or revoked: trying again cannot help


class BotApi:
    def __init__(self, api_url: str, token: str, timeout_secs: float = 10.0):
        self._base = f"{api_url.rstrip('/')}/bot{token}/"
        self._timeout_secs = timeout_secs

    def send_message(self, chat_id: int, text: str) -> None:
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 20] + "\n… (cut short)"
        self._call("sendMessage", {"chat_id": chat_id, "text": text, "disable_web_page_preview": True})

    def get_updates(self, offset: int | None, poll_secs: int) -> list[dict]:
        """The updates after `offset`, waiting up to `poll_secs` for one (Telegram's long poll)."""
        body = {"timeout": poll_secs, "allowed_updates": ["message"], **({"offset": offset} if offset else {})}
        return self._call("getUpdates", body, timeout_secs=poll_secs + self._timeout_secs)

    def _call(self, method: str, body: dict, timeout_secs: float | None = None):
        request = urllib.request.Request(self._base + method, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_secs or self._timeout_secs) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise BotApiError(f"{method}: HTTP {exc.code} {_description(exc)}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
            raise BotApiError(f"{method}: {getattr(exc, 'reason', None) or exc}") from None
        except ValueError as exc:
            raise BotApiError(f"{method}: an answer that is not JSON ({exc})") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            raise BotApiError(f"{method}: {answer.get('description') if isinstance(answer, dict) else answer!r}")
        return answer.get("result")


def _description(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("description", ""))
    except (ValueError, OSError, AttributeError):
        return ""
