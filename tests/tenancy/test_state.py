"""The tenant state store on a real SQLite file and the real PostgreSQL: reservations
against a rolling budget, the last minute's requests, sessions with expiry, request ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import FakeClock
from tierroute.errors import TenancyUnavailable
from tierroute.tenancy import StateStore

HOUR = 3600.0


@pytest.fixture
async def store(sqlite_file: Path) -> AsyncIterator[tuple[StateStore, FakeClock]]:
    clock = FakeClock()
    state = StateStore.open(f"sqlite:///{sqlite_file}", clock=clock)
    await state.start()
    try:
        yield state, clock
    finally:
        await state.aclose()


async def _reserve(state: StateStore, worst: float, budget: float = 1.0) -> str | None:
    reservation, _ = await state.reserve(
        "acme", "r", "cheap", worst_usd=worst, worst_tokens=10, budget_usd=budget, window_s=HOUR
    )
    return reservation


async def test_a_call_past_the_budget_is_refused(store: tuple[StateStore, FakeClock]) -> None:
    """Reservations fill the budget; the one that would pass it is refused, nothing held."""
    state, _ = store
    assert await _reserve(state, 0.6) is not None
    assert await _reserve(state, 0.5) is None
    assert (await state.spend("acme", HOUR)).total_usd == pytest.approx(0.6)


async def test_settling_replaces_the_worst_case(store: tuple[StateStore, FakeClock]) -> None:
    """A settled call counts at its real cost, which makes room for the next one."""
    state, _ = store
    reservation = await _reserve(state, 0.6)
    assert reservation is not None
    await state.settle("acme", reservation, 0.1, 5)
    spend = await state.spend("acme", HOUR)
    assert (spend.settled_usd, spend.reserved_usd) == (pytest.approx(0.1), 0.0)
    assert await _reserve(state, 0.5) is not None


async def test_spend_leaves_the_rolling_window(store: tuple[StateStore, FakeClock]) -> None:
    """Spend older than the window no longer counts, and the refusal says when it frees."""
    state, clock = store
    await _reserve(state, 0.7)
    clock.advance(600)
    await _reserve(state, 0.2)
    _, spend = await state.reserve(
        "acme", "r", "cheap", worst_usd=0.5, worst_tokens=1, budget_usd=1.0, window_s=HOUR
    )
    assert spend.frees_at == pytest.approx(1000.0 + HOUR)
    clock.advance(HOUR - 599)
    assert await _reserve(state, 0.5) is not None


async def test_the_last_minute_holds_the_request_limit(store: tuple[StateStore, FakeClock]) -> None:
    """requests_per_minute requests are admitted, the next is not until the minute moves."""
    state, clock = store
    results = [
        (await state.admit("acme", requests_per_minute=2, tokens_per_minute=0))[0] for _ in range(3)
    ]
    assert results == [True, True, False]
    clock.advance(61)
    assert (await state.admit("acme", requests_per_minute=2, tokens_per_minute=0))[0]


async def test_tokens_of_the_last_minute_hold_the_token_limit(
    store: tuple[StateStore, FakeClock],
) -> None:
    """Model tokens reserved in the last minute count against tokens_per_minute."""
    state, _ = store
    await state.reserve(
        "acme", "r", "cheap", worst_usd=0.0, worst_tokens=500, budget_usd=0, window_s=HOUR
    )
    admitted, rate = await state.admit("acme", requests_per_minute=0, tokens_per_minute=500)
    assert (admitted, rate.tokens) == (False, 500)


async def test_a_session_keeps_its_highest_answered_tier_until_it_expires(
    store: tuple[StateStore, FakeClock],
) -> None:
    """The floor only rises; the agent loop follows the last answer; both expire."""
    state, clock = store
    await state.answered("acme", "chat", 2, None, ttl_s=100)
    await state.answered("acme", "chat", 0, 0, ttl_s=100)
    assert await state.session("acme", "chat") == (2, 0)
    assert await state.session("globex", "chat") == (0, None)
    clock.advance(101)
    assert await state.session("acme", "chat") == (0, None)


async def test_a_request_id_runs_once_and_then_answers_from_its_record(
    store: tuple[StateStore, FakeClock],
) -> None:
    """run, then running while it runs, then the recorded result; another request: mismatch."""
    state, _ = store
    assert (await state.claim("acme", "r1", "f", 60)).state == "run"
    assert (await state.claim("acme", "r1", "f", 60)).state == "running"
    await state.record("acme", "r1", b"result", ttl_s=60)
    done = await state.claim("acme", "r1", "f", 60)
    assert (done.state, done.result) == ("done", b"result")
    assert (await state.claim("acme", "r1", "other", 60)).state == "mismatch"
    assert (await state.claim("globex", "r1", "other", 60)).state == "run"


async def test_a_released_or_expired_request_id_runs_again(
    store: tuple[StateStore, FakeClock],
) -> None:
    """A failed call releases its id; a running claim whose lease passed is taken over."""
    state, clock = store
    await state.claim("acme", "r1", "f", 60)
    await state.release("acme", "r1")
    assert (await state.claim("acme", "r1", "f", 60)).state == "run"
    clock.advance(61)
    assert (await state.claim("acme", "r1", "f", 60)).state == "run"


async def test_replicas_on_postgresql_never_reserve_past_the_budget(pg_url: str) -> None:
    """Two stores (two replicas' connections) reserving at once stop at the budget."""
    replicas = [StateStore.open(pg_url), StateStore.open(pg_url)]
    for replica in replicas:
        await replica.start()
    try:
        results = await asyncio.gather(
            *(
                replicas[i % 2].reserve(
                    "acme",
                    f"r{i}",
                    "cheap",
                    worst_usd=0.1,
                    worst_tokens=1,
                    budget_usd=1.0,
                    window_s=HOUR,
                )
                for i in range(30)
            )
        )
        spend = await replicas[0].spend("acme", HOUR)
    finally:
        for replica in replicas:
            await replica.aclose()
    assert sum(r is not None for r, _ in results) == 10
    assert spend.total_usd == pytest.approx(1.0)


async def test_an_unreachable_database_is_unavailable_then_recovers(sqlite_file: Path) -> None:
    """A state whose database cannot be opened starts, answers TenancyUnavailable, and works
    once the database can be opened."""
    missing = sqlite_file.parent / "later"
    state = StateStore.open(f"sqlite:///{missing / 'state.sqlite3'}")
    await state.start()
    try:
        with pytest.raises(TenancyUnavailable, match="cannot be opened"):
            await state.session("acme", "chat")
        missing.mkdir()
        assert await state.session("acme", "chat") == (0, None)
    finally:
        await state.aclose()
