"""Operating points that follow the traffic: the served bundle's value-policy operating
points re-solved for the mix of queries in the query log, published as a registry version.

Every Cascade the value policy plans logs its estimates (`querylog.records.ValuePlanRecord`):
per action P(correct) and expected cost under the server's prices, and the action chosen.
`adapt` reads them for a window of the log and solves each named operating point again on
those rows instead of the calibration rows: the price of a correct answer is swept over the
same grid as calibration (`model.operating.price_sweep`), each row's action is chosen from
its logged estimates exactly as the server chooses it, and the point's target (for example
`parity`: quality >= always-top's) is met on the rows' expected quality and cost.

Evidence corrects the expected quality (never the choice, which the server makes from the
model's estimates). A tier's answer on a logged query counts as right or wrong by the
strongest evidence the log holds (`querylog.evidence.tier_outcomes`: a tier label, then the
user's feedback on the tier that answered, then a judge verdict on it). Then:

- an unjudged action on that tier (start there, judge nothing) has that outcome, 1 or 0;
- the action the server chose has the outcome of the answer it shipped, when that answer's
  tier has evidence;
- every other action keeps the model's estimate.

A planned Cascade the router flagged unfamiliar (`QueryRecord.unfamiliar`: the model knew
too little of the query, so its estimates are close to its prior) counts only when the log
has evidence on it.

The result is the served bundle with new prices in `thresholds.json` (and the prices they
were solved under), under a version named after it (`<base>-adapt-<digest>`, the same
digest for the same points), added to the registry and promoted; servers with
`routing.registry_poll_s` > 0 serve it without a restart. `AdaptLoop` does the same in a
serving process every `adapt.interval_s`, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tierroute.errors import ConfigError, ModelLoadError, NotFound
from tierroute.model.bundle import (
    BUNDLE_FILES,
    METADATA_FILE,
    OPTIONAL_FILES,
    POLICY_VALUE,
    THRESHOLDS_FILE,
    read_json,
)
from tierroute.model.operating import (
    DEFAULT_SPECULATION_COST_SHARE,
    Ladder,
    PointTarget,
    action_choice,
    feasible_best,
    limit_of,
    parse_points,
    price_sweep,
)
from tierroute.model.registry import ModelRegistry, check_version_name
from tierroute.model.value import operating_prices, parse_actions, top_action
from tierroute.querylog import QueryLogError, Store, open_store
from tierroute.querylog.evidence import feedback_verdicts, label_verdicts, tier_outcomes
from tierroute.querylog.records import utc_now
from tierroute.routing import CascadeAction
from tierroute.settings import Settings

logger = logging.getLogger(__name__)

ADAPT_MARK = "-adapt-"
EVIDENCE_KINDS = ("label", "feedback", "judge")
# Prices that differ by less than this (relative) are the same point.
_SAME_PRICE = 1e-9


@dataclass(frozen=True)
class LoggedEstimates:
    """The value policy's logged estimates for N planned Cascades over A actions."""

    p: npt.NDArray[np.float64]  # (N, A): P(correct) as logged; what the choice uses
    cost: npt.NDArray[np.float64]  # (N, A): expected cost in USD as logged
    quality: npt.NDArray[np.float64]  # (N, A): P(correct) after the evidence's correction
    chosen: npt.NDArray[np.int64]  # (N,): the action the server chose
    # (N, A): False where the row's plan could not take the action (`allowed` logged with
    # the plan); None: every action was open to every row.
    allowed: npt.NDArray[np.bool_] | None = None
    # Rows corrected by each kind of evidence, and rows left out and why.
    corrected: Mapping[str, int] = field(default_factory=dict)
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """How many planned Cascades the estimates cover."""
        return len(self.p)


def correct_row(
    p: Sequence[float],
    actions: Sequence[CascadeAction],
    chosen: int,
    final_tier: int | None,
    outcomes: Mapping[int, tuple[bool, str]],
) -> tuple[list[float], set[str]]:
    """One row's expected quality per action after the evidence (the rule in the module
    docstring), and the kinds of evidence that changed it."""
    quality = [float(v) for v in p]
    used: set[str] = set()
    for index, action in enumerate(actions):
        if action.judge == "none" and action.start in outcomes:
            right, kind = outcomes[action.start]
            quality[index] = 1.0 if right else 0.0
            used.add(kind)
    if final_tier is not None and final_tier in outcomes and 0 <= chosen < len(quality):
        right, kind = outcomes[final_tier]
        quality[chosen] = 1.0 if right else 0.0
        used.add(kind)
    return quality, used


