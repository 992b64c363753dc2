"""The strategies every evaluation report compares, as run plans for the harness.

Each is the server's own code path with different knobs: a forced start tier and no judge
for the one-call baselines, the router's heuristic or classifier (with the published or
the calibrated rule) for the static routers, and the cascade's judge, speculation and
self-routing modes for the rest. Classifier-based strategies get one plan per fold, each
with the out-of-fold scorer of that fold, so no record is routed by a model that saw it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tierroute.cascade import SpeculationMode, apply_cascade
from tierroute.errors import ConfigError
from tierroute.model import Bundle
from tierroute.offline.evaluation.crossval import CrossValidation
from tierroute.offline.evaluation.eval_data import LADDER_RECORDED, EvalData, eval_tiers
from tierroute.offline.evaluation.harness import RunPlan, Strategy
from tierroute.offline.evaluation.valuefit import Estimates
from tierroute.outcomes import TIER_KEYS
from tierroute.routing import RiskThresholds
from tierroute.settings import Settings

ALWAYS = tuple(f"always_{key}" for key in TIER_KEYS)
ORACLE = "oracle"
RANDOM = "random_at_equal_cost"
SHIPPED = "shipped"
# Report order: baselines first, then routers, then cascades, then what ships.
ORDER = (
    *ALWAYS,
    RANDOM,
    ORACLE,
    "seed_recipe",
    "heuristic",
    "classifier",
    "cascade",
    "cascade_speculative",
    "self_routing",
    SHIPPED,
    "shipped_cv",
)


def eval_settings(settings: Settings, data: EvalData, prices: str = LADDER_RECORDED) -> Settings:
    """`settings` with the tiers played by the recorded trio and priced by the `prices`
    ladder (`eval_data.ladder_kind`: `recorded` or `config`), replayed in full.

    The replay runs at time scale 1 (on a virtual clock, so it costs no real time), with
    no injected faults and the default trio whose answers the report uses.
    """
    replay = dataclasses.replace(
        settings.replay, time_scale=1.0, faults="", trio="default", data=None
    )
    return dataclasses.replace(settings, tiers=eval_tiers(settings, data, prices), replay=replay)


def always_name(index: int, n_tiers: int) -> str:
    """The always-one-tier baseline's name for tier `index` of `n_tiers`."""
    if index == 0:
        return ALWAYS[0]
    return ALWAYS[-1] if index == n_tiers - 1 else ALWAYS[1]


def baseline_strategies(settings: Settings) -> list[Strategy]:
    """Always one tier: one call, never judged."""
    out = []
    for index, tier in enumerate(settings.tiers):
        out.append(
            Strategy(
                always_name(index, len(settings.tiers)),
                f"every query to {tier.name} ({tier.model}), one call, no judge",
                (RunPlan(settings, start_tier=tier.name, judge_mode="never", speculation="off"),),
            )
        )
    return out


def oracle_strategy(settings: Settings, start_tiers: Mapping[str, str]) -> Strategy:
    """The cheapest tier that was correct, one call: a ceiling, and the only one using truth."""
    return Strategy(
        ORACLE,
        "the cheapest tier whose recorded answer was correct (cheapest if none), one call",
        (RunPlan(settings, judge_mode="never", speculation="off"),),
        start_tiers=dict(start_tiers),
    )


def random_strategy(
    settings: Settings,
    record_ids: Sequence[str],
    tier_costs: Sequence[Sequence[float]],
    target_cost_usd: float,
    seed: int,
    *,
    compared: str = SHIPPED,
) -> Strategy:
    """Random routing that spends what the strategy it is compared with (`compared`, the
    report's default) spends, one call.

    `tier_costs[t][i]` is what record i costs answered once by tier t (the always-t
    baseline's cost). In a seeded random order, records move up from the cheapest tier one
    tier at a time while the total stays within `target_cost_usd` per query, so the realised
    cost matches the target to within one record's step (not just in expectation).
    """
    costs = np.array(tier_costs, dtype=np.float64)
    n_tiers, n = costs.shape
    budget = target_cost_usd * n
    tiers = np.zeros(n, dtype=np.int64)
    spent = float(costs[0].sum())
    order = np.random.default_rng(seed).permutation(n)
    for level in range(1, n_tiers):
        for i in order:
            if tiers[i] != level - 1:
                continue
            step = float(costs[level, i] - costs[level - 1, i])
            if spent + step <= budget:
                tiers[i] = level
                spent += step
    names = [t.name for t in settings.tiers]
    mix = ", ".join(f"{m} {np.mean(tiers == k):.3f}" for k, m in enumerate(names))
    return Strategy(
        RANDOM,
        f"each query to a random tier, drawn so the total cost matches {compared}'s "
        f"(${target_cost_usd:.6f} per query; mix {mix}), one call, seed {seed}",
        (RunPlan(settings, judge_mode="never", speculation="off"),),
        start_tiers={r: names[int(t)] for r, t in zip(record_ids, tiers, strict=True)},
    )


