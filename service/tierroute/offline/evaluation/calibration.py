"""Calibrate the shipped configuration: the value policy's price, risk thresholds, judge
sampling and speculation.

Every record is first answered by the real cascade engine (over the in-process replay
backend, on virtual time) under the nine fixed settings (COLUMNS) that any configuration
reduces to for it: start on cheap, mid or expensive; below the top, judged (every answer,
or the first only) or not; when judged, with or without the next tier speculating. Which
column a configuration uses for a record is known before anything is called. Under the
thresholds policy the start tier is the calibrated rule on the record's out-of-fold
classifier probabilities and the judge draw is the sampler's `uniform_draw(request id,
query type)` against the type's rate; under the value policy the action is the one with
the best expected value under the record's out-of-fold value estimates at the price.
Speculation needs a judged start and the classifier confidence below the bound. So a
configuration's quality, cost and latency are table lookups, exact for what the engine
would do, and a grid search over (price, or risk thresholds x per-type judge rates) x
speculative bound is fast.

Search, for a cost budget: the most correct answers with cost per query within the budget
(less a reserve for speculation); for a quality floor: the cheapest configuration at or
above it. Ties go to lower cost, then to the lower grid point. Then the speculative bound
that most lowers p95 latency while adding at most `speculation_cost_share` to the cost
(and staying within a budget). Cross-validated figures are cross-fitted: per fold, search
on the other folds' rows and apply the result to the fold.

This is a training-time step: it reads ground truth to score the tables.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tierroute.cascade import JudgeMode, apply_cascade, uniform_draw
from tierroute.errors import ConfigError
from tierroute.model.operating import (
    DEFAULT_SPECULATION_COST_SHARE,
    PointTarget,
    Solved,
    action_choice,
    feasible_best,
    limit_of,
    solve_price,
)
from tierroute.offline.evaluation.calibration_probe import probe_settings, with_probe_tokens
from tierroute.offline.evaluation.calibration_target import DIGITS, CalibrationTarget, TargetKind
from tierroute.offline.evaluation.crossval import CrossValidation
from tierroute.offline.evaluation.eval_data import EvalData
from tierroute.offline.evaluation.harness import Outcome, RunPlan, Strategy, run_strategies
from tierroute.offline.evaluation.scoring import GroundTruth
from tierroute.offline.evaluation.summary import correctness
from tierroute.offline.training.calibrate import risk_columns
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.routing import QUERY_TYPES, VALUE_ACTIONS, RiskThresholds, allowed_actions
from tierroute.settings import ProbeConfig, Settings

logger = logging.getLogger(__name__)

# (start tier index, judge mode, speculative) of each table column; the top tier is never
# judged. "start_only" judges the first answer and returns an escalated one unjudged.
COLUMNS: tuple[tuple[int, JudgeMode, bool], ...] = (
    (0, "never", False),
    (0, "always", False),
    (0, "always", True),
    (1, "never", False),
    (1, "always", False),
    (1, "always", True),
    (2, "never", False),
    (0, "start_only", False),
    (0, "start_only", True),
    # The agreement checks (with the probe, `calibration_probe`): only when one is set up.
    (0, "agreement", False),
    (0, "agreement_mid", False),
)
AGREEMENT_COLUMNS = (9, 10)
COLUMNS_TIERS = 3
TOP_COLUMN = 6
_PLAIN = np.array([0, 3, 6])
_JUDGED = np.array([1, 4, 6])
_SPECULATIVE = np.array([2, 5, 6])
# The value policy's actions (tierroute.routing.plan.VALUE_ACTIONS: ACTIONS, then the
# agreement checks) as table columns, serial and speculative (the speculative column is
# used when the start answer is judged and the classifier's confidence is below the
# speculative bound; an agreement check never speculates).
ACTION_COLUMNS = np.array([0, 1, 7, 3, 4, 6, 9, 10])
_ACTION_SPECULATIVE = np.array([0, 2, 8, 3, 5, 6, 9, 10])
_ACTION_JUDGED = np.array([False, True, True, False, True, False, False, False])
RISK_COARSE = np.round(np.arange(51) * 0.02, 4)
RISK_FINE_STEP = 0.0025
RATE_GRID = np.round(np.arange(11) * 0.1, 4)
BOUND_GRID = np.round(np.arange(21) * 0.05, 4)
# Query types with fewer calibration rows than this use the default judge rate.
MIN_TYPE_ROWS = 100


@dataclass(frozen=True)
class Tables:
    """Per record (rows) and fixed setting (COLUMNS): what the cascade engine did."""

    quality: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]
    judge_cost: npt.NDArray[np.float64]
    latency_ms: npt.NDArray[np.float64]
    final: npt.NDArray[np.int64]
    escalated: npt.NDArray[np.bool_]
    # Tokens billed per row, column, tier and kind (operating.TOKEN_KINDS): what the value
    # model learns to predict, and what prices the outcome under another ladder.
    tokens: npt.NDArray[np.float64] | None = None
    # The probe the agreement columns called (None: the tables have no such columns); its
    # tokens are one more payer after the tiers in `tokens`.
    probe: ProbeConfig | None = None

    @property
    def action_columns(self) -> npt.NDArray[np.int64]:
        """The columns that play the value policy's actions these tables can score."""
        return ACTION_COLUMNS if self.quality.shape[1] == len(COLUMNS) else ACTION_COLUMNS[:6]


