"""Drift: has recent traffic moved away from what the router model was trained on?

Three measures compare the query log since a time with the training data:

- predicted tier mix: the model's calibrated rule applied to the scores logged for calls it
  routed (same model version), against the same rule on the training prompts;
- query-type mix: the logged query types against those of the training prompts;
- vocabulary coverage: the mean share of a query's words that are in the model's
  vocabulary. The server logs this share (a number, never text) for a sample of calls
  (`querylog.coverage_sample_rate`), so coverage works without storing any query text;
- unfamiliar share: the share of calls whose familiarity (the model's own signal, logged
  with every classifier decision) was below the bundle's threshold, against the share of
  training prompts below it.

A mix has shifted when its total-variation distance exceeds `max_tv` (default 0.1); coverage
has shifted when it dropped by more than `max_coverage_drop` (default 10 points); the
unfamiliar share when it rose by more than `max_unfamiliar_rise` (default 5 points). A measure
with fewer than `min_records` recent records says so instead of guessing. Only prompts are
read from the training data: drift never looks at ground truth.

`Vocabulary` is also used when serving (the coverage logged per call), so this module's
imports stay light; onnxruntime loads only when a reference is computed.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierroute.errors import ConfigError
from tierroute.model import Vocabulary
from tierroute.outcomes import file_sha256, iter_records
from tierroute.routing import RiskThresholds, Scored, calibrated_rule, is_unfamiliar, query_type

if TYPE_CHECKING:
    from tierroute.querylog import QueryRecord, Store
    from tierroute.routing import Scorer

logger = logging.getLogger(__name__)


DEFAULT_MAX_TV = 0.1
DEFAULT_MAX_COVERAGE_DROP = 0.10
DEFAULT_MAX_UNFAMILIAR_RISE = 0.05
DEFAULT_MIN_RECORDS = 50


# -- the model's vocabulary, read from its ONNX graph -----------------------------------------


# -- reference figures from the training data ------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What the model does on its training prompts: the baseline drift compares against."""

    model_version: str
    data_file: str
    data_sha256: str
    n: int
    tier_mix: dict[str, float]
    type_mix: dict[str, float]
    coverage: float | None
    # The share of training prompts below the model's familiarity threshold (None: the
    # model has no familiarity signal).
    unfamiliar: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            "model_version": self.model_version,
            "data_file": self.data_file,
            "data_sha256": self.data_sha256,
            "records": self.n,
            "tier_mix": _rounded(self.tier_mix),
            "type_mix": _rounded(self.type_mix),
            "coverage": None if self.coverage is None else round(self.coverage, 6),
            "unfamiliar_share": None if self.unfamiliar is None else round(self.unfamiliar, 6),
        }


def reference_from_prompts(
    prompts: Iterable[str],
    scorer: Scorer,
    vocabulary: Vocabulary | None,
    tier_names: Sequence[str],
    *,
    data_file: str = "",
    data_sha256: str = "",
) -> Reference:
    """Route every prompt with the model's calibrated rule; count tiers, types, coverage."""
    tiers: Counter[str] = Counter()
    types: Counter[str] = Counter()
    coverages: list[float] = []
    unfamiliar: list[bool] = []
    score = getattr(scorer, "score", None)
    threshold = getattr(scorer, "familiarity_threshold", None)
    n = 0
    for prompt in prompts:
        n += 1
        if callable(score):
            scored: Scored = score(prompt)
            probs = scored.probs
            if scored.familiarity is not None and threshold is not None:
                unfamiliar.append(is_unfamiliar(scored.familiarity, threshold))
        else:
            probs = scorer.predict_proba(prompt)
        index, _ = calibrated_rule(probs, scorer.thresholds, tier_names)
        tiers[tier_names[index]] += 1
        types[query_type(prompt)] += 1
        if vocabulary is not None:
            share = vocabulary.coverage(prompt)
            if share is not None:
                coverages.append(share)
    if n == 0:
        raise ConfigError("the training data holds no prompts to compare with")
    return Reference(
        model_version=scorer.version,
        data_file=data_file,
        data_sha256=data_sha256,
        n=n,
        tier_mix=_shares(tiers, tier_names),
        type_mix=_shares(types),
        coverage=math.fsum(coverages) / len(coverages) if coverages else None,
        unfamiliar=sum(unfamiliar) / len(unfamiliar) if unfamiliar else None,
    )


def reference_from_file(
    path: Path, scorer: Scorer, vocabulary: Vocabulary | None, tier_names: Sequence[str]
) -> Reference:
    """The reference on a recorded-outcome file's prompts (ground truth is not read)."""
    prompts = (str(r["prompt"]) for r in iter_records(path))
    return reference_from_prompts(
        prompts,
        scorer,
        vocabulary,
        tier_names,
        data_file=path.name,
        data_sha256=file_sha256(path),
    )


