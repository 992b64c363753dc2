"""Per-tier circuit breakers: stop calling a tier that keeps failing, and try it again later.

States and transitions (one `CircuitBreaker` per tier, held by a `BreakerBoard`):

    closed ──(failure_threshold retryable failures in a row, or failure_rate
              reached over window_s with at least min_calls calls)──▶ open
    open ────(cooldown_s passed; seen on the next look)─────────────▶ half_open
    half_open ─(a trial call succeeds)──▶ closed
    half_open ─(a trial call fails)─────▶ open (the cool-down starts again)

A caller asks `acquire()` before each call and gets a `Permit`, or None while the breaker
refuses. It settles the permit once: `success()`, `failure()` (a retryable provider error)
or `release()` (a terminal error, a cancellation, a request deadline: nothing learned about
the tier). Half-open lets at most `half_open_max_calls` trial permits out at a time.
Results of calls let through before the last transition are ignored, so a slow failure
from before a breaker closed cannot re-open it.

Breakers are safe to use from several threads and from the event loop: state changes happen
under a lock, and listeners (metrics, health) are called after it is released. Time comes
from an injectable clock. This module does not import grpc; the server turns states into
health statuses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tierroute.errors import ConfigError
from tierroute.observability import BreakerState
from tierroute.settings import BreakerConfig, Settings

logger = logging.getLogger(__name__)

DegradeAction = Literal["skip_to_next", "fall_back", "fail"]
# The error kind of a hop skipped because its tier's breaker was open.
CIRCUIT_OPEN = "circuit_open"
# The failure-rate window is kept as this many time buckets, so memory stays fixed.
_BUCKETS = 10

Listener = Callable[[str, BreakerState], None]
_Result = Literal["success", "failure", "release"]


@dataclass
class _Bucket:
    index: int
    calls: int = 0
    failures: int = 0


class Permit:
    """One call a breaker let through; settle it once (later settlements are ignored)."""

    __slots__ = ("_breaker", "_settled", "generation", "trial")

    def __init__(self, breaker: CircuitBreaker, generation: int, *, trial: bool) -> None:
        self._breaker = breaker
        self._settled = False
        self.generation = generation
        self.trial = trial

    def success(self) -> None:
        """The tier answered."""
        self._settle("success")

    def failure(self) -> None:
        """The call failed in a way that says the tier is unwell (a retryable error)."""
        self._settle("failure")

    def release(self) -> None:
        """The call says nothing about the tier (terminal error, cancellation, deadline)."""
        self._settle("release")

    def _settle(self, result: _Result) -> None:
        if self._settled:
            return
        self._settled = True
        self._breaker._settle(self, result)


class CircuitBreaker:
    """The breaker of one tier; see the module docstring for its rules."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        # Reentrant: a listener may read the state, which may notify again.
        self._notify_lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._state: BreakerState = "closed"
        # Bumped on every transition; permits from an older generation are ignored.
        self._generation = 0
        self._opened_at = 0.0
        self._consecutive = 0
        self._trials = 0
        self._bucket_s = config.window_s / _BUCKETS
        self._buckets: deque[_Bucket] = deque()
        self.transitions = 0

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down has passed reads half-open."""
        with self._lock:
            changed = self._advance()
            state = self._state
        self._notify(changed)
        return state

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(name, state)` now and after every transition."""
        with self._notify_lock:
            with self._lock:
                self._listeners.append(listener)
                state = self._state
            listener(self.name, state)

    def acquire(self) -> Permit | None:
        """A permit for one call, or None while the breaker refuses calls."""
        if not self._config.enabled:
            return Permit(self, -1, trial=False)
        with self._lock:
            changed = self._advance()
            permit: Permit | None = None
            if self._state == "closed":
                permit = Permit(self, self._generation, trial=False)
            elif self._state == "half_open" and self._trials < self._config.half_open_max_calls:
                self._trials += 1
                permit = Permit(self, self._generation, trial=True)
        self._notify(changed)
        return permit

    def _settle(self, permit: Permit, result: _Result) -> None:
        changed: BreakerState | None = None
        with self._lock:
            if permit.generation != self._generation:
                return
            if self._state == "half_open":
                self._trials -= 1
                if result == "success":
                    changed = self._move("closed", "a trial call succeeded")
                elif result == "failure":
                    changed = self._move("open", "a trial call failed")
            elif self._state == "closed" and result != "release":
                changed = self._count(failed=result == "failure")
        self._notify(changed)

    # -- under the lock ----------------------------------------------------------------

    def _advance(self) -> BreakerState | None:
        if self._state == "open" and self._clock() - self._opened_at >= self._config.cooldown_s:
            return self._move("half_open", f"the cool-down of {self._config.cooldown_s:g}s passed")
        return None

    def _count(self, *, failed: bool) -> BreakerState | None:
        config = self._config
        self._consecutive = self._consecutive + 1 if failed else 0
        index = int(self._clock() // self._bucket_s)
        if not self._buckets or self._buckets[-1].index != index:
            self._buckets.append(_Bucket(index))
        bucket = self._buckets[-1]
        bucket.calls += 1
        bucket.failures += failed
        while self._buckets[0].index <= index - _BUCKETS:
            self._buckets.popleft()
        if not failed:
            return None
        if config.failure_threshold and self._consecutive >= config.failure_threshold:
            return self._move("open", f"{self._consecutive} failures in a row")
        calls = sum(b.calls for b in self._buckets)
        failures = sum(b.failures for b in self._buckets)
        if config.failure_rate and calls >= config.min_calls:
            rate = failures / calls
            if rate >= config.failure_rate:
                return self._move(
                    "open",
                    f"{failures} of {calls} calls failed in {config.window_s:g}s",
                )
        return None

    def _move(self, state: BreakerState, why: str) -> BreakerState:
        old, self._state = self._state, state
        self._generation += 1
        self.transitions += 1
        self._trials = 0
        if state == "open":
            self._opened_at = self._clock()
        else:
            self._consecutive = 0
            self._buckets.clear()
        # One stable line per transition: operators grep for it and bench/load.py counts it.
        log = logger.warning if state == "open" else logger.info
        log("circuit breaker %s: %s -> %s (%s)", self.name, old, state, why)
        return state

    # -- outside the lock --------------------------------------------------------------

    def _notify(self, changed: BreakerState | None) -> None:
        if changed is None:
            return
        # Listeners hear the state as it is when they are called, one notification at a
        # time, so two threads' transitions can never leave a listener on a stale state.
        with self._notify_lock:
            with self._lock:
                state = self._state
                listeners = list(self._listeners)
            for listener in listeners:
                listener(self.name, state)


class BreakerBoard:
    """One circuit breaker per tier, and each tier's degradation action while it is open."""

    def __init__(
        self,
        tier_names: Sequence[str],
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        probe_names: Sequence[str] = (),
    ) -> None:
        if not tier_names:
            raise ConfigError("circuit breakers need at least one tier")
        self._config = config
        # Probes get breakers too; their degradation is the agreement check's (no action).
        self._breakers = {
            name: CircuitBreaker(name, config, clock=clock) for name in (*tier_names, *probe_names)
        }
        actions = config.actions(list(tier_names))
        self._actions: dict[str, DegradeAction] = {
            name: _action(value) for name, value in actions.items()
        }

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> BreakerBoard:
        """A board for the configured tiers and probes, with the configured breaker settings."""
        return cls(
            [t.name for t in settings.tiers],
            settings.breaker,
            clock=clock,
            probe_names=[p.label for p in settings.probes],
        )

    @property
    def enabled(self) -> bool:
        """Whether breakers can open at all (`breaker.enabled`)."""
        return self._config.enabled

    def breaker(self, tier: str) -> CircuitBreaker:
        """The breaker of `tier`; KeyError for a tier that is not configured."""
        return self._breakers[tier]

    def acquire(self, tier: str) -> Permit | None:
        """A permit for one call to `tier`, or None while its breaker is open."""
        return self._breakers[tier].acquire()

    def action(self, tier: str) -> DegradeAction:
        """What a cascade does when `tier`'s breaker refuses a call."""
        return self._actions[tier]

    @property
    def actions(self) -> Mapping[str, DegradeAction]:
        """Every tier's degradation action, cheapest tier first."""
        return dict(self._actions)

    def states(self) -> dict[str, BreakerState]:
        """Every tier's state now, cheapest first."""
        return {name: breaker.state for name, breaker in self._breakers.items()}

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(tier, state)` now for every tier and after every transition."""
        for breaker in self._breakers.values():
            breaker.subscribe(listener)


def _action(value: str) -> DegradeAction:
    if value == "skip_to_next":
        return "skip_to_next"
    if value == "fall_back":
        return "fall_back"
    if value == "fail":
        return "fail"
    raise ConfigError(f"unknown degradation action {value!r}")