def table_strategies(settings: Settings, probe: ProbeConfig | None = None) -> list[Strategy]:
    """The fixed settings (COLUMNS) as harness strategies (routing overridden by start
    tier); the agreement columns only with a `probe`."""
    if len(settings.tiers) != 3:
        raise ConfigError("calibration searches three-tier configurations only")
    names = [t.name for t in settings.tiers]
    out = []
    for column, (start, judge_mode, speculative) in enumerate(COLUMNS):
        played = settings
        if column in AGREEMENT_COLUMNS:
            if probe is None:
                continue
            played = probe_settings(settings, probe)
        tier = settings.tiers[start].name
        out.append(
            Strategy(
                f"table:{column_name(column, names)}",
                "calibration table column",
                (
                    RunPlan(
                        played,
                        start_tier=tier,
                        judge_mode=judge_mode,
                        speculation="on" if speculative else "off",
                    ),
                ),
            )
        )
    return out


def build_tables(
    data: EvalData,
    settings: Settings,
    truth: GroundTruth,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    store: ReplayStore | None = None,
    probe: ProbeConfig | None = None,
) -> Tables:
    """Answer every record under every fixed setting with the cascade engine, and score it
    (the agreement columns too, with `probe`: `calibration_probe.table_probe`)."""
    strategies = table_strategies(settings, probe)
    outcomes = run_strategies(data, strategies, workers=workers, progress=progress, store=store)
    columns = [outcomes[s.name] for s in strategies]
    tables = tables_from_outcomes(columns, data, truth)
    if probe is None or tables.tokens is None:
        return tables
    tokens = with_probe_tokens(tables.tokens, tables.cost, settings.tiers, probe, AGREEMENT_COLUMNS)
    return dataclasses.replace(tables, tokens=tokens, probe=probe)


def tables_from_outcomes(
    columns: Sequence[Sequence[Outcome]], data: EvalData, truth: GroundTruth
) -> Tables:
    """Stack per-column outcomes into row x column arrays."""

    def stack(get: Callable[[Outcome], float]) -> npt.NDArray[np.float64]:
        return np.array([[get(o) for o in col] for col in columns], dtype=np.float64).T

    return Tables(
        quality=np.stack([correctness(col, data, truth, COLUMNS_TIERS) for col in columns], axis=1),
        cost=stack(lambda o: o.cost_usd),
        judge_cost=stack(lambda o: o.judge_cost_usd),
        latency_ms=stack(lambda o: o.latency_ms),
        final=stack(lambda o: o.final_tier).astype(np.int64),
        escalated=stack(lambda o: o.escalated).astype(bool),
        tokens=np.array([[o.tokens for o in col] for col in columns], dtype=np.float64).transpose(
            1, 0, 2, 3
        ),
    )