async def read_estimates(
    store: Store,
    *,
    since: datetime | None,
    versions: Container[str],
    actions: Sequence[CascadeAction],
    tier_names: Sequence[str],
) -> LoggedEstimates:
    """The planned Cascades in the log since `since` whose model version is in `versions`
    (bundles sharing the served value model), with their estimates corrected by evidence."""
    users = feedback_verdicts(await store.fetch_feedback(since=since))
    labels = label_verdicts(await store.fetch_tier_labels(), tier_names)
    tier_index = {name: i for i, name in enumerate(tier_names)}
    p_rows: list[list[float]] = []
    cost_rows: list[list[float]] = []
    quality_rows: list[list[float]] = []
    chosen: list[int] = []
    allowed_rows: list[list[bool]] = []
    corrected = dict.fromkeys(EVIDENCE_KINDS, 0)
    skipped = {"other_model": 0, "not_ok": 0, "malformed": 0, "unfamiliar": 0}
    n = len(actions)
    async for record in store.iter_queries(since=since):
        plan = record.value_plan
        if plan is None or record.kind != "cascade":
            continue
        if record.model_version not in versions:
            skipped["other_model"] += 1
            continue
        if record.status != "OK":
            skipped["not_ok"] += 1
            continue
        p, cost, action = plan["p_correct"], plan["cost_usd"], plan["action"]
        allowed = plan.get("allowed") or [True] * n
        values = [*p, *cost]
        if (
            len(p) != n
            or len(cost) != n
            or len(allowed) != n
            or not 0 <= action < n
            or not allowed[action]
            or not all(math.isfinite(v) and v >= 0 for v in values)
            or max(p) > 1
        ):
            skipped["malformed"] += 1
            continue
        outcomes = tier_outcomes(
            record,
            tier_names,
            labels=labels.get(record.request_id),
            user_verdict=users.get(record.request_id),
        )
        if record.unfamiliar and not outcomes:
            # The model knew too little of the query: its estimates are close to the class
            # prior, whatever was asked. Only evidence makes such a row count.
            skipped["unfamiliar"] += 1
            continue
        quality, used = correct_row(p, actions, action, tier_index.get(record.final_tier), outcomes)
        for kind in used:
            corrected[kind] += 1
        p_rows.append(list(p))
        cost_rows.append(list(cost))
        allowed_rows.append(allowed)
        quality_rows.append(quality)
        chosen.append(action)
    shape = (len(p_rows), n)
    return LoggedEstimates(
        p=np.asarray(p_rows, dtype=np.float64).reshape(shape),
        cost=np.asarray(cost_rows, dtype=np.float64).reshape(shape),
        quality=np.asarray(quality_rows, dtype=np.float64).reshape(shape),
        chosen=np.asarray(chosen, dtype=np.int64),
        allowed=None if all(all(r) for r in allowed_rows) else np.asarray(allowed_rows, bool),
        corrected=corrected,
        skipped=skipped,
    )


@dataclass(frozen=True)
class Figures:
    """Expected quality and cost per query of a policy on the logged rows, and where it
    starts (share of rows per tier)."""

    quality: float
    cost_usd: float
    start_mix: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """For `--json` and the bundle's record of the adaptation."""
        return {
            "quality": round(self.quality, 6),
            "cost_per_query_usd": round(self.cost_usd, 9),
            "start_mix": [round(s, 6) for s in self.start_mix],
        }


def figures_of(
    est: LoggedEstimates, chosen: npt.NDArray[np.int64], actions: Sequence[CascadeAction]
) -> Figures:
    """The expected figures of choosing `chosen` (an action index per row)."""
    rows = np.arange(est.rows)
    starts = np.array([a.start for a in actions])[chosen]
    n_tiers = max(a.start for a in actions) + 1
    mix = np.bincount(starts, minlength=n_tiers) / max(est.rows, 1)
    return Figures(
        float(est.quality[rows, chosen].mean()),
        float(est.cost[rows, chosen].mean()),
        tuple(float(v) for v in mix),
    )


def figures_at(est: LoggedEstimates, price: float, actions: Sequence[CascadeAction]) -> Figures:
    """The expected figures at a price of a correct answer: each row's action chosen from
    its logged estimates as the server chooses it."""
    return figures_of(est, action_choice(est.p, est.cost, price, est.allowed), actions)


