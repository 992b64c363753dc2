"""The circuit breaker on its own, with an injected clock: every state and transition."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from tests.helpers import FakeClock
from tierroute.cascade.breaker import BreakerBoard, CircuitBreaker, Permit
from tierroute.errors import ConfigError
from tierroute.observability.metrics import BreakerState
from tierroute.settings import BreakerConfig, Settings


def make(clock: FakeClock | None = None, **config: Any) -> CircuitBreaker:
    config.setdefault("failure_threshold", 3)
    config.setdefault("failure_rate", 0.0)
    config.setdefault("cooldown_s", 10.0)
    return CircuitBreaker("cheap", BreakerConfig(**config), clock=clock or FakeClock())


def permit(breaker: CircuitBreaker) -> Permit:
    got = breaker.acquire()
    assert got is not None, f"breaker refused a call in state {breaker.state}"
    return got


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit(breaker).failure()


def opened(clock: FakeClock, **config: Any) -> CircuitBreaker:
    breaker = make(clock, **config)
    fail(breaker, config.get("failure_threshold", 3))
    assert breaker.state == "open"
    return breaker


def test_new_breaker_is_closed_and_lets_calls_through() -> None:
    """A fresh breaker is closed and gives a permit for every call."""
    breaker = make()
    assert breaker.state == "closed"
    assert all(breaker.acquire() is not None for _ in range(100))


def test_consecutive_failures_open_the_breaker() -> None:
    """failure_threshold retryable failures in a row open the breaker."""
    breaker = make()
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"


def test_a_success_resets_the_consecutive_count() -> None:
    """A success between failures starts the count again."""
    breaker = make()
    fail(breaker, 2)
    permit(breaker).success()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_consecutive_rule_is_off_at_zero() -> None:
    """failure_threshold = 0 never opens on failures in a row."""
    breaker = make(failure_threshold=0)
    fail(breaker, 50)
    assert breaker.state == "closed"


def test_failure_rate_over_the_window_opens_the_breaker() -> None:
    """Alternating failures never reach the threshold but reach the failure rate."""
    breaker = make(failure_threshold=0, failure_rate=0.5, min_calls=10, window_s=30.0)
    for _ in range(4):
        permit(breaker).success()
        permit(breaker).failure()
    assert breaker.state == "closed"
    permit(breaker).success()
    permit(breaker).failure()
    assert breaker.state == "open"


def test_failure_rate_needs_min_calls() -> None:
    """Below min_calls in the window the rate rule does not apply, however high the rate."""
    breaker = make(failure_threshold=0, failure_rate=0.5, min_calls=10)
    fail(breaker, 9)
    assert breaker.state == "closed"


def test_calls_older_than_the_window_do_not_count() -> None:
    """Failures that left the window no longer add to the rate."""
    clock = FakeClock()
    breaker = make(clock, failure_threshold=0, failure_rate=0.5, min_calls=10, window_s=30.0)
    fail(breaker, 9)
    clock.advance(31.0)
    for _ in range(9):
        permit(breaker).success()
    permit(breaker).failure()
    assert breaker.state == "closed"


def test_open_breaker_refuses_calls() -> None:
    """While open, no permit is given."""
    clock = FakeClock()
    breaker = opened(clock)
    assert breaker.acquire() is None


def test_open_breaker_stays_open_until_the_cooldown_passes() -> None:
    """Just before the cool-down ends the breaker still refuses."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(9.999)
    assert breaker.state == "open"
    assert breaker.acquire() is None


def test_open_breaker_turns_half_open_after_the_cooldown() -> None:
    """Once the cool-down has passed the breaker reads half-open and lets a trial through."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10.0)
    assert breaker.state == "half_open"
    trial = breaker.acquire()
    assert trial is not None
    assert trial.trial


def test_half_open_lets_a_bounded_number_of_trials_through() -> None:
    """Half-open gives at most half_open_max_calls permits at a time."""
    clock = FakeClock()
    breaker = opened(clock, half_open_max_calls=2)
    clock.advance(10.0)
    trials = [breaker.acquire() for _ in range(5)]
    assert sum(t is not None for t in trials) == 2


def test_trial_success_closes_the_breaker() -> None:
    """A successful trial call closes the breaker and calls flow again."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10.0)
    permit(breaker).success()
    assert breaker.state == "closed"
    assert breaker.acquire() is not None


def test_closing_forgets_earlier_failures() -> None:
    """After closing, it takes a full run of failures again to open."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10.0)
    permit(breaker).success()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_trial_failure_reopens_and_restarts_the_cooldown() -> None:
    """A failed trial opens the breaker again for a whole new cool-down."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10.0)
    permit(breaker).failure()
    assert breaker.state == "open"
    clock.advance(9.0)
    assert breaker.acquire() is None
    clock.advance(1.0)
    assert breaker.state == "half_open"