def _per_fold(
    cv: CrossValidation,
    data: EvalData,
    settings: Settings,
    risk: Sequence[Sequence[float]],
    *,
    rule: str = "calibrated",
    one_call: bool = False,
    speculation: SpeculationMode = "default",
    value: Estimates | None = None,
    prices: Sequence[float | None] | None = None,
) -> tuple[RunPlan, ...]:
    return tuple(
        RunPlan(
            settings,
            scorer=cv.scorer(
                fold,
                data,
                RiskThresholds(tuple(risk[fold])),
                value=value,
                price_per_correct_usd=prices[fold] if prices is not None else None,
            ),
            route_strategy="classifier",
            rule=rule,
            judge_mode="never" if one_call else "default",
            speculation="off" if one_call else speculation,
        )
        for fold in range(cv.k)
    )


def routed_strategies(settings: Settings, data: EvalData, cv: CrossValidation) -> list[Strategy]:
    """Static routers and cascades, each on out-of-fold classifier scores where it uses them."""
    fold_risk = cv.fold_risk
    return [
        Strategy(
            "seed_recipe",
            "classifier with the published thresholds verbatim "
            "(P(top) > 0.15 -> top; P(mid) > 0.30 or P(top) > 0.05 -> mid), one call",
            _per_fold(cv, data, settings, fold_risk, rule="published", one_call=True),
            per_fold=True,
        ),
        Strategy(
            "heuristic",
            "the published shape rules (length, code block, multi-step, query type), one call",
            (RunPlan(settings, route_strategy="heuristic", judge_mode="never", speculation="off"),),
        ),
        Strategy(
            "classifier",
            f"classifier with risk thresholds cross-fitted per fold toward: "
            f"{cv.target.statement()}; one call",
            _per_fold(cv, data, settings, fold_risk, one_call=True),
            per_fold=True,
        ),
        Strategy(
            "cascade",
            "the cascade with the configured cascade settings (judge sample rate "
            f"{settings.cascade.judge_sample_rate}, speculative bound "
            f"{settings.cascade.speculative_bound}) from the calibrated classifier's tier",
            _per_fold(cv, data, settings, fold_risk),
            per_fold=True,
        ),
        Strategy(
            "cascade_speculative",
            "as cascade, but the next tier always starts in parallel (speculation on)",
            _per_fold(cv, data, settings, fold_risk, speculation="on"),
            per_fold=True,
        ),
        Strategy(
            "self_routing",
            "the cheap tier answers with a confidence block; escalate below "
            f"{settings.cascade.self_confidence_threshold} or on request, then the judged "
            "cascade",
            (RunPlan(settings, self_routing=True),),
        ),
    ]


def shipped_strategy(
    settings: Settings,
    data: EvalData,
    cv: CrossValidation | None,
    bundle: Bundle | None,
    value: Estimates | None = None,
    *,
    price: float | None = None,
) -> Strategy:
    """What `make run` serves: the configured strategy and cascade settings, the bundle's
    thresholds and the cascade settings calibrated into them, on out-of-fold scores (and,
    when the bundle ships the value policy, out-of-fold value estimates at `price`, its
    default operating point's price for the evaluated tier prices; None: as stored).
    """
    strategy = settings.routing.default_strategy
    if strategy == "heuristic" or bundle is None or cv is None:
        return Strategy(
            SHIPPED,
            "the shipped configuration: heuristic routing, configured cascade settings",
            (RunPlan(settings, route_strategy="heuristic"),),
        )
    shipped = dataclasses.replace(
        settings, cascade=apply_cascade(settings.cascade, bundle.thresholds)
    )
    risk = [bundle.cascade_risk] * cv.k
    c = shipped.cascade
    if bundle.price_per_correct_usd is None:
        price = None
    elif price is None:
        price = bundle.price_per_correct_usd
    if price is not None and value is None:
        raise ConfigError("the bundle ships the value policy: evaluating it needs value estimates")
    how = (
        f"value policy at ${price:g} per correct answer (fallback: cascade thresholds "
        f"{list(bundle.cascade_risk)})"
        if price is not None
        else f"cascade thresholds {list(bundle.cascade_risk)}"
    )
    return Strategy(
        SHIPPED,
        f"the shipped configuration: {strategy} routing ({settings.routing.default_rule} rule, "
        f"bundle {bundle.version} {how}), judge sample rate "
        f"{c.judge_sample_rate} {list(c.judge_sample_rates)}, speculative bound "
        f"{c.speculative_bound}; out-of-fold scores",
        _per_fold(
            cv,
            data,
            shipped,
            risk,
            rule=settings.routing.default_rule,
            value=value if price is not None else None,
            prices=[price] * cv.k if price is not None else None,
        ),
        per_fold=True,
    )