@dataclass(frozen=True)
class SolvedPoint:
    """A re-solved operating point: its new price and whether it meets its target."""

    price_per_correct_usd: float
    feasible: bool


def baseline_action(target: PointTarget, actions: Sequence[CascadeAction], top: int) -> int:
    """The action a relative target is measured against: its reference tier unjudged (the
    top tier, action `top`, when it names none); ConfigError when the actions lack it."""
    reference = target.reference
    if reference is None:
        return top
    for index, action in enumerate(actions):
        if action.start == reference and action.judge == "none":
            return index
    raise ConfigError(f"no unjudged action on tier {reference} to measure a target against")


def solve_points(
    est: LoggedEstimates,
    targets: Mapping[str, PointTarget],
    *,
    actions: Sequence[CascadeAction],
    top: int,
    share: float = DEFAULT_SPECULATION_COST_SHARE,
) -> dict[str, SolvedPoint]:
    """Every target's price of a correct answer on the logged rows (a relative target is
    relative to its baseline's expected figures there: always-top, or always its reference
    tier, on every row). A target no price meets gets the nearest: the best quality for a
    floor, the lowest cost for a budget, with `feasible` False."""
    top_cost = float(est.cost[:, top].mean())
    prices, q, c = price_sweep(
        est.p, est.cost, est.quality, est.cost, top_cost, allowed=est.allowed
    )
    out = {}
    for name, target in targets.items():
        base = baseline_action(target, actions, top)
        limit = limit_of(
            target, float(est.quality[:, base].mean()), float(est.cost[:, base].mean()), share
        )
        found = feasible_best(q, c, target.kind, limit, est.rows, whole=False)
        feasible = found is not None
        if found is None:
            order = np.lexsort((c, -q)) if target.kind == "min_quality" else np.lexsort((-q, c))
            found = int(order[0])
        out[name] = SolvedPoint(prices[found], feasible)
    return out


@dataclass(frozen=True)
class PointChange:
    """One operating point before and after adapting, on the logged rows."""

    name: str
    target: PointTarget
    price_before: float
    price_after: float
    feasible: bool
    before: Figures
    after: Figures

    @property
    def changed(self) -> bool:
        """Whether the price moved."""
        scale = max(abs(self.price_before), abs(self.price_after), 1e-300)
        return abs(self.price_after - self.price_before) > _SAME_PRICE * scale

    def as_dict(self) -> dict[str, Any]:
        """For `--json`."""
        return {
            "target": self.target.statement(),
            "price_per_correct_usd": {"before": self.price_before, "after": self.price_after},
            "feasible": self.feasible,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
        }