# -- recent traffic and the comparison --------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """When a measure counts as shifted, and how many records it needs to say anything."""

    max_tv: float = DEFAULT_MAX_TV
    max_coverage_drop: float = DEFAULT_MAX_COVERAGE_DROP
    min_records: int = DEFAULT_MIN_RECORDS
    max_unfamiliar_rise: float = DEFAULT_MAX_UNFAMILIAR_RISE

    def __post_init__(self) -> None:
        limits = (self.max_tv, self.max_coverage_drop, self.max_unfamiliar_rise)
        if not all(0.0 <= v <= 1.0 for v in limits):
            raise ConfigError("drift thresholds must be within [0, 1]")
        if self.min_records < 1:
            raise ConfigError("--min-records must be at least 1")


@dataclass
class RecentTraffic:
    """Counts over the query log's records in the window, built one record at a time."""

    model_version: str
    thresholds_of_model: RiskThresholds
    tier_names: tuple[str, ...]
    tiers: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    coverages: list[float] = field(default_factory=list)
    # Per call with a logged familiarity: whether it was below the model's threshold.
    unfamiliar: list[bool] = field(default_factory=list)
    records: int = 0
    other_versions: int = 0

    def add(self, record: QueryRecord) -> None:
        """Count one logged call (failed calls are skipped: they were not routed)."""
        if record.status != "OK":
            return
        self.records += 1
        if record.query_type:
            self.types[record.query_type] += 1
        if record.model_version != self.model_version:
            if record.model_version:
                self.other_versions += 1
            return
        scores = record.scores
        if (
            record.strategy == "classifier"
            and len(scores) == len(self.tier_names)
            and all(math.isfinite(s) for s in scores)
        ):
            index, _ = calibrated_rule(scores, self.thresholds_of_model, self.tier_names)
            self.tiers[self.tier_names[index]] += 1
        if record.vocab_coverage is not None and math.isfinite(record.vocab_coverage):
            self.coverages.append(record.vocab_coverage)
        if record.familiarity is not None and math.isfinite(record.familiarity):
            self.unfamiliar.append(record.unfamiliar)


@dataclass(frozen=True)
class Measure:
    """One drift measure: reference and recent values, the distance, and the verdict."""

    name: str
    metric: str
    reference: Any
    recent: Any
    records: int
    distance: float | None
    threshold: float
    status: str  # "ok" | "shifted" | "insufficient_data"
    how: str

    @property
    def shifted(self) -> bool:
        """Whether this measure moved beyond its threshold."""
        return self.status == "shifted"

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            "name": self.name,
            "metric": self.metric,
            "reference": self.reference,
            "recent": self.recent,
            "records": self.records,
            "distance": None if self.distance is None else round(self.distance, 6),
            "threshold": self.threshold,
            "status": self.status,
            "shifted": self.shifted,
            "how": self.how,
        }