@dataclass(frozen=True)
class Inputs:
    """Row-aligned arrays the search reads: routing signals, sampler draws and the tables."""

    risks: npt.NDArray[np.float64]
    confidence: npt.NDArray[np.float64]
    type_index: npt.NDArray[np.int64]
    draw: npt.NDArray[np.float64]
    tables: Tables
    # Out-of-fold value-model estimates per action (tierroute.routing.plan.ACTIONS), when the
    # value policy is calibrated: P(correct) and cost in USD.
    value_p: npt.NDArray[np.float64] | None = None
    value_cost: npt.NDArray[np.float64] | None = None
    # (rows, actions): the actions each record may take (routing.plan.allowed_actions:
    # the agreement checks only where the prompt asks for a comparable final answer).
    allowed: npt.NDArray[np.bool_] | None = None

    @classmethod
    def build(
        cls,
        data: EvalData,
        proba: npt.NDArray[np.float64],
        tables: Tables,
        value: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
    ) -> Inputs:
        """From out-of-fold probabilities (record order), the tables and value estimates."""
        types = [r.query_type for r in data.records]
        return cls(
            risks=risk_columns(proba),
            confidence=proba.max(axis=1),
            type_index=np.array([QUERY_TYPES.index(t) for t in types], dtype=np.int64),
            # The cascade's own draw: request id = record id, stratum = query type.
            draw=np.array([uniform_draw(r.id, r.query_type) for r in data.records]),
            tables=tables,
            value_p=value[0] if value is not None else None,
            value_cost=value[1] if value is not None else None,
            allowed=None if value is None else allowed_matrix(data, value[0].shape[1]),
        )

    def action_index(self, rows: npt.NDArray[np.bool_], price: float) -> npt.NDArray[np.int64]:
        """The value policy's action per row at `price` (ties to the cheaper action)."""
        if self.value_p is None or self.value_cost is None:
            raise ConfigError("the value policy needs value-model estimates")
        allowed = None if self.allowed is None else self.allowed[rows]
        return action_choice(self.value_p[rows], self.value_cost[rows], price, allowed)


@dataclass(frozen=True)
class Params:
    """One configuration: risk thresholds, judge rate per query type, speculative bound."""

    risk: tuple[float, float]
    rates: tuple[float, ...]
    speculative_bound: float
    # Types without calibration rows use this rate (the traffic-weighted mean of the rest).
    default_rate: float
    # The value policy's price of a correct answer (USD); None: start on `risk` and judge
    # by the sampling rates.
    price_per_correct_usd: float | None = None

    @property
    def policy(self) -> str:
        """`value` or `thresholds`: what decides where a Cascade starts and what is judged."""
        return "thresholds" if self.price_per_correct_usd is None else "value"

    def judge_sample_rates(self) -> list[str]:
        """As `cascade.judge_sample_rates` entries."""
        return [f"{t}={r:g}" for t, r in zip(QUERY_TYPES, self.rates, strict=True) if r >= 0]

    def cascade_section(self) -> dict[str, Any]:
        """The thresholds file's `cascade` section (CascadeConfig field names)."""
        return {
            "judge_sample_rate": self.default_rate,
            "judge_sample_rates": self.judge_sample_rates(),
            "speculative_bound": self.speculative_bound,
        }

    def as_dict(self) -> dict[str, Any]:
        """For per-fold listings."""
        out: dict[str, Any] = {"risk": list(self.risk), **self.cascade_section()}
        if self.price_per_correct_usd is not None:
            out["policy"] = self.policy
            out["price_per_correct_usd"] = self.price_per_correct_usd
        return out