@dataclass(frozen=True)
class AdaptResult:
    """What `adapt` found and did."""

    served_version: str
    rows: int
    since: datetime | None
    corrected: Mapping[str, int]
    skipped: Mapping[str, int]
    baselines: Mapping[str, Figures] = field(default_factory=dict)
    points: tuple[PointChange, ...] = ()
    default_point: str = ""
    # The version written (None: nothing changed, too few rows, or a dry run).
    version: str | None = None
    promoted: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`tierroute adapt --json`)."""
        return {
            "served_version": self.served_version,
            "since": None if self.since is None else self.since.isoformat(),
            "rows": self.rows,
            "corrected_rows": dict(self.corrected),
            "skipped_rows": dict(self.skipped),
            "baselines": {k: v.as_dict() for k, v in self.baselines.items()},
            "default_point": self.default_point,
            "points": {p.name: p.as_dict() for p in self.points},
            "version": self.version,
            "promoted": self.promoted,
            "note": self.note,
        }

    def format(self) -> str:
        """The human-readable report `tierroute adapt` prints."""
        corrected = ", ".join(f"{k} {v}" for k, v in self.corrected.items())
        skipped = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v)
        lines = [
            f"served {self.served_version}; {self.rows} planned Cascade(s) in the log"
            + (f" since {self.since.isoformat(timespec='seconds')}" if self.since else "")
            + (f" (left out: {skipped})" if skipped else ""),
            f"rows corrected by evidence: {corrected}",
        ]
        top = self.baselines.get("always_top")
        if top is not None:
            lines.append("expected per query on these rows (the model's estimates):")
            for name, fig in self.baselines.items():
                lines.append(f"  {name:<16} quality {fig.quality:.4f}  cost ${fig.cost_usd:.6f}")
            lines.append(
                f"  {'point':<12}  {'price of a correct answer':<24}  {'quality':<16}  "
                f"{'cost per query':<24}  x cheaper than always-top"
            )
            for p in self.points:
                ratio = [top.cost_usd / f.cost_usd if f.cost_usd > 0 else math.inf
                         for f in (p.before, p.after)]  # fmt: skip
                mark = "" if p.feasible else "  (target not met)"
                prices = f"${p.price_before:.4g} -> ${p.price_after:.4g}"
                lines.append(
                    f"  {p.name:<12}  {prices:<24}  "
                    f"{p.before.quality:.4f} -> {p.after.quality:.4f}  "
                    f"${p.before.cost_usd:.6f} -> ${p.after.cost_usd:.6f}  "
                    f"{ratio[0]:.2f}x -> {ratio[1]:.2f}x{mark}"
                )
        if self.version is not None:
            lines.append(
                ("promoted " if self.promoted else "wrote ")
                + f"{self.version} (was {self.served_version})"
            )
        unfamiliar = self.skipped.get("unfamiliar", 0)
        if unfamiliar:
            lines.append(
                f"{unfamiliar} planned Cascade(s) flagged unfamiliar and without evidence were "
                "left out: the model's estimates for them are its prior; label them "
                "(tierroute label) to count them"
            )
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


@dataclass(frozen=True)
class ServedPolicy:
    """What adapting needs of the served bundle: its value section, read without onnxruntime."""

    version: str
    path: Path
    metadata: Mapping[str, Any]
    thresholds: Mapping[str, Any]
    actions: tuple[CascadeAction, ...]
    targets: Mapping[str, PointTarget]
    prices: Mapping[str, float]
    default_point: str
    value_sha256: str
    share: float
    # The prices the points are solved under: the configured tiers' (and the agreement
    # probe's, when the model prices one), as a server with that configuration uses them.
    ladder: Ladder

    @classmethod
    def read(cls, path: Path, ladder: Ladder) -> ServedPolicy:
        """The bundle in `path` and its points' prices under `ladder`, as a server with that
        ladder serves them; ConfigError when it ships no value policy."""
        metadata = read_json(path / METADATA_FILE)
        thresholds = read_json(path / THRESHOLDS_FILE)
        where = str(path / THRESHOLDS_FILE)
        cascade = thresholds.get("cascade")
        section = cascade.get("value") if isinstance(cascade, Mapping) else None
        if (
            not isinstance(cascade, Mapping)
            or cascade.get("policy") != POLICY_VALUE
            or not isinstance(section, Mapping)
        ):
            raise ConfigError(
                f"{where}: the served model has no value policy, so it has no operating "
                "points to adapt"
            )
        n_tiers = len(ladder.input_usd_per_mtok)
        actions = parse_actions(section.get("actions"), n_tiers, f"{where}: cascade.value")
        used, prices, default = operating_prices(
            path, section, n_tiers=n_tiers, where=where, ladder=ladder
        )
        share = section.get("speculation_cost_share", DEFAULT_SPECULATION_COST_SHARE)
        return cls(
            version=str(metadata.get("model_version") or ""),
            path=path,
            metadata=metadata,
            thresholds=thresholds,
            actions=actions,
            targets=parse_points(section.get("operating_points"), f"{where}: cascade.value"),
            prices=prices,
            default_point=default,
            value_sha256=str(section.get("sha256") or ""),
            share=float(share),
            ladder=used,
        )

    @property
    def base_version(self) -> str:
        """The version this bundle was first adapted from (itself when never adapted)."""
        adaptation = self.metadata.get("adaptation")
        base = adaptation.get("base") if isinstance(adaptation, Mapping) else None
        return str(base) if base else self.version


def sharing_versions(registry: ModelRegistry, served: ServedPolicy) -> set[str]:
    """The registry's versions whose value model and actions are the served one's: their
    logged estimates are what the served bundle would log for the same queries."""
    out = {served.version}
    actions = [a.as_dict() for a in served.actions]
    for version in registry.versions():
        try:
            doc = read_json(registry.root / version / THRESHOLDS_FILE)
        except ConfigError:
            continue
        cascade = doc.get("cascade")
        value = cascade.get("value") if isinstance(cascade, Mapping) else None
        if (
            isinstance(value, Mapping)
            and value.get("sha256") == served.value_sha256
            and value.get("actions") == actions
        ):
            out.add(version)
    return out


def _digest(base: str, ladder: Ladder, prices: Mapping[str, float]) -> str:
    content = json.dumps(
        {"base": base, "ladder": ladder.as_dict(), "points": dict(prices)}, sort_keys=True
    )
    return hashlib.sha256(content.encode()).hexdigest()[:10]


def adapted_documents(
    served: ServedPolicy, result: AdaptResult, version: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The new version's metadata.json and thresholds.json documents."""
    thresholds = json.loads(json.dumps(served.thresholds))
    value = thresholds["cascade"]["value"]
    points = {p.name: p for p in result.points}
    for name, entry in value["operating_points"].items():
        change = points[name]
        for stale in ("held_out", "in_sample_quality", "in_sample_cost_per_query_usd"):
            entry.pop(stale, None)
        entry["price_per_correct_usd"] = change.price_after
        entry["feasible"] = change.feasible
        entry["adapted"] = {"rows": result.rows, **change.after.as_dict()}
    value["price_per_correct_usd"] = points[served.default_point].price_after
    # The prices the points were solved under: a server with these prices uses them as they
    # are; one with other prices solves them again from the calibration rows.
    value["prices"] = served.ladder.as_dict()
    thresholds["version"] = version
    metadata = dict(served.metadata)
    metadata["model_version"] = version
    metadata["adaptation"] = {
        "base": served.base_version,
        "from": served.version,
        "rows": result.rows,
        "since": None if result.since is None else result.since.isoformat(),
        "corrected_rows": dict(result.corrected),
        "baselines": {k: v.as_dict() for k, v in result.baselines.items()},
        "rule": "operating points re-solved on the query log's value-policy estimates "
        "(tierroute adapt, docs/operations.md)",
    }
    return metadata, thresholds


