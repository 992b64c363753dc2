"""Gated retraining: labels from the query log plus the original data, a candidate model, an
offline comparison with the current model, and promotion only when it is not worse.

The steps of `retrain`:

1. Labels from logged outcomes. A judge verdict on a cascade hop is evidence about the tier
   below the judge: a pass means that tier suffices, a fail that it does not. User feedback
   on the final tier (`correct`, or a rating: 4-5 good, 1-2 bad, 3 no evidence) is the same
   kind of evidence and overrides the judge on that tier. Tiers are ordered, so the label
   is the cheapest tier known to suffice (an upper bound when cheaper tiers were never
   tried: retraining from logs errs toward the safe side), "none" when even the top tier
   failed, and no label when the evidence is missing or contradicts itself. A logged call
   is trainable only when its question was stored: `querylog.store_text`, or an audit
   sample (`querylog.audit_sample_rate`); see docs/operations.md.
2. A fixed held-out split of the original data (20 % of duplicate groups by default, chosen
   by a hash of the group id, so the split is the same on every run). The candidate trains
   on the rest plus the logged examples (minus any whose text is a held-out prompt) with
   `tierroute.offline.training`, calibrated to the same target as the current model.
3. The offline evaluation harness (`tierroute.offline.evaluation`) routes every held-out record with
   each model (classifier strategy, calibrated rule, one call, no judge) over the replay
   backend and scores quality and cost per query.
4. Promotion when quality is not lower than the current model's by more than
   `margin_quality` (absolute) and cost not higher by more than `margin_cost` (relative),
   and only when the log contributed labelled calls (otherwise the candidate would merely
   be the original recipe on less data).

A served model trained on this very data file (the shipped bundle saw all of it) has seen
the held-out rows, which would flatter it; the baseline is then its recipe refitted on the
training split, and the served model's in-sample figures are reported beside it.

Needs the `train` extra; importing this module stays light.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierroute.errors import ConfigError
from tierroute.model import ModelRegistry, bundle_version
from tierroute.model.bundle import METADATA_FILE, THRESHOLDS_FILE
from tierroute.outcomes import TIER_KEYS, file_sha256, iter_records, tier_model, trio_key
from tierroute.querylog import QueryRecord, Store
from tierroute.querylog.evidence import feedback_verdicts, judged_tiers
from tierroute.settings import Settings

if TYPE_CHECKING:
    from tierroute.offline.training.calibrate import Target

logger = logging.getLogger(__name__)

NO_TIER = -1
DEFAULT_HOLDOUT = 0.2
DEFAULT_MARGIN_QUALITY = 0.0
DEFAULT_MARGIN_COST = 0.05


# -- labels from the log ---------------------------------------------------------------------


def label_from_log(
    record: QueryRecord, user_verdict: bool | None, tier_names: Sequence[str]
) -> int | None:
    """The cheapest tier (index) known to suffice, NO_TIER when none did, None when unknown."""
    index = {name: i for i, name in enumerate(tier_names)}
    sufficient: set[int] = set()
    insufficient: set[int] = set()
    for judged, passed in judged_tiers(record, tier_names):
        (sufficient if passed else insufficient).add(judged)
    final = index.get(record.final_tier)
    if user_verdict is not None and final is not None:
        # The user saw the answer; their word on the final tier beats the judge's.
        sufficient.discard(final)
        insufficient.discard(final)
        (sufficient if user_verdict else insufficient).add(final)
    if sufficient:
        label = min(sufficient)
        return None if any(i >= label for i in insufficient) else label
    if len(tier_names) - 1 in insufficient:
        return NO_TIER
    return None


@dataclass(frozen=True)
class LoggedExample:
    """A logged question and the label its outcomes give."""

    request_id: str
    text: str
    label: int


@dataclass(frozen=True)
class LogLabels:
    """Trainable examples from the log, and why the other calls were not."""

    examples: tuple[LoggedExample, ...]
    calls: int
    without_text: int
    without_evidence: int
    duplicates: int

    def as_dict(self) -> dict[str, Any]:
        """For the retrain report."""
        labels: dict[str, int] = {}
        for e in self.examples:
            name = "none" if e.label == NO_TIER else str(e.label)
            labels[name] = labels.get(name, 0) + 1
        return {
            "calls": self.calls,
            "labelled": len(self.examples),
            "without_text": self.without_text,
            "without_evidence": self.without_evidence,
            "duplicates": self.duplicates,
            "labels_by_tier_index": dict(sorted(labels.items())),
        }


async def labels_from_store(
    store: Store, tier_names: Sequence[str], *, since: datetime | None = None
) -> LogLabels:
    """Every labelled, text-bearing call in the log since `since`, latest per question."""
    verdicts = feedback_verdicts(await store.fetch_feedback(since=since))
    by_text: dict[str, LoggedExample] = {}
    calls = without_text = without_evidence = duplicates = 0
    async for record in store.iter_queries(since=since):
        if record.status != "OK":
            continue
        calls += 1
        if not record.query_text:
            without_text += 1
            continue
        label = label_from_log(record, verdicts.get(record.request_id), tier_names)
        if label is None:
            without_evidence += 1
            continue
        if record.query_sha256 in by_text:
            duplicates += 1
        # Records stream oldest first: the latest evidence about a question wins.
        by_text[record.query_sha256] = LoggedExample(record.request_id, record.query_text, label)
    return LogLabels(tuple(by_text.values()), calls, without_text, without_evidence, duplicates)


# -- the training file -----------------------------------------------------------------------


def in_holdout(group: str, fraction: float, seed: int = 0) -> bool:
    """Whether a duplicate group is held out: a stable hash, the same on every run."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_records(
    records: Sequence[Mapping[str, Any]], fraction: float, seed: int = 0
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(train, held out) by duplicate group, so a repeated question never straddles both."""
    train: list[Mapping[str, Any]] = []
    held: list[Mapping[str, Any]] = []
    for position, record in enumerate(records):
        group = str(record.get("dup_group") or record.get("id") or f"#{position}")
        (held if in_holdout(group, fraction, seed) else train).append(record)
    return train, held


def logged_record(
    example: LoggedExample,
    trio: Mapping[str, str],
    tier_costs: Mapping[str, float],
    n_tiers: int,
) -> dict[str, Any]:
    """A logged example in the recorded-outcome schema that `tierroute.offline.training` reads.

    Correctness per tier follows from the label (the tiers from it up are right); cost per
    tier is the original data's mean, since the log prices the configured models instead.
    """
    label_key = None if example.label == NO_TIER else trio_key(example.label, n_tiers)
    first_right = len(TIER_KEYS) if label_key is None else TIER_KEYS.index(label_key)
    models = {
        trio[key]: {
            "correct": int(rank >= first_right),
            "cost_usd": tier_costs[key],
            "input_tokens": 0,
            "output_tokens": 0,
        }
        for rank, key in enumerate(TIER_KEYS)
    }
    return {
        "id": f"querylog/{example.request_id}",
        "task": "querylog",
        "task_type": "logged",
        "prompt": example.text,
        "tiers": dict(trio),
        "models": models,
        "min_tier_correct": "none" if label_key is None else label_key,
    }


def write_training_file(
    path: Path,
    train: Sequence[Mapping[str, Any]],
    logged: Sequence[LoggedExample],
    n_tiers: int,
) -> int:
    """Write the candidate's training data (gzip JSON lines); the number of logged rows."""
    if not train:
        raise ConfigError("no original records are left to train on after the held-out split")
    trio = {key: str(train[0]["tiers"][key]) for key in TIER_KEYS}
    costs = {
        key: math.fsum(float(tier_model(r, key)["cost_usd"]) for r in train) / len(train)
        for key in TIER_KEYS
    }
    # mtime=0: the same rows make the same bytes, hence the same data hash and model version.
    with (
        gzip.GzipFile(path, "wb", mtime=0) as raw,
        io.TextIOWrapper(raw, encoding="utf-8") as fh,
    ):
        for record in train:
            fh.write(json.dumps(record) + "\n")
        for example in logged:
            fh.write(json.dumps(logged_record(example, trio, costs, n_tiers)) + "\n")
    return len(logged)