def columns_for(
    inputs: Inputs, params: Params, rows: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """The table column each of `rows` uses under `params` (mirrors router and cascade)."""
    if params.price_per_correct_usd is not None:
        action = inputs.action_index(rows, params.price_per_correct_usd)
        speculate = _ACTION_JUDGED[action] & (inputs.confidence[rows] < params.speculative_bound)
        return np.where(speculate, _ACTION_SPECULATIVE[action], ACTION_COLUMNS[action])
    r = inputs.risks[rows]
    start = np.where(r[:, 0] <= params.risk[0], 0, np.where(r[:, 1] <= params.risk[1], 1, 2))
    rates = np.array([params.default_rate if v < 0 else v for v in params.rates])
    rate = rates[inputs.type_index[rows]]
    draw = inputs.draw[rows]
    judged = np.where(rate <= 0, False, np.where(rate >= 1, True, draw < rate))
    speculate = judged & (inputs.confidence[rows] < params.speculative_bound)
    return np.where(judged, np.where(speculate, _SPECULATIVE[start], _JUDGED[start]), _PLAIN[start])


class _Search:
    """Quality and cost sums of every (judge rate per type) combination for a risk pair."""

    def __init__(self, inputs: Inputs, rows: npt.NDArray[np.bool_]) -> None:
        index = np.flatnonzero(rows)
        self.n = len(index)
        self.r0 = inputs.risks[index, 0]
        self.r1 = inputs.risks[index, 1]
        self.q = inputs.tables.quality[index]
        self.c = inputs.tables.cost[index]
        self.arange = np.arange(self.n)
        draws = inputs.draw[index]
        types = inputs.type_index[index]
        self.groups: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self.present: list[bool] = []
        for t in range(len(QUERY_TYPES)):
            members = np.flatnonzero(types == t)
            order = members[np.argsort(draws[members], kind="stable")]
            ordered = draws[order]
            counts = np.array(
                [
                    0
                    if rate <= 0
                    else len(order)
                    if rate >= 1
                    else int(np.searchsorted(ordered, rate, side="left"))
                    for rate in RATE_GRID
                ],
                dtype=np.int64,
            )
            self.groups.append((order, counts))
            self.present.append(len(order) >= MIN_TYPE_ROWS)
        self.top_quality = float(self.q[:, TOP_COLUMN].mean()) if self.n else 0.0
        self.top_cost = float(self.c[:, TOP_COLUMN].mean()) if self.n else 0.0

    def start(self, a: float, b: float) -> npt.NDArray[np.int8]:
        """The start tier of every row under risk thresholds (a, b)."""
        return np.where(self.r0 <= a, 0, np.where(self.r1 <= b, 1, 2)).astype(np.int8)

    def sums(
        self, start: npt.NDArray[np.int8]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Quality and cost sums of every judge-rate combination for these start tiers."""
        plain, judged = _PLAIN[start], _JUDGED[start]
        q0, q1 = self.q[self.arange, plain], self.q[self.arange, judged]
        c0, c1 = self.c[self.arange, plain], self.c[self.arange, judged]
        total_q: Any = 0.0
        total_c: Any = 0.0
        n_types = len(self.groups)
        for t, (order, counts) in enumerate(self.groups):
            dq = np.concatenate(([0.0], np.cumsum(q1[order] - q0[order])))[counts]
            dc = np.concatenate(([0.0], np.cumsum(c1[order] - c0[order])))[counts]
            shape = [1] * n_types
            shape[t] = len(RATE_GRID)
            total_q = total_q + (q0[order].sum() + dq).reshape(shape)
            total_c = total_c + (c0[order].sum() + dc).reshape(shape)
        return np.asarray(total_q).ravel(), np.asarray(total_c).ravel()


def _choose(
    q: npt.NDArray[np.float64], c: npt.NDArray[np.float64], kind: TargetKind, limit: float, n: int
) -> tuple[tuple[float, float], int] | None:
    """(sort key, flat index) of the best feasible combination, or None."""
    best = feasible_best(q, c, kind, limit, n)
    if best is None:
        return None
    quality, cost = float(q[best]), float(c[best])
    return ((-quality, cost) if kind == "max_cost_per_query" else (cost, -quality)), best


def _unravel_rates(flat: int) -> tuple[float, ...]:
    shape = [len(RATE_GRID)] * len(QUERY_TYPES)
    return tuple(float(RATE_GRID[i]) for i in np.unravel_index(flat, shape))


def search(
    inputs: Inputs,
    rows: npt.NDArray[np.bool_],
    target: CalibrationTarget,
    *,
    speculation_cost_share: float = DEFAULT_SPECULATION_COST_SHARE,
    nearest: bool = False,
) -> Params:
    """The best configuration for `target` on `rows`; ConfigError when none meets it
    (`nearest`: a value-policy price no price meets is the nearest, as `solve_price` picks)."""
    engine = _Search(inputs, rows)
    if engine.n == 0:
        raise ConfigError("no rows to calibrate on")
    limit = target.limit(engine.top_quality, engine.top_cost)
    # Keep a reserve of the budget for speculation, which only buys latency.
    search_limit = (
        limit / (1 + speculation_cost_share) if target.kind == "max_cost_per_query" else limit
    )
    best: tuple[tuple[float, float], int, tuple[float, float]] | None = None

    seen: set[bytes] = set()

    def visit(pairs: Sequence[tuple[float, float]]) -> None:
        nonlocal best
        for a, b in pairs:
            start = engine.start(a, b)
            key = start.tobytes()
            if key in seen:
                # Same routing as a pair already visited, which wins any tie: skip it.
                continue
            seen.add(key)
            q, c = engine.sums(start)
            found = _choose(q, c, target.kind, search_limit, engine.n)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], found[1], (a, b))

    visit([(float(a), float(b)) for a in RISK_COARSE for b in RISK_COARSE])
    if best is None and nearest:
        # None meets it: toward the nearest a fixed setting reaches (best quality, least cost).
        floor = target.kind == "min_quality"
        sums = (engine.q if floor else -engine.c).sum(axis=0).max() / engine.n
        search_limit, seen = (float(sums) if floor else -float(sums)), set()
        visit([(float(a), float(b)) for a in RISK_COARSE for b in RISK_COARSE])
    if best is None:
        q_range = engine.q.sum(axis=0) / engine.n
        c_range = engine.c.sum(axis=0) / engine.n
        raise ConfigError(
            f"no configuration meets the target ({target.statement()}) on {engine.n} rows: "
            f"always-top quality {engine.top_quality:.4f} at ${engine.top_cost:.6f}/query; "
            f"fixed settings range quality {q_range.min():.4f}..{q_range.max():.4f}, "
            f"cost ${c_range.min():.6f}..${c_range.max():.6f}"
        )
    a0, b0 = best[2]
    fine = np.round(np.arange(-8, 9) * RISK_FINE_STEP, 4)
    visit(
        [
            (float(np.clip(a0 + da, 0, 1)), float(np.clip(b0 + db, 0, 1)))
            for da in fine
            for db in fine
        ]
    )
    _, flat, (a, b) = best
    rates = _unravel_rates(flat)
    weights = np.array(
        [
            len(g[0]) if present else 0
            for g, present in zip(engine.groups, engine.present, strict=True)
        ],
        dtype=np.float64,
    )
    if weights.sum() == 0:
        # Every type is sparse: one shared rate, the traffic-weighted mean of the search's.
        weights = np.array([len(g[0]) for g in engine.groups], dtype=np.float64)
    default_rate = float(np.round(np.dot(weights, rates) / weights.sum(), 1))
    # A type with too few calibration rows has no evidence for a rate of its own: it gets
    # the default rate (the mean of the others, weighted by traffic).
    rates = tuple(r if present else -1.0 for r, present in zip(rates, engine.present, strict=True))
    base = Params((round(a, 4), round(b, 4)), rates, 0.0, default_rate)
    if inputs.value_p is not None:
        price = _search_price(inputs, rows, target, search_limit, engine.top_cost, nearest=nearest)
        base = dataclasses.replace(base, price_per_correct_usd=price)
    bound = _choose_bound(inputs, rows, base, target, limit=limit, share=speculation_cost_share)
    return dataclasses.replace(base, speculative_bound=bound)


def action_tables(
    inputs: Inputs, rows: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Realised quality and cost of every action (its serial column) on `rows`."""
    n_actions = inputs.value_p.shape[1] if inputs.value_p is not None else 6
    columns = ACTION_COLUMNS[:n_actions]
    return (
        inputs.tables.quality[rows][:, columns],
        inputs.tables.cost[rows][:, columns],
    )


def _solve(
    inputs: Inputs, rows: npt.NDArray[np.bool_], kind: str, limit: float, top_cost: float
) -> Solved:
    """`tierroute.model.operating.solve_price` on `rows`' estimates and action outcomes."""
    if inputs.value_p is None or inputs.value_cost is None:
        raise ConfigError("the value policy needs value-model estimates")
    quality, cost = action_tables(inputs, rows)
    return solve_price(
        inputs.value_p[rows],
        inputs.value_cost[rows],
        quality,
        cost,
        kind=kind,
        limit=limit,
        top_cost=top_cost,
        allowed=None if inputs.allowed is None else inputs.allowed[rows],
    )


def _search_price(
    inputs: Inputs,
    rows: npt.NDArray[np.bool_],
    target: CalibrationTarget,
    limit: float,
    top_cost: float,
    *,
    nearest: bool = False,
) -> float:
    """The value policy's price of a correct answer that best meets `target` on `rows`
    (`tierroute.model.operating.solve_price`); ConfigError when none meets it, unless `nearest`."""
    found = _solve(inputs, rows, target.kind, limit, top_cost)
    if not found.feasible and not nearest:
        raise ConfigError(
            f"no price of a correct answer meets the target ({target.statement()}) on "
            f"{int(rows.sum())} rows with the value policy (nearest: quality "
            f"{found.quality:.4f} at ${found.cost_per_query_usd:.6f} per query; --policy "
            "thresholds searches risk thresholds and judge rates instead)"
        )
    return found.price_per_correct_usd


def solve_point(
    inputs: Inputs,
    rows: npt.NDArray[np.bool_],
    target: PointTarget,
    share: float = DEFAULT_SPECULATION_COST_SHARE,
) -> Solved:
    """An operating point's price on `rows`: its relative target against always its
    reference tier there (the top tier unless it names another; the nearest price, marked
    infeasible, when none meets it)."""
    base = TOP_COLUMN if target.reference is None else int(_PLAIN[target.reference])
    base_q = float(inputs.tables.quality[rows, base].mean())
    base_c = float(inputs.tables.cost[rows, base].mean())
    top_c = float(inputs.tables.cost[rows, TOP_COLUMN].mean())
    return _solve(inputs, rows, target.kind, limit_of(target, base_q, base_c, share), top_c)


def point_cross_fit(
    inputs: Inputs,
    folds: npt.NDArray[np.int64],
    base: CrossFit,
    target: PointTarget,
    share: float = DEFAULT_SPECULATION_COST_SHARE,
) -> CrossFit:
    """An operating point cross-fitted: per fold, its price solved on the other folds (the
    rest of `base`'s fold configuration kept), applied to the fold."""
    columns = np.zeros(len(folds), dtype=np.int64)
    params = []
    for fold, fold_params in enumerate(base.params):
        held_out = folds == fold
        price = solve_point(inputs, ~held_out, target, share).price_per_correct_usd
        found = dataclasses.replace(fold_params, price_per_correct_usd=price)
        columns[held_out] = columns_for(inputs, found, held_out)
        params.append(found)
    return CrossFit(tuple(params), columns)


def _choose_bound(
    inputs: Inputs,
    rows: npt.NDArray[np.bool_],
    base: Params,
    target: CalibrationTarget,
    *,
    limit: float,
    share: float,
) -> float:
    """The bound with the lowest p95 latency among those within the cost allowance."""
    n = int(rows.sum())
    cost, quality, latency = (
        inputs.tables.cost[rows],
        inputs.tables.quality[rows],
        inputs.tables.latency_ms[rows],
    )
    arange = np.arange(n)

    def figures(bound: float) -> tuple[float, float, float]:
        cols = columns_for(inputs, dataclasses.replace(base, speculative_bound=bound), rows)
        return (
            float(cost[arange, cols].sum()),
            float(quality[arange, cols].sum()),
            float(np.percentile(latency[arange, cols], 95)),
        )

    base_cost, base_quality, base_p95 = figures(0.0)
    best = (base_p95, 0.0)
    for bound in BOUND_GRID:
        c, q, p95 = figures(float(bound))
        within = c <= base_cost * (1 + share) + 1e-15 and q >= base_quality
        if target.kind == "max_cost_per_query":
            within = within and c <= limit * n * (1 + 1e-12)
        if within and (p95, float(bound)) < best:
            best = (p95, float(bound))
    return best[1]


def figures(
    inputs: Inputs,
    cols: npt.NDArray[np.int64],
    rows: npt.NDArray[np.bool_],
    tier_names: Sequence[str],
) -> dict[str, Any]:
    """Quality, cost, judge cost, tier mix and latency of `rows` under per-row `cols`."""
    t = inputs.tables
    arange = np.arange(int(rows.sum()))
    quality = t.quality[rows][arange, cols]
    cost = t.cost[rows][arange, cols]
    judge = t.judge_cost[rows][arange, cols]
    latency = t.latency_ms[rows][arange, cols]
    final = t.final[rows][arange, cols]
    start = np.array([COLUMNS[c][0] for c in cols], dtype=np.int64)
    top_q, top_c = float(t.quality[rows][:, 6].mean()), float(t.cost[rows][:, 6].mean())
    mix = np.bincount(final, minlength=len(tier_names)) / max(len(final), 1)
    start_mix = np.bincount(start, minlength=len(tier_names)) / max(len(start), 1)
    return {
        "n": len(cols),
        "quality": round(float(quality.mean()), DIGITS),
        "cost_per_query_usd": round(float(cost.mean()), 9),
        "judge_cost_per_query_usd": round(float(judge.mean()), 9),
        "quality_vs_always_expensive": round(float(quality.mean()) - top_q, DIGITS),
        "cost_ratio_vs_always_expensive": round(float(cost.mean()) / top_c, DIGITS)
        if top_c
        else None,
        "always_expensive": {
            "quality": round(top_q, DIGITS),
            "cost_per_query_usd": round(top_c, 9),
        },
        "tier_mix": {n: round(float(v), DIGITS) for n, v in zip(tier_names, mix, strict=True)},
        "start_mix": {
            n: round(float(v), DIGITS) for n, v in zip(tier_names, start_mix, strict=True)
        },
        "escalation_rate": round(float(t.escalated[rows][arange, cols].mean()), DIGITS),
        "p50_latency_ms": round(float(np.percentile(latency, 50)), 1),
        "p95_latency_ms": round(float(np.percentile(latency, 95)), 1),
    }


@dataclass(frozen=True)
class CrossFit:
    """Per fold: the configuration searched on the other folds, and the held-out columns."""

    params: tuple[Params, ...]
    columns: npt.NDArray[np.int64]


def cross_fit(
    inputs: Inputs,
    folds: npt.NDArray[np.int64],
    target: CalibrationTarget,
    *,
    speculation_cost_share: float = DEFAULT_SPECULATION_COST_SHARE,
    nearest: bool = False,
) -> CrossFit:
    """Search on every fold's complement; route the fold with what was found there."""
    k = int(folds.max()) + 1
    columns = np.zeros(len(folds), dtype=np.int64)
    params = []
    for fold in range(k):
        held_out = folds == fold
        share = speculation_cost_share
        found = search(inputs, ~held_out, target, speculation_cost_share=share, nearest=nearest)
        columns[held_out] = columns_for(inputs, found, held_out)
        params.append(found)
    return CrossFit(tuple(params), columns)


SWEEP: tuple[tuple[TargetKind, float], ...] = (
    ("max_cost_per_query", 0.2),
    ("max_cost_per_query", 1 / 3),
    ("max_cost_per_query", 0.5),
    ("min_quality", 0.98),
    ("min_quality", 0.99),
    ("min_quality", 1.0),
)


def target_sweep(
    inputs: Inputs,
    folds: npt.NDArray[np.int64],
    tier_names: Sequence[str],
    *,
    speculation_cost_share: float = DEFAULT_SPECULATION_COST_SHARE,
) -> list[dict[str, Any]]:
    """Held-out figures for a range of relative targets: the calibrated trade-off curve."""
    everything = np.ones(len(folds), dtype=bool)
    rows: list[dict[str, Any]] = []
    for kind, value in SWEEP:
        target = CalibrationTarget(kind, value, relative=True)
        entry: dict[str, Any] = {"target": target.statement()}
        try:
            fit = cross_fit(inputs, folds, target, speculation_cost_share=speculation_cost_share)
        except ConfigError:
            entry["feasible"] = False
        else:
            held = figures(inputs, fit.columns, everything, tier_names)
            entry.update(
                feasible=True,
                **{
                    k: held[k]
                    for k in (
                        "quality",
                        "cost_per_query_usd",
                        "quality_vs_always_expensive",
                        "cost_ratio_vs_always_expensive",
                        "p95_latency_ms",
                    )
                },
            )
        rows.append(entry)
    return rows


def tuned_strategy(
    name: str,
    description: str,
    *,
    settings: Settings,
    data: EvalData,
    cv: CrossValidation,
    fit: CrossFit,
    inputs: Inputs | None = None,
) -> Strategy:
    """Run the cross-fitted configurations through the harness (one per fold)."""
    plans = []
    value = None
    if inputs is not None and inputs.value_p is not None and inputs.value_cost is not None:
        value = (inputs.value_p, inputs.value_cost)
    for fold, params in enumerate(fit.params):
        cascade = apply_cascade(settings.cascade, {"cascade": params.cascade_section()})
        plans.append(
            RunPlan(
                dataclasses.replace(settings, cascade=cascade),
                scorer=cv.scorer(
                    fold,
                    data,
                    RiskThresholds(params.risk),
                    value=value if params.price_per_correct_usd is not None else None,
                    price_per_correct_usd=params.price_per_correct_usd,
                ),
                route_strategy="classifier",
            )
        )
    return Strategy(name, description, tuple(plans), per_fold=True)


def fold_inputs(
    cv: CrossValidation,
    data: EvalData,
    tables: Tables,
    value: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
) -> tuple[Inputs, npt.NDArray[np.int64]]:
    """Search inputs (with out-of-fold value estimates, if given) and folds, record order."""
    return Inputs.build(data, cv.proba_matrix(data), tables, value), cv.fold_array(data)


def allowed_matrix(data: EvalData, n_actions: int) -> npt.NDArray[np.bool_]:
    """(rows, actions): whether each record may take each of the first `n_actions` of
    VALUE_ACTIONS, as the served policy decides it (`routing.plan.allowed_actions`)."""
    actions = VALUE_ACTIONS[:n_actions]
    rows = []
    for record in data.records:
        allowed = allowed_actions(actions, record.prompt)
        rows.append([True] * n_actions if allowed is None else list(allowed))
    return np.array(rows, dtype=bool).reshape(len(data.records), n_actions)


def column_name(column: int, tier_names: Sequence[str]) -> str:
    """A fixed setting's readable name, e.g. `cheap:judged:serial`."""
    start, mode, speculative = COLUMNS[column]
    judged = {
        "never": "plain",
        "always": "judged",
        "start_only": "judged_start_only",
        "agreement": "agree",
        "agreement_mid": "agree_mid",
    }[mode]
    return f"{tier_names[start]}:{judged}:{'speculative' if speculative else 'serial'}"


__all__ = [
    "ACTION_COLUMNS",
    "AGREEMENT_COLUMNS",
    "COLUMNS",
    "DEFAULT_SPECULATION_COST_SHARE",
    "DIGITS",
    "CalibrationTarget",
    "CrossFit",
    "Inputs",
    "Params",
    "Tables",
    "TargetKind",
    "action_tables",
    "allowed_matrix",
    "build_tables",
    "column_name",
    "columns_for",
    "cross_fit",
    "figures",
    "point_cross_fit",
    "search",
    "solve_point",
    "tuned_strategy",
]