def publish(registry: ModelRegistry, served: ServedPolicy, result: AdaptResult) -> str:
    """Add the adapted bundle to the registry (when it does not hold it already) and
    promote it; the version (blocking: run it off the event loop)."""
    prices = {p.name: p.price_after for p in result.points}
    version = check_version_name(
        f"{served.base_version}{ADAPT_MARK}{_digest(served.base_version, served.ladder, prices)}"
    )
    try:
        registry.bundle_dir(version)
        held = True
    except NotFound:
        held = False
    if not held:
        metadata, thresholds = adapted_documents(served, result, version)
        with tempfile.TemporaryDirectory(prefix="tierroute-adapt-") as scratch:
            bundle = Path(scratch)
            for name in (*BUNDLE_FILES, *OPTIONAL_FILES):
                if (served.path / name).is_file() and name not in (METADATA_FILE, THRESHOLDS_FILE):
                    shutil.copyfile(served.path / name, bundle / name)
            (bundle / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
            (bundle / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2) + "\n")
            registry.add(bundle)
    registry.promote(version, note=f"tierroute adapt: {result.rows} logged decisions")
    return version


async def adapt(
    store: Store,
    registry: ModelRegistry,
    settings: Settings,
    *,
    since: datetime | None,
    min_decisions: int,
    dry_run: bool = False,
) -> AdaptResult:
    """Re-solve the promoted version's operating points on the log's estimates since
    `since`; add and promote the result unless `dry_run`, fewer than `min_decisions` rows,
    or no point moved.

    ConfigError when the promoted model has no value policy; ModelLoadError when its files
    are inconsistent; QueryLogError when the log cannot be read.
    """
    ladder = Ladder.of(settings.tiers)
    path = await asyncio.to_thread(registry.promoted_dir)
    served = await asyncio.to_thread(ServedPolicy.read, path, ladder)
    versions = await asyncio.to_thread(sharing_versions, registry, served)
    tier_names = [t.name for t in settings.tiers]
    est = await read_estimates(
        store, since=since, versions=versions, actions=served.actions, tier_names=tier_names
    )
    result = AdaptResult(
        served_version=served.version,
        rows=est.rows,
        since=since,
        corrected=est.corrected,
        skipped=est.skipped,
        default_point=served.default_point,
    )
    if est.rows < max(min_decisions, 1):
        note = f"nothing changed: {est.rows} planned Cascade(s), fewer than {min_decisions}"
        return replace(result, note=note)
    computed = await asyncio.to_thread(_solve, est, served)
    result = replace(result, **computed)
    if not any(p.changed for p in result.points):
        return replace(result, note="nothing changed: the operating points are where they were")
    if dry_run:
        return replace(result, note="dry run: nothing written")
    version = await asyncio.to_thread(publish, registry, served, result)
    return replace(result, version=version, promoted=True)


