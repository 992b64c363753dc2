"""The limits one cascade request lives within: one deadline, one attempt budget, back-off.

Both limits are created once per request and shared by every provider call it makes
(answers, judges, speculative calls and retries); nothing resets them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tierroute.errors import ProviderError, RateLimited


class Deadline:
    """An absolute point on `clock` after which the request has no time left."""

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self._clock = clock
        self._at = clock() + max(seconds, 0.0)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(self._at - self._clock(), 0.0)

    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0


class AttemptBudget:
    """A fixed number of provider calls one request may make."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0

    @property
    def used(self) -> int:
        """Calls charged so far."""
        return self._used

    def take(self) -> bool:
        """Charge one call; False (and nothing charged) when the budget is spent."""
        if self._used >= self._limit:
            return False
        self._used += 1
        return True


def backoff_delay(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter for the `retry`-th retry (1 = first)."""
    ceiling = min(cap_s, base_s * (2 ** max(retry - 1, 0)))
    return rng.uniform(0.0, ceiling)


def retry_delay(
    error: ProviderError, retry: int, base_s: float, cap_s: float, rng: random.Random
) -> float:
    """How long to wait before retrying after `error`: the server's retry-after when given."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return max(error.retry_after, 0.0)
    return backoff_delay(retry, base_s, cap_s, rng)
