"""Capped exponential backoff with jitter, for anything that retries an unreachable peer.

Jitter matters on a venue network: after a broker restart every daemon (and every camera
of every daemon) retries at once unless each waits a slightly different time.
"""

from __future__ import annotations

import random


class ExponentialBackoff:
    """Delays `initial_s, initial_s*m, initial_s*m**2, ...` capped at `max_s`, each shortened
    by a random share of up to `jitter` (0: exact delays, 1: anywhere in [0, delay]).

    Call `next_delay()` after each failure and `reset()` after a success.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got initial_s={initial_s}, max_s={max_s}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {multiplier}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The pause before the next attempt; counts one more failure."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** min(self.failures, 64))
        self.failures += 1
        return ceiling * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.failures = 0