def _solve(est: LoggedEstimates, served: ServedPolicy) -> dict[str, Any]:
    """Baselines and every point before and after, on the logged rows (numpy; blocking)."""
    n_tiers = max(a.start for a in served.actions) + 1
    top = top_action(served.actions, n_tiers)
    solved = solve_points(est, served.targets, actions=served.actions, top=top, share=served.share)
    baselines = {}
    names = {0: "always_cheap", n_tiers - 2: "always_mid", n_tiers - 1: "always_top"}
    for index, action in enumerate(served.actions):
        if action.judge == "none" and action.start in names:
            chosen = np.full(est.rows, index, dtype=np.int64)
            baselines[names[action.start]] = figures_of(est, chosen, served.actions)
    baselines["as_logged"] = figures_of(est, est.chosen, served.actions)
    points = []
    for name, target in served.targets.items():
        served_price, price = served.prices[name], solved[name].price_per_correct_usd
        before = figures_at(est, served_price, served.actions)
        after = figures_at(est, price, served.actions)
        base = figures_of(
            est,
            np.full(est.rows, baseline_action(target, served.actions, top), dtype=np.int64),
            served.actions,
        )
        kept = _keeps(target, before, after, base, served.share)
        if kept:
            price, after = served_price, before
        points.append(
            PointChange(
                name=name,
                target=target,
                price_before=served_price,
                price_after=price,
                feasible=solved[name].feasible or kept,
                before=before,
                after=after,
            )
        )
    return {"baselines": baselines, "points": tuple(points)}


def _keeps(
    target: PointTarget, before: Figures, after: Figures, base: Figures, share: float
) -> bool:
    """Whether the served price already meets `target` on the logged rows and the re-solved
    one does no better there: then the point stays where it is (no version for a price
    that changes nothing)."""
    limit = limit_of(target, base.quality, base.cost_usd, share)
    if target.kind == "max_cost_per_query":
        return before.cost_usd <= limit * (1 + 1e-12) and before.quality >= after.quality - 1e-12
    return before.quality >= limit - 1e-9 and before.cost_usd <= after.cost_usd * (1 + 1e-12)


class AdaptLoop:
    """`[adapt] interval_s`: a serving process adapts its operating points from its own query
    log every interval, in the background, and serves the result.

    Each run reads the log on the store's worker threads and solves on a worker thread, so
    the event loop keeps serving; a run that fails is logged and the next one tries again.
    `after` is called with the promoted version (the server reloads it).
    """

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        *,
        after: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._after = after
        self.runs = 0
        self.last: AdaptResult | None = None

    async def run_once(self) -> AdaptResult | None:
        """One adaptation from the log's last `adapt.window_s`; None when it failed."""
        cfg = self._settings.adapt
        since = utc_now() - timedelta(seconds=cfg.window_s) if cfg.window_s > 0 else None
        try:
            store = open_store(self._settings.querylog.url.get())
            try:
                result = await adapt(
                    store,
                    self._registry,
                    self._settings,
                    since=since,
                    min_decisions=cfg.min_decisions,
                )
            finally:
                await store.aclose()
        except (ConfigError, ModelLoadError, NotFound, QueryLogError, OSError) as exc:
            logger.error("adapting operating points failed: %s", exc)
            return None
        finally:
            self.runs += 1
        if result.promoted and result.version is not None:
            logger.info(
                "operating points adapted on %s logged decisions: promoted %s",
                result.rows,
                result.version,
            )
            if self._after is not None:
                await self._after(result.version)
        else:
            logger.info("operating points not adapted: %s", result.note)
        # Once the result is served: `last` tells a caller what this process now serves.
        self.last = result
        return result

    async def run(self) -> None:
        """Adapt every `adapt.interval_s` seconds until cancelled (the first after one)."""
        while True:
            await asyncio.sleep(self._settings.adapt.interval_s)
            await self.run_once()


__all__ = [
    "ADAPT_MARK",
    "AdaptLoop",
    "AdaptResult",
    "Figures",
    "LoggedEstimates",
    "PointChange",
    "ServedPolicy",
    "SolvedPoint",
    "adapt",
    "adapted_documents",
    "correct_row",
    "figures_at",
    "publish",
    "read_estimates",
    "sharing_versions",
    "solve_points",
]