# -- evaluation and the gate -----------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """A model's held-out figures from the evaluation harness."""

    version: str
    quality: float
    cost_per_query_usd: float
    tier_mix: Mapping[str, float]
    per_task: Mapping[str, Any]
    # How the bundle answered: as served by Route (one call) or by the Cascade.
    served_as: str = "route"

    def as_dict(self) -> dict[str, Any]:
        """For the retrain report."""
        return {
            "version": self.version,
            "quality": self.quality,
            "cost_per_query_usd": self.cost_per_query_usd,
            "tier_mix": dict(self.tier_mix),
            "per_task": dict(self.per_task),
            "served_as": self.served_as,
        }


def evaluate_bundles(
    settings: Settings,
    data_path: Path,
    held_out_ids: set[str],
    bundles: Mapping[str, Path],
    *,
    cascade: bool = False,
) -> dict[str, Figures]:
    """Answer the held-out records of `data_path` with each bundle as served, and score them.

    Each bundle is loaded as a server loads it (`model.load_model`, priced by the evaluated
    tiers) and answers through the evaluation harness over the replay backend: by Route (the
    classifier's calibrated tier, one call, no judge) or, with `cascade`, by the Cascade at
    the bundle's default operating point with its calibrated cascade settings, as a server's
    Cascade answers a request without options. Scored against the recorded outcomes.
    """
    from tierroute.offline.evaluation.eval_data import load_eval_data, load_store
    from tierroute.offline.evaluation.harness import RunPlan, Strategy, run_strategies
    from tierroute.offline.evaluation.scoring import GroundTruth
    from tierroute.offline.evaluation.strategies import eval_settings
    from tierroute.offline.evaluation.summary import strategy_metrics

    data = load_eval_data(data_path)
    held = tuple(r for r in data.records if r.id in held_out_ids)
    if not held:
        raise ConfigError("the held-out split is empty: use a larger --holdout or more data")
    data = dataclasses.replace(data, records=held)
    run_settings = eval_settings(settings, data)
    strategies = []
    versions = {}
    for name, bundle in bundles.items():
        versions[name] = bundle_version(bundle)
        if cascade:
            plan = RunPlan(
                run_settings,
                route_strategy=settings.routing.default_strategy,
                rule=settings.routing.default_rule,
                bundle_dir=bundle,
            )
        else:
            plan = RunPlan(
                run_settings,
                route_strategy="classifier",
                rule="calibrated",
                judge_mode="never",
                speculation="off",
                bundle_dir=bundle,
            )
        strategies.append(Strategy(name, f"{versions[name]} as served", (plan,)))
    outcomes = run_strategies(data, strategies, workers=1, store=load_store(data_path))
    truth = GroundTruth.load(data_path)
    tier_names = [t.name for t in run_settings.tiers]
    figures = {}
    for name in bundles:
        metrics = strategy_metrics(outcomes[name], data, truth, tier_names)
        figures[name] = Figures(
            versions[name],
            float(metrics["quality"]),
            float(metrics["cost_per_query_usd"]),
            metrics["tier_mix"],
            metrics["per_task"],
            "cascade" if cascade else "route",
        )
    return figures


