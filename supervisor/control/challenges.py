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
    trader_id: str
    positions: list
    expires_at: float  # time.monotonic()


class Challenges:
    def __init__(self, ttl_secs: float, clock=time.monotonic):
        self._ttl_secs = ttl_secs
        self._clock = clock
        self._open: dict[str, Challenge] = {}
        self._spent: set[str] = set()

    def issue(self, trader_id: str, positions: list) -> Challenge:
        challenge = Challenge(secrets.token_hex(8), trader_id, positions, self._clock() + self._ttl_secs)
        self._open[challenge.nonce] = challenge
        return challenge

    def redeem(self, nonce: str, confirmation: str) -> Challenge:
        """The challenge, if this answer is good; ChallengeError otherwise. Either way the nonce is spent."""
        challenge = self._open.pop(nonce, None)
        if challenge is None:
            raise ChallengeError("nonce already used" if nonce in self._spent else "unknown nonce")
        self._spent.add(nonce)
        if self._clock() > challenge.expires_at:
            raise ChallengeError(f"nonce expired ({self._ttl_secs:g}s); ask for a new challenge")
        if confirmation != challenge.trader_id:
            raise ChallengeError(f"confirmation {confirmation!r} does not match the trader id")
        return challenge