def test_released_trial_frees_its_slot_without_closing() -> None:
    """A cancelled trial says nothing: the breaker stays half-open and lets another through."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10.0)
    trial = permit(breaker)
    assert breaker.acquire() is None
    trial.release()
    assert breaker.state == "half_open"
    assert breaker.acquire() is not None


def test_released_calls_never_count_as_failures() -> None:
    """Terminal errors and cancellations (release) never open a closed breaker."""
    breaker = make()
    for _ in range(50):
        permit(breaker).release()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_results_from_before_a_transition_are_ignored() -> None:
    """A slow call let through while closed cannot re-open a breaker that has since closed."""
    clock = FakeClock()
    breaker = make(clock)
    slow = permit(breaker)
    fail(breaker, 3)
    clock.advance(10.0)
    permit(breaker).success()
    slow.failure()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_a_permit_settles_only_once() -> None:
    """Settling one permit twice counts once."""
    breaker = make()
    one = permit(breaker)
    one.failure()
    one.failure()
    one.failure()
    assert breaker.state == "closed"


def test_disabled_breaker_never_opens() -> None:
    """With enabled = false every call is let through whatever happens."""
    breaker = make(enabled=False)
    fail(breaker, 100)
    assert breaker.state == "closed"
    assert breaker.acquire() is not None


def test_listener_hears_the_current_state_then_every_transition() -> None:
    """A subscriber is told the state at once and then each change, in order."""
    clock = FakeClock()
    breaker = make(clock)
    heard: list[tuple[str, BreakerState]] = []
    breaker.subscribe(lambda tier, state: heard.append((tier, state)))
    fail(breaker, 3)
    clock.advance(10.0)
    permit(breaker).failure()
    clock.advance(10.0)
    permit(breaker).success()
    assert [s for _, s in heard] == ["closed", "open", "half_open", "open", "half_open", "closed"]
    assert {t for t, _ in heard} == {"cheap"}
    assert breaker.transitions == 5


def test_transitions_are_logged_with_their_cause(caplog: pytest.LogCaptureFixture) -> None:
    """Opening logs a warning naming the tier, both states and why."""
    caplog.set_level(logging.INFO, logger="tierroute.breaker")
    breaker = make()
    fail(breaker, 3)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "circuit breaker cheap: closed -> open (3 failures in a row)"


def test_concurrent_threads_never_get_more_trials_than_allowed() -> None:
    """Threads racing for half-open trials get exactly half_open_max_calls permits."""
    clock = FakeClock()
    breaker = opened(clock, half_open_max_calls=3)
    clock.advance(10.0)
    start = threading.Barrier(16)
    got: list[Permit | None] = []
    lock = threading.Lock()

    def race() -> None:
        start.wait()
        p = breaker.acquire()
        with lock:
            got.append(p)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p is not None for p in got) == 3


def test_concurrent_failures_open_the_breaker_once() -> None:
    """Many threads failing at once open the breaker exactly once."""
    breaker = make(failure_threshold=5)
    permits = [permit(breaker) for _ in range(64)]
    heard: list[BreakerState] = []
    breaker.subscribe(lambda _tier, state: heard.append(state))
    start = threading.Barrier(8)

    def fail_some(mine: list[Permit]) -> None:
        start.wait()
        for p in mine:
            p.failure()

    threads = [threading.Thread(target=fail_some, args=(permits[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.state == "open"
    assert heard == ["closed", "open"]


# --- the board and its configuration ------------------------------------------------------

TIERS = ("cheap", "mid", "expensive")


def test_board_holds_one_breaker_per_tier() -> None:
    """Each tier has its own breaker: one tier opening leaves the others closed."""
    board = BreakerBoard(TIERS, BreakerConfig(failure_threshold=1))
    p = board.acquire("cheap")
    assert p is not None
    p.failure()
    assert board.states() == {"cheap": "open", "mid": "closed", "expensive": "closed"}
    assert board.acquire("mid") is not None


def test_default_degradation_skips_up_and_falls_back_at_the_top() -> None:
    """Unlisted tiers skip to the next tier; the top tier, having none, falls back."""
    board = BreakerBoard(TIERS, BreakerConfig())
    assert board.actions == {
        "cheap": "skip_to_next",
        "mid": "skip_to_next",
        "expensive": "fall_back",
    }


def test_degrade_entries_set_each_tier_from_the_environment() -> None:
    """breaker.degrade entries from the environment override the defaults per tier."""
    settings = Settings.from_env({"TIERROUTE_BREAKER_DEGRADE": "mid=fall_back, expensive=fail"})
    board = BreakerBoard.from_settings(settings)
    assert board.actions == {"cheap": "skip_to_next", "mid": "fall_back", "expensive": "fail"}


@pytest.mark.parametrize(
    ("degrade", "message"),
    [
        ("cheap=retry", "must be TIER=ACTION"),
        ("cheap", "must be TIER=ACTION"),
        ("gold=fail", "unknown tier"),
        ("expensive=skip_to_next", "has no next tier"),
    ],
)
def test_bad_degrade_entries_are_config_errors(degrade: str, message: str) -> None:
    """A degradation entry that cannot work fails at start-up, naming the problem."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"TIERROUTE_BREAKER_DEGRADE": degrade})


@pytest.mark.parametrize(
    "config",
    [{"failure_rate": 1.5}, {"window_s": 0.0}, {"half_open_max_calls": 0}],
)
def test_breaker_settings_out_of_range_are_config_errors(config: dict[str, float]) -> None:
    """Failure rates outside [0, 1], an empty window or no trial calls are refused."""
    with pytest.raises(ConfigError, match="breaker"):
        BreakerConfig(**config)  # type: ignore[arg-type]
