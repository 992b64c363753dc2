"""The evaluation harness: every record through the server's own Router and CascadeEngine.

Each strategy is a `RunPlan` (settings, classifier scorer, routing strategy and rule, and
the Cascade request's knobs) per cross-validation fold, plus optional forced start tiers per
record. The harness answers each record with `CascadeEngine.run` over a `ReplayProvider`
(the replay server's engine, in-process) on a virtual-time event loop, so the latency
model's waits take no real time and latency figures are simulated seconds: parallel
(speculative) calls overlap, sequential hops add up.

Nothing here reads ground truth: outcomes record which tier and recorded model produced the
final answer and what it cost; `tierroute.offline.evaluation.scoring` scores them afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierroute.cascade import (
    CascadeEngine,
    CascadeQuery,
    CascadeResult,
    EventStream,
    JudgeMode,
    SpeculationMode,
)
from tierroute.errors import AnswerInterrupted, DeadlineExceeded
from tierroute.model import load_model
from tierroute.offline.evaluation.eval_data import EvalData, load_store
from tierroute.offline.evaluation.vclock import VirtualTimeLoop
from tierroute.providers.replay.messages import ReplayEngine
from tierroute.providers.replay.provider import ReplayProvider
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.routing import RouteQuery, Router, Scorer
from tierroute.settings import Settings, TierConfig

logger = logging.getLogger(__name__)

# Records per unit of work: large enough to amortise building an engine, small enough to
# keep both cores busy to the end and the progress bar moving.
CHUNK = 400
ALL_FOLDS = -1


@dataclass(frozen=True)
class RunPlan:
    """How a strategy asks the cascade engine to answer the records of one fold."""

    settings: Settings
    scorer: Scorer | None = None
    route_strategy: str = "heuristic"
    rule: str = "calibrated"
    # Forced start tier for every record (the always-one-tier strategies).
    start_tier: str | None = None
    self_routing: bool = False
    judge_mode: JudgeMode = "default"
    speculation: SpeculationMode = "default"
    # As served: the bundle directory whose models route (loaded by `load_model`, as a
    # server loads it, once per process; overrides `scorer`), and the value policy's
    # operating point each request asks for ("" = the bundle's default).
    bundle_dir: Path | None = None
    operating_point: str = ""


@dataclass(frozen=True)
class Strategy:
    """A named way of answering: one plan for every record, or one plan per fold."""

    name: str
    description: str
    plans: tuple[RunPlan, ...]
    # Forced start tier per record id (oracle, random routing); overrides the plan's.
    start_tiers: Mapping[str, str] | None = None
    # Whether plans are per fold (models and thresholds that never saw the fold).
    per_fold: bool = False

    def plan(self, fold: int) -> RunPlan:
        """The plan for records of `fold`."""
        return self.plans[fold] if self.per_fold else self.plans[0]


@dataclass(frozen=True)
class Outcome:
    """How one strategy answered one record; no answer text and no ground truth."""

    record_id: str
    start_tier: int
    final_tier: int
    cost_usd: float
    judge_cost_usd: float
    latency_ms: float
    escalated: bool
    judged: bool
    judge_status: str
    degraded: bool
    truncated: bool
    calls: int
    # Streamed runs only: simulated ms from the request to the first committed text.
    first_token_ms: float | None = None
    # Streamed runs only: why the stream ended in an error after its text began (a deadline
    # reached mid-answer: a committed answer cannot fall back to another tier), else "".
    stream_error: str = ""
    # Tokens billed per tier (configured order): (input, output, cache write, cache read),
    # summed over the record's calls, so any price ladder can price the outcome again.
    tokens: tuple[tuple[int, int, int, int], ...] = ()


def tier_tokens(
    hops: Sequence[Any], tier_names: Sequence[str]
) -> tuple[tuple[int, int, int, int], ...]:
    """Per tier: the input, output, cache-write and cache-read tokens its calls billed.

    Calls on models outside the tiers (an agreement probe) are in `cost_usd` only: no
    configured tier's price applies to them.
    """
    totals = [[0, 0, 0, 0] for _ in tier_names]
    index = {name: i for i, name in enumerate(tier_names)}
    for hop in hops:
        if hop.tier not in index:
            continue
        row = totals[index[hop.tier]]
        row[0] += hop.input_tokens
        row[1] += hop.output_tokens
        row[2] += hop.cache_creation_input_tokens
        row[3] += hop.cache_read_input_tokens
    return tuple((a, b, c, d) for a, b, c, d in totals)


def outcome_of(
    record_id: str,
    result: CascadeResult,
    first_token_ms: float | None = None,
    tier_names: Sequence[str] = (),
) -> Outcome:
    """Summarise a cascade result for scoring (`tier_names`: count tokens per tier)."""
    hops = result.hops
    final = [
        h for h in hops if h.role == "answer" and h.outcome == "ok" and h.tier == result.tier.name
    ]
    return Outcome(
        record_id=record_id,
        start_tier=result.start_tier_index,
        final_tier=result.tier_index,
        cost_usd=result.total_cost_usd,
        judge_cost_usd=sum(h.cost_usd for h in hops if h.role == "judge"),
        latency_ms=result.total_latency_ms,
        escalated=result.escalated,
        judged=any(h.role == "judge" and h.outcome == "ok" for h in hops),
        judge_status=result.judge_status,
        degraded=result.degraded,
        truncated=bool(final) and final[-1].stop_reason == "max_tokens",
        calls=sum(1 for h in hops if h.outcome in ("ok", "error")),
        first_token_ms=first_token_ms,
        tokens=tier_tokens(hops, tier_names) if tier_names else (),
    )


def _failed_stream(
    record_id: str, events: EventStream, started: float, ended: float, error: Exception
) -> Outcome:
    """A streamed request that ended in an error after its text began: what the caller saw."""
    first = None if events.first_text_at is None else (events.first_text_at - started) * 1000
    return Outcome(
        record_id=record_id,
        start_tier=-1,
        final_tier=-1,
        cost_usd=0.0,
        judge_cost_usd=0.0,
        latency_ms=(ended - started) * 1000,
        escalated=False,
        judged=False,
        judge_status="",
        degraded=True,
        truncated=False,
        calls=0,
        first_token_ms=first,
        stream_error=type(error).__name__,
    )


@dataclass(frozen=True)
class _Unit:
    strategy: int
    fold: int
    indices: tuple[int, ...]


@dataclass
class _State:
    data: EvalData
    strategies: Sequence[Strategy]
    seed: int
    store: ReplayStore | None = None
    # Answer through CascadeStream's path, measuring time to first token.
    stream: bool = False
    # Bundles loaded for as-served plans in this process, by directory and tier prices.
    served: dict[tuple[Path, tuple[TierConfig, ...]], Scorer] = field(default_factory=dict)

    def replay_store(self) -> ReplayStore:
        if self.store is None:
            self.store = load_store(self.data.path, self.data.limit)
        return self.store

    def scorer(self, plan: RunPlan) -> Scorer | None:
        """The plan's scorer: its bundle loaded as a server loads it (priced by the plan's
        tiers, warmed), or the injected one."""
        if plan.bundle_dir is None:
            return plan.scorer
        tiers = plan.settings.tiers
        key = (plan.bundle_dir, tiers)
        if key not in self.served:
            self.served[key] = load_model(plan.bundle_dir, len(tiers), tiers).scorer
        return self.served[key]


def _units(
    data: EvalData, strategies: Sequence[Strategy], folds: Mapping[str, int] | None
) -> list[_Unit]:
    units = []
    for s, strategy in enumerate(strategies):
        groups: dict[int, list[int]] = {}
        for i, record in enumerate(data.records):
            fold = ALL_FOLDS
            if strategy.per_fold:
                if folds is None:
                    raise ValueError(f"strategy {strategy.name} needs cross-validation folds")
                fold = folds[record.id]
            groups.setdefault(fold, []).append(i)
        for fold, indices in sorted(groups.items()):
            for start in range(0, len(indices), CHUNK):
                units.append(_Unit(s, fold, tuple(indices[start : start + CHUNK])))
    return units


def _run_unit(state: _State, unit: _Unit) -> list[Outcome]:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(_answer(state, unit))


async def _answer(state: _State, unit: _Unit) -> list[Outcome]:
    strategy = state.strategies[unit.strategy]
    plan = strategy.plan(unit.fold)
    settings = plan.settings
    loop = asyncio.get_running_loop()
    replay = ReplayEngine(state.replay_store(), settings.tiers, settings.replay, settings.probes)
    engine = CascadeEngine(
        settings,
        Router(settings, state.scorer(plan)),
        ReplayProvider(replay),
        rng_seed=state.seed,
        # The loop's clock is virtual: deadlines and latencies are in simulated seconds.
        clock=loop.time,
    )
    forced = strategy.start_tiers or {}
    names = [t.name for t in settings.tiers]
    outcomes = []
    for index in unit.indices:
        record = state.data.records[index]
        query = CascadeQuery(
            route=RouteQuery(
                text=record.prompt,
                strategy=plan.route_strategy,
                rule=plan.rule,
                # The record id makes judge sampling reproducible run to run.
                request_id=record.id,
                operating_point=plan.operating_point,
            ),
            start_tier=forced.get(record.id, plan.start_tier),
            self_routing=plan.self_routing,
            judge_mode=plan.judge_mode,
            speculation=plan.speculation,
        )
        if not state.stream:
            result = await engine.run(query, deadline_s=None)
            outcomes.append(outcome_of(record.id, result, tier_names=names))
            continue
        events = EventStream(clock=loop.time)
        started = loop.time()
        try:
            result = await engine.run(query, deadline_s=None, events=events)
        except (DeadlineExceeded, AnswerInterrupted) as exc:
            outcomes.append(_failed_stream(record.id, events, started, loop.time(), exc))
            continue
        # An empty recorded answer streams no text: no first token to time (None, and the
        # time-to-first-token report counts it apart).
        first = None if events.first_text_at is None else (events.first_text_at - started) * 1000
        outcomes.append(outcome_of(record.id, result, first, names))
    return outcomes


_WORKER_STATE: _State | None = None


def _init_worker(data: EvalData, strategies: Sequence[Strategy], seed: int, stream: bool) -> None:
    # A process pool's initializer can only hand state to later tasks through a global.
    global _WORKER_STATE  # noqa: PLW0603
    logging.getLogger("tierroute.cascade").setLevel(logging.WARNING)
    _WORKER_STATE = _State(data, strategies, seed, stream=stream)


def _run_in_worker(unit: _Unit) -> list[Outcome]:
    assert _WORKER_STATE is not None  # set by _init_worker
    return _run_unit(_WORKER_STATE, unit)


def run_strategies(
    data: EvalData,
    strategies: Sequence[Strategy],
    *,
    folds: Mapping[str, int] | None = None,
    workers: int = 1,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    store: ReplayStore | None = None,
    stream: bool = False,
) -> dict[str, tuple[Outcome, ...]]:
    """Answer every record with every strategy; outcomes in record order, per strategy.

    `folds` maps record ids to cross-validation folds (needed by per-fold strategies);
    `progress` is called with the number of records just finished. With `stream` every
    answer goes the way CascadeStream's do (streamed provider calls, the commit point) and
    its outcome carries the simulated time to first token. The result does not depend on
    `workers`.
    """
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names must be unique: {names}")
    units = _units(data, strategies, folds)
    results: dict[tuple[int, int], Outcome] = {}

    def collect(unit: _Unit, outcomes: list[Outcome]) -> None:
        for index, outcome in zip(unit.indices, outcomes, strict=True):
            results[(unit.strategy, index)] = outcome
        if progress is not None:
            progress(len(unit.indices))

    if workers <= 1:
        state = _State(data, strategies, seed, store=store, stream=stream)
        for unit in units:
            collect(unit, _run_unit(state, unit))
    else:
        # spawn, not fork: the parent may hold BLAS or tqdm threads a fork would copy mid-lock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(data, tuple(strategies), seed, stream),
        ) as pool:
            futures = {pool.submit(_run_in_worker, unit): unit for unit in units}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    return {
        strategy.name: tuple(results[(s, i)] for i in range(len(data.records)))
        for s, strategy in enumerate(strategies)
    }


def describe(strategies: Sequence[Strategy]) -> dict[str, Any]:
    """Strategy name -> its one-line description, for the report."""
    return {s.name: s.description for s in strategies}