def serves_cascade(bundle: Path) -> bool:
    """Whether `bundle` ships a Cascade calibration (its thresholds' `cascade` section)."""
    try:
        document = json.loads((bundle / THRESHOLDS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and isinstance(document.get("cascade"), Mapping)


@dataclass(frozen=True)
class Margins:
    """How much worse a candidate may be: quality in absolute points, cost relative."""

    quality: float = DEFAULT_MARGIN_QUALITY
    cost: float = DEFAULT_MARGIN_COST

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality <= 1.0 or self.cost < 0.0:
            raise ConfigError("--margin-quality must be within [0, 1] and --margin-cost >= 0")


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on a candidate, with the figures it compared."""

    candidate: Figures
    current: Figures
    margins: Margins
    quality_ok: bool
    cost_ok: bool
    # The version being served; `current` may instead be its recipe refitted (see retrain).
    served_version: str = ""
    # Logged examples the candidate learned from; without any it has nothing new to offer.
    logged_examples: int = 1

    @property
    def promote(self) -> bool:
        """Whether the candidate may be promoted."""
        served = self.served_version or self.current.version
        return (
            self.quality_ok
            and self.cost_ok
            and self.logged_examples > 0
            and self.candidate.version != served
        )

    def reasons(self) -> list[str]:
        """Why the candidate is or is not promoted, one sentence per criterion."""
        cand, cur, m = self.candidate, self.current, self.margins
        floor = cur.quality - m.quality
        ceiling = cur.cost_per_query_usd * (1 + m.cost)
        out = [
            f"quality {cand.quality:.4f} vs {cur.quality:.4f}: "
            + ("ok" if self.quality_ok else "too low")
            + f" (floor {floor:.4f})",
            f"cost/query ${cand.cost_per_query_usd:.6f} vs ${cur.cost_per_query_usd:.6f}: "
            + ("ok" if self.cost_ok else "too high")
            + f" (ceiling ${ceiling:.6f})",
        ]
        if cand.version == (self.served_version or cur.version):
            out.append("the candidate is the served model: nothing to promote")
        if self.logged_examples <= 0:
            out.append(
                "no labelled calls from the log: the candidate has nothing new to learn from"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        """For the retrain report."""
        return {
            "promote": self.promote,
            "served_version": self.served_version or self.current.version,
            "logged_examples": self.logged_examples,
            "candidate": self.candidate.as_dict(),
            "current": self.current.as_dict(),
            "margin_quality": self.margins.quality,
            "margin_cost": self.margins.cost,
            "quality_ok": self.quality_ok,
            "cost_ok": self.cost_ok,
            "reasons": self.reasons(),
        }


def gate(
    candidate: Figures,
    current: Figures,
    margins: Margins,
    *,
    served_version: str = "",
    logged_examples: int = 1,
) -> GateDecision:
    """Not worse by the margins: quality >= current - margin, cost <= current x (1 + margin)."""
    quality_ok = candidate.quality >= current.quality - margins.quality - 1e-12
    cost_ok = (
        candidate.cost_per_query_usd <= current.cost_per_query_usd * (1 + margins.cost) + 1e-15
    )
    return GateDecision(
        candidate, current, margins, quality_ok, cost_ok, served_version, logged_examples
    )


# -- the whole loop --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainOptions:
    """Knobs of one `tierroute retrain` run."""

    since: datetime | None = None
    margins: Margins = field(default_factory=Margins)
    holdout: float = DEFAULT_HOLDOUT
    folds: int = 5
    seed: int = 0
    dry_run: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError("--holdout must be within (0, 1)")


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did: the log's labels, the comparison, and whether it promoted."""

    log: LogLabels
    train_records: int
    held_out_records: int
    decision: GateDecision
    promoted: bool
    registry: str
    # "served": the served model itself; "refit": its recipe refitted on the training split,
    # because the served model was trained on the held-out rows too.
    baseline: str = "served"
    served: Figures | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON `tierroute retrain --json` prints."""
        return {
            "promoted": self.promoted,
            "registry": self.registry,
            "log": self.log.as_dict(),
            "evaluation": {
                "split": "fixed held-out split of the original data by duplicate group",
                "train_records": self.train_records,
                "held_out_records": self.held_out_records,
                "baseline": self.baseline,
                "served_in_sample": None if self.served is None else self.served.as_dict(),
            },
            "decision": self.decision.as_dict(),
            "notes": list(self.notes),
        }


def _current_target(bundle: Path) -> Target:
    from tierroute.offline.training.calibrate import DEFAULT_MAX_COST_RATIO, Target

    try:
        target = json.loads((bundle / THRESHOLDS_FILE).read_text(encoding="utf-8"))["target"]
        return Target(target["kind"], float(target["value"]))
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
        logger.warning("%s states no calibration target; using the default", bundle)
        return Target("max_cost_ratio", DEFAULT_MAX_COST_RATIO)


def train_candidate(
    train_file: Path, out_dir: Path, current_bundle: Path, options: RetrainOptions
) -> Path:
    """Train, calibrate (to the current model's target) and export a candidate bundle."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    prefix = json.loads((current_bundle / METADATA_FILE).read_text(encoding="utf-8"))
    train_bundle(
        train_file,
        out_dir,
        TrainOptions(
            folds=options.folds,
            target=_current_target(current_bundle),
            prefix_chars=int(prefix.get("prefix_chars", 4096)),
            compare_none_labels=False,
            progress=options.progress,
        ),
    )
    return out_dir


async def collect_labels(store: Store, settings: Settings, since: datetime | None) -> LogLabels:
    """The log's trainable examples under the configured tiers."""
    return await labels_from_store(store, [t.name for t in settings.tiers], since=since)


def retrain(
    settings: Settings,
    log: LogLabels,
    data_path: Path,
    registry: ModelRegistry,
    options: RetrainOptions,
) -> RetrainResult:
    """Train a candidate on the original data plus `log`, compare, and promote if not worse.

    Blocking and CPU-heavy (training and evaluation); the log was read beforehand.
    """
    current_dir = registry.promoted_dir()
    records = list(iter_records(data_path))
    train, held = split_records(records, options.holdout, options.seed)
    held_prompts = {str(r["prompt"]).strip() for r in held}
    # A logged copy of a held-out question would let the candidate see its test.
    logged = [e for e in log.examples if e.text.strip() not in held_prompts]
    notes = []
    if len(logged) < len(log.examples):
        notes.append(f"{len(log.examples) - len(logged)} logged questions are held-out prompts")
    served_version = bundle_version(current_dir)
    # A served model trained on this very file has seen the held-out rows: scoring it there
    # would flatter it (5 points on the dev data). Its recipe, refitted on the training
    # split alone, is then the fair baseline.
    in_sample = _training_data_sha(current_dir) == file_sha256(data_path)
    with tempfile.TemporaryDirectory(prefix="tierroute-retrain-") as tmp:
        work = Path(tmp)
        train_file = work / "train.jsonl.gz"
        write_training_file(train_file, train, logged, len(settings.tiers))
        candidate_dir = train_candidate(train_file, work / "candidate", current_dir, options)
        bundles = {"candidate": candidate_dir, "current": current_dir}
        if in_sample:
            base_file = work / "baseline.jsonl.gz"
            write_training_file(base_file, train, [], len(settings.tiers))
            bundles["baseline"] = train_candidate(
                base_file, work / "baseline", current_dir, options
            )
            notes.append(
                f"{served_version} was trained on {data_path.name} including the held-out "
                "rows; compared against its recipe refitted on the training split"
            )
        # As served: when the served bundle ships a Cascade calibration, the candidate (and
        # a refitted baseline) get the same one before the gate, and every bundle answers
        # the held-out records the way a server's Cascade would.
        cascade = serves_cascade(current_dir)
        if cascade:
            for name in ("candidate", "baseline"):
                if name in bundles:
                    try:
                        note = calibrate_cascade(
                            settings,
                            train,
                            candidate_dir=bundles[name],
                            current_dir=current_dir,
                            work=work,
                            options=options,
                        )
                    except ConfigError as exc:
                        raise ConfigError(
                            f"the {name}'s Cascade cannot be calibrated like the served "
                            f"bundle's, so it cannot be compared as served: {exc}"
                        ) from exc
                    notes.append(f"{name}: {note}")
        figures = evaluate_bundles(
            settings, data_path, {str(r.get("id")) for r in held}, bundles, cascade=cascade
        )
        decision = gate(
            figures["candidate"],
            figures["baseline" if in_sample else "current"],
            options.margins,
            served_version=served_version,
            logged_examples=len(logged),
        )
        promoted = promote_if_passed(
            settings,
            decision,
            train,
            candidate_dir=candidate_dir,
            registry=registry,
            work=work,
            options=options,
            notes=notes,
            calibrated=cascade,
        )
    logger.info(
        "retrain: candidate %s %s (current %s)",
        figures["candidate"].version,
        "promoted" if promoted else "not promoted",
        bundle_version(current_dir),
    )
    return RetrainResult(
        log=log,
        train_records=len(train),
        held_out_records=len(held),
        decision=decision,
        promoted=promoted,
        registry=str(registry.root),
        baseline="refit" if in_sample else "served",
        served=figures["current"] if in_sample else None,
        notes=tuple(notes),
    )


def promote_if_passed(
    settings: Settings,
    decision: GateDecision,
    train: Sequence[Mapping[str, Any]],
    *,
    candidate_dir: Path,
    registry: ModelRegistry,
    work: Path,
    options: RetrainOptions,
    notes: list[str],
    source: str = "tierroute retrain",
    calibrated: bool = False,
) -> bool:
    """Promote a candidate the gate passed, its Cascade calibrated like the served bundle's
    (unless `calibrated`: it was before the gate); whether it was promoted (never on a dry
    run). Appends what happened to `notes`."""
    if not decision.promote:
        return False
    if options.dry_run:
        notes.append("dry run: the candidate would have been promoted")
        return False
    if calibrated:
        version = registry.add(candidate_dir)
        registry.promote(version, note=f"{source}: " + "; ".join(decision.reasons()))
        return True
    try:
        cascade_note = calibrate_cascade(
            settings,
            train,
            candidate_dir=candidate_dir,
            current_dir=registry.promoted_dir(),
            work=work,
            options=options,
        )
    except ConfigError as exc:
        # Promoting it uncalibrated would silently change every Cascade's routing.
        notes.append(f"not promoted: the candidate's Cascade cannot be calibrated: {exc}")
        return False
    if cascade_note is not None:
        notes.append(cascade_note)
    version = registry.add(candidate_dir)
    registry.promote(version, note=f"{source}: " + "; ".join(decision.reasons()))
    return True


def calibrate_cascade(
    settings: Settings,
    train: Sequence[Mapping[str, Any]],
    *,
    candidate_dir: Path,
    current_dir: Path,
    work: Path,
    options: RetrainOptions,
) -> str | None:
    """Give the candidate the Cascade calibration the served bundle has; a note, or None.

    `train_bundle` calibrates Route's thresholds only. When the served bundle also ships a
    Cascade calibration (`cascade` section, and the value policy's `value.onnx`), the
    candidate gets the same procedure toward the same target, on the original training
    split: calibration replays recorded answers, which logged calls do not have. Without
    this, promoting the candidate would quietly change how every Cascade is routed.
    """
    from tierroute.model import Bundle
    from tierroute.offline.evaluation.pipeline import Options, calibrate, shipped_target

    current = Bundle.read(current_dir)
    if not isinstance(current.thresholds.get("cascade"), Mapping):
        return None
    target, share = shipped_target(current)
    data = work / "cascade.jsonl.gz"
    write_training_file(data, train, [], len(settings.tiers))
    calibrate(
        data,
        candidate_dir / THRESHOLDS_FILE,
        settings,
        target,
        Options(
            folds=options.folds,
            model_dir=candidate_dir,
            speculation_cost_share=share,
            policy=current.cascade_policy,
        ),
    )
    return (
        f"the candidate's Cascade was calibrated like the served bundle's "
        f"({current.cascade_policy} policy; {target.statement()}) on the training split"
    )


def _training_data_sha(bundle: Path) -> str | None:
    try:
        metadata = json.loads((bundle / METADATA_FILE).read_text(encoding="utf-8"))
        sha = metadata["data"]["sha256"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return sha if isinstance(sha, str) else None


def format_result(result: RetrainResult) -> str:
    """The readable form of a retrain result."""
    d = result.decision
    log = result.log.as_dict()
    lines = [
        f"log: {log['calls']} calls, {log['labelled']} labelled "
        f"({log['without_text']} without stored text, {log['without_evidence']} without "
        "evidence)",
        f"data: {result.train_records} records to train on, {result.held_out_records} held "
        "out for the comparison",
        f"{'':10} {'version':32} {'quality':>8} {'cost/query':>12}  tier mix",
    ]
    rows = [("current", d.current), ("candidate", d.candidate)]
    if result.served is not None:
        rows = [("served*", result.served), ("baseline", d.current), ("candidate", d.candidate)]
    for name, fig in rows:
        mix = " ".join(f"{k}={v:.2f}" for k, v in fig.tier_mix.items())
        lines.append(
            f"{name:10} {fig.version:32} {fig.quality:8.4f} {fig.cost_per_query_usd:12.6f}  {mix}"
        )
    if result.served is not None:
        lines.append("  * in-sample: the served model was trained on the held-out rows")
    lines.extend(f"  {reason}" for reason in d.reasons())
    lines.extend(f"  note: {n}" for n in result.notes)
    lines.append(
        f"PROMOTED {d.candidate.version} in {result.registry}"
        if result.promoted
        else "not promoted"
    )
    return "\n".join(lines)