@dataclass(frozen=True)
class DriftReport:
    """Every measure, and whether any shifted."""

    reference: Reference
    since: datetime | None
    records: int
    other_versions: int
    measures: tuple[Measure, ...]

    @property
    def shifted(self) -> bool:
        """Whether any measure shifted."""
        return any(m.shifted for m in self.measures)

    def as_dict(self) -> dict[str, Any]:
        """The JSON `tierroute drift --json` prints."""
        return {
            "shifted": self.shifted,
            "shifted_measures": [m.name for m in self.measures if m.shifted],
            "since": None if self.since is None else self.since.isoformat(),
            "model_version": self.reference.model_version,
            "recent_records": self.records,
            "records_of_other_model_versions": self.other_versions,
            "reference": self.reference.as_dict(),
            "measures": [m.as_dict() for m in self.measures],
        }


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions over named categories."""
    keys = set(p) | set(q)
    return 0.5 * math.fsum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def compare(
    reference: Reference,
    recent: RecentTraffic,
    thresholds: DriftThresholds,
    *,
    since: datetime | None = None,
) -> DriftReport:
    """Every measure of `recent` against `reference` under `thresholds`."""
    measures = (
        _mix_measure(
            "predicted_tier_mix",
            reference.tier_mix,
            recent.tiers,
            thresholds,
            recent.tier_names,
        ),
        _mix_measure("query_type_mix", reference.type_mix, recent.types, thresholds),
        _coverage_measure(reference.coverage, recent.coverages, thresholds),
        _unfamiliar_measure(reference.unfamiliar, recent.unfamiliar, thresholds),
    )
    return DriftReport(reference, since, recent.records, recent.other_versions, measures)


def _mix_measure(
    name: str,
    reference: Mapping[str, float],
    counts: Counter[str],
    thresholds: DriftThresholds,
    order: Sequence[str] = (),
) -> Measure:
    n = sum(counts.values())
    recent = _shares(counts, order)
    if n < thresholds.min_records:
        return Measure(
            name,
            "total_variation",
            _rounded(reference),
            _rounded(recent),
            n,
            None,
            thresholds.max_tv,
            "insufficient_data",
            f"{n} records; at least {thresholds.min_records} are needed",
        )
    distance = total_variation(reference, recent)
    changes = sorted(
        ((k, recent.get(k, 0.0) - reference.get(k, 0.0)) for k in set(reference) | set(recent)),
        key=lambda kv: (-abs(kv[1]), kv[0]),
    )
    how = ", ".join(
        f"{k} {d * 100:+.1f} pts ({reference.get(k, 0.0) * 100:.1f}% -> "
        f"{recent.get(k, 0.0) * 100:.1f}%)"
        for k, d in changes
        if abs(d) >= 0.005
    )
    return Measure(
        name,
        "total_variation",
        _rounded(reference),
        _rounded(recent),
        n,
        distance,
        thresholds.max_tv,
        "shifted" if distance > thresholds.max_tv else "ok",
        how or "no category moved by half a point or more",
    )


def _coverage_measure(
    reference: float | None, coverages: Sequence[float], thresholds: DriftThresholds
) -> Measure:
    n = len(coverages)
    recent = math.fsum(coverages) / n if n else None
    ref = None if reference is None else round(reference, 6)
    rec = None if recent is None else round(recent, 6)
    if reference is None or recent is None or n < thresholds.min_records:
        why = (
            "the model's vocabulary could not be read"
            if reference is None
            else f"{n} records with a logged coverage; at least {thresholds.min_records} "
            "are needed (querylog.coverage_sample_rate)"
        )
        return Measure(
            "vocabulary_coverage",
            "coverage_drop",
            ref,
            rec,
            n,
            None,
            thresholds.max_coverage_drop,
            "insufficient_data",
            why,
        )
    drop = reference - recent
    return Measure(
        "vocabulary_coverage",
        "coverage_drop",
        ref,
        rec,
        n,
        drop,
        thresholds.max_coverage_drop,
        "shifted" if drop > thresholds.max_coverage_drop else "ok",
        f"{recent * 100:.1f}% of recent query words are in the vocabulary, against "
        f"{reference * 100:.1f}% on the training data ({-drop * 100:+.1f} pts)",
    )


def _unfamiliar_measure(
    reference: float | None, flags: Sequence[bool], thresholds: DriftThresholds
) -> Measure:
    n = len(flags)
    recent = sum(flags) / n if n else None
    ref = None if reference is None else round(reference, 6)
    rec = None if recent is None else round(recent, 6)
    limit = thresholds.max_unfamiliar_rise
    if reference is None or recent is None or n < thresholds.min_records:
        why = (
            "the model has no familiarity signal (a bundle built before it)"
            if reference is None
            else f"{n} records with a logged familiarity; at least {thresholds.min_records} "
            "are needed"
        )
        return Measure(
            "unfamiliar_share", "share_rise", ref, rec, n, None, limit, "insufficient_data", why
        )
    rise = recent - reference
    return Measure(
        "unfamiliar_share",
        "share_rise",
        ref,
        rec,
        n,
        rise,
        limit,
        "shifted" if rise > limit else "ok",
        f"{recent * 100:.1f}% of recent calls were unfamiliar (below the model's familiarity "
        f"threshold), against {reference * 100:.1f}% of the training prompts "
        f"({rise * 100:+.1f} pts)",
    )


async def recent_traffic(
    store: Store,
    scorer: Scorer,
    tier_names: Sequence[str],
    *,
    since: datetime | None,
) -> RecentTraffic:
    """Stream the log since `since` into the counts drift compares."""
    recent = RecentTraffic(scorer.version, scorer.thresholds, tuple(tier_names))
    async for record in store.iter_queries(since=since):
        recent.add(record)
    return recent


def format_report(report: DriftReport) -> str:
    """The readable form of a drift report."""
    lines = [
        f"drift of model {report.reference.model_version} since "
        f"{report.since.isoformat() if report.since else 'the start of the log'}: "
        f"{report.records} recent calls against {report.reference.n} training prompts "
        f"({report.reference.data_file})",
    ]
    for m in report.measures:
        value = "-" if m.distance is None else f"{m.distance:.3f}"
        lines.append(
            f"  {m.name:20} {m.status.upper():17} {m.metric} {value} "
            f"(threshold {m.threshold:g}, {m.records} records)"
        )
        lines.append(f"      {m.how}")
    if report.other_versions:
        lines.append(
            f"  {report.other_versions} calls were routed by other model versions and are "
            "left out of the tier mix and coverage"
        )
    lines.append("SHIFTED: " + ", ".join(m.name for m in report.measures if m.shifted))
    if not report.shifted:
        lines[-1] = "no measure shifted"
    return "\n".join(lines)


def _shares(counts: Mapping[str, int], order: Sequence[str] = ()) -> dict[str, float]:
    total = sum(counts.values())
    keys = [*order, *sorted(k for k in counts if k not in order)]
    if total == 0:
        return dict.fromkeys(order, 0.0)
    return {k: counts.get(k, 0) / total for k in keys}


def _rounded(mix: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in mix.items()}
