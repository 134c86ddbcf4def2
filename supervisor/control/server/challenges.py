"""Abort challenges: a nonce shown with the positions, good once, for a limited time.

The operator must answer with the trader id, typed, so that an abort is never one keystroke away
and never replayed from a shell history or a script written for another node.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass


class ChallengeError(ValueError):
    pass


@dataclass(frozen=True)
class Challenge:
    nonce: str
    action: str  # "abort" or "recover": a nonce is good for the action it was issued for only
    trader_id: str
    positions: list
    expires_at: float  # time.monotonic()


class Challenges:
    def __init__(self, ttl_secs: float, clock=time.monotonic):
        self.ttl_secs = ttl_secs
        self._clock = clock
        self._open: dict[str, Challenge] = {}
        self._spent: dict[str, tuple[float, str]] = {}  # nonce -> (when, why it is no good now)

    def issue(self, action: str, trader_id: str, positions: list) -> Challenge:
        self._forget_expired()
        challenge = Challenge(secrets.token_hex(8), action, trader_id, positions, self._clock() + self.ttl_secs)
        self._open[challenge.nonce] = challenge
        return challenge

    def redeem(self, action: str, nonce: str, confirmation: str) -> Challenge:
        """The challenge, if this answer is good; ChallengeError otherwise. Either way the nonce is spent."""
        challenge = self._open.pop(nonce, None)
        if challenge is None:
            raise ChallengeError(self._spent[nonce][1] if nonce in self._spent else "unknown nonce")
        self._spent[nonce] = (self._clock(), "nonce already used")
        if self._clock() > challenge.expires_at:
            raise ChallengeError(self._expired)
        if challenge.action != action:
            raise ChallengeError(f"this nonce was issued for {challenge.action}, not {action}")
        if confirmation != challenge.trader_id:
            raise ChallengeError(f"confirmation {confirmation!r} does not match the trader id")
        return challenge

    def _forget_expired(self) -> None:
        """Bounded memory: open challenges past their time become spent; spent ones are kept a while."""
        now = self._clock()
        for nonce in [n for n, c in self._open.items() if now > c.expires_at]:
            del self._open[nonce]
            self._spent[nonce] = (now, self._expired)
        for nonce in [n for n, (at, _) in self._spent.items() if now - at > 10 * self.ttl_secs]:
            del self._spent[nonce]

    @property
    def _expired(self) -> str:
        return f"nonce expired ({self.ttl_secs:g}s); ask for a new challenge"
