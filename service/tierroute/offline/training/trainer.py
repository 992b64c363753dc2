"""Train, cross-validate, calibrate, export and verify: everything `tierroute train` does.

The output is a model bundle directory (`model.onnx`, `metadata.json`, `thresholds.json`)
that `tierroute.model.classifier.RouterModel.load` reads. Every byte of it is a function of the
data file and this code: no clocks, paths or random ids go in, so `make model` reproduces the
committed bundle exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss
from sklearn.pipeline import Pipeline

from tierroute.errors import ConfigError
from tierroute.model.bundle import METADATA_FILE, MODEL_FILE, THRESHOLDS_FILE
from tierroute.model.classifier import FORMAT_VERSION, INPUT_NAME, PROBA_OUTPUT
from tierroute.offline.training import calibrate, export, familiarity
from tierroute.offline.training.calibrate import Target
from tierroute.offline.training.folds import make_folds, out_of_fold_proba
from tierroute.offline.training.labels import (
    NONE_LABEL_CHOICES,
    NoneLabel,
    TrainingSet,
    check_trainable,
    load_training_set,
    training_rows,
)
from tierroute.offline.training.model import fit_pipeline, hyperparameters, n_features
from tierroute.offline.training.shared_graph import OPSETS, merge_heads
from tierroute.outcomes import file_sha256
from tierroute.settings import RoutingConfig

logger = logging.getLogger(__name__)

CLASSIFIER_DOC = (
    "tierroute router: tf-idf + logistic regression over the prompt's n-grams, per-tier "
    "probabilities"
)

THRESHOLDS_FORMAT = 1
NONE_LABEL_WHY = {
    "cheap": (
        "records no tier answered correctly train as cheap-tier examples: paying for a "
        "higher tier buys nothing on them"
    ),
    "drop": "records no tier answered correctly are left out of training (still evaluated)",
}
_SUMMARY_STRATEGIES = (
    "calibrated_cross_fitted",
    "calibrated",
    "published",
    "always_cheap",
    "always_expensive",
    "oracle",
)
_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "scipy")


@dataclass(frozen=True)
class TrainOptions:
    """Knobs of one training run; the defaults are what `make model` ships."""

    folds: int = 5
    target: Target = field(
        default_factory=lambda: Target("max_cost_ratio", calibrate.DEFAULT_MAX_COST_RATIO)
    )
    none_label: NoneLabel = "cheap"
    prefix_chars: int = field(default_factory=lambda: RoutingConfig().featurize_prefix_chars)
    # Also cross-validate the other none-label policies, for the comparison in the report.
    compare_none_labels: bool = True
    progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    """What a run wrote, plus the fitted pipeline for callers that compare against it."""

    out_dir: Path
    metadata: dict[str, Any]
    thresholds: dict[str, Any]
    pipeline: Pipeline


def train_bundle(data_path: Path, out_dir: Path, options: TrainOptions) -> TrainResult:
    """Train on `data_path` and write a verified model bundle into `out_dir`."""
    data = load_training_set(data_path, options.prefix_chars)
    check_trainable(data, options.folds, options.none_label)
    logger.info("training on %s records from %s", len(data), data_path.name)
    folds = make_folds(data, options.folds)

    cv = _cross_validate(data, folds, options.none_label, options)
    comparison = {options.none_label: _comparison_entry(cv)}
    if options.compare_none_labels:
        for policy in NONE_LABEL_CHOICES:
            if policy != options.none_label:
                other = _cross_validate(data, folds, policy, options)
                comparison[policy] = _comparison_entry(other)

    keep, labels = training_rows(data.labels, options.none_label)
    texts = [t for t, k in zip(data.texts, keep, strict=True) if k]
    logger.info("fitting the final model on %s records", len(texts))
    pipeline = fit_pipeline(texts, labels, len(data.tier_names))
    # Served as the shared feature graph with the classifier as its one head: the same
    # arithmetic on the prompt's n-grams only, where the exported graph works over the whole
    # vocabulary (model_export/README.md, "The served graph"). Parity is checked on the
    # served graph against scikit-learn itself.
    # The familiarity signal rides on the classifier's features (training.familiarity); its
    # threshold flags 1 % of held-out rows, each scored by a signal fitted without its fold.
    tfidf = pipeline.named_steps["tfidf"]
    signal = familiarity.fit_familiarity(tfidf, texts)
    familiar = familiarity.threshold_section(familiarity.out_of_fold(data.texts, folds), signal)
    model_bytes = merge_heads(
        {PROBA_OUTPUT: export.to_onnx(pipeline)},
        doc=CLASSIFIER_DOC,
        familiarity={PROBA_OUTPUT: signal},
    )
    familiar_diff = familiarity.check_parity(
        model_bytes, tfidf, signal, data.prompts, prefix_chars=options.prefix_chars
    )
    familiar["parity_max_abs_diff"] = float(f"{familiar_diff:.3g}")
    parity = export.check_parity(
        pipeline,
        model_bytes,
        data.prompts,
        prefix_chars=options.prefix_chars,
        adversarial=export.adversarial_texts(data.prompts[:20]),
        progress=options.progress,
    )

    data_sha = file_sha256(data_path)
    onnx_sha = hashlib.sha256(model_bytes).hexdigest()
    version = f"tfidf-lr-{data_sha[:8]}-{onnx_sha[:8]}"
    thresholds = {
        "format": THRESHOLDS_FORMAT,
        "version": version,
        "rule": "calibrated",
        "tiers": list(data.tier_names),
        "risk": cv["risk"],
        "target": options.target.as_dict(),
        "cv": cv["report"],
        "familiarity": familiar,
    }
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "labels": list(data.tier_names),
        "input": INPUT_NAME,
        "output": PROBA_OUTPUT,
        "n_features": n_features(pipeline),
        "prefix_chars": options.prefix_chars,
        "data": {
            "file": data_path.name,
            "sha256": data_sha,
            "records": len(data),
            "training_records": len(texts),
            "label_counts": _label_counts(data),
        },
        "none_label": {"policy": options.none_label, "why": NONE_LABEL_WHY[options.none_label]},
        "hyperparameters": hyperparameters(),
        "cv": {
            "folds": options.folds,
            "grouping": "dup_group (MMLU-Pro duplicates share a fold), else the record",
            "target": options.target.as_dict(),
            "risk": cv["risk"],
            **cv["summary"],
            "none_label_comparison": comparison,
        },
        "parity": parity.as_dict(),
        "onnx_sha256": onnx_sha,
        "onnx_opset": OPSETS,
        "libraries": {
            "python": platform.python_version(),
            **{name: importlib_metadata.version(name) for name in _LIBRARIES},
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / MODEL_FILE, model_bytes)
    _write_atomic(out_dir / THRESHOLDS_FILE, _json_bytes(thresholds))
    # Metadata last: a bundle whose metadata names this model is complete.
    _write_atomic(out_dir / METADATA_FILE, _json_bytes(metadata))
    logger.info("wrote model %s to %s", version, out_dir)
    return TrainResult(out_dir, metadata, thresholds, pipeline)


def _cross_validate(
    data: TrainingSet, folds: npt.NDArray[np.int64], policy: NoneLabel, options: TrainOptions
) -> dict[str, Any]:
    """Out-of-fold probabilities, calibrated thresholds and every strategy's figures."""
    proba = out_of_fold_proba(
        data, folds, policy, progress=options.progress, desc=f"cv (none={policy})"
    )
    found = calibrate.search_thresholds(proba, data.correct, data.cost, options.target)
    (fitted,) = calibrate.cross_fitted(proba, folds, data, [options.target])
    if fitted is None:
        raise ConfigError(f"some fold cannot meet the target: {options.target.statement()}")
    held_out, per_fold = fitted
    choices = {
        "calibrated_cross_fitted": held_out,
        "calibrated": calibrate.rule_choices(proba, "calibrated", found.risk),
        "published": calibrate.rule_choices(proba, "published"),
        **calibrate.baseline_choices(data),
    }
    report = calibrate.strategy_report(choices, data)
    report["notes"] = {
        "calibrated": "thresholds fit on all out-of-fold rows, scored on the same rows",
        "calibrated_cross_fitted": (
            "per fold: thresholds fit on the other folds' out-of-fold rows, scored on the "
            "fold (the honest figure)"
        ),
    }
    report["fold_thresholds"] = per_fold
    report["classifier"] = _classifier_metrics(proba, data)
    report["target_sweep"] = calibrate.target_sweep(proba, folds, data, calibrate.SWEEP_TARGETS)
    overall = report["overall"]
    summary = {
        "classifier": report["classifier"],
        "fold_thresholds": per_fold,
        **{name: overall[name] for name in _SUMMARY_STRATEGIES if name in overall},
    }
    return {"risk": list(found.risk), "report": report, "summary": summary}


def _comparison_entry(cv: dict[str, Any]) -> dict[str, Any]:
    summary = cv["summary"]
    return {
        "risk": cv["risk"],
        **{k: summary[k] for k in ("classifier", "calibrated_cross_fitted", "published")},
    }


def _classifier_metrics(proba: npt.NDArray[np.float64], data: TrainingSet) -> dict[str, float]:
    # Scored against the cheap-mapped label on every row so both policies compare alike.
    _, y = training_rows(data.labels, "cheap")
    labels = list(range(len(data.tier_names)))
    return {
        "accuracy": round(float(accuracy_score(y, proba.argmax(axis=1))), 6),
        "balanced_accuracy": round(float(balanced_accuracy_score(y, proba.argmax(axis=1))), 6),
        "log_loss": round(float(log_loss(y, proba, labels=labels)), 6),
    }


def _label_counts(data: TrainingSet) -> dict[str, int]:
    counts = Counter(data.labels.tolist())
    names = dict(enumerate(data.tier_names))
    return {names.get(label, "none"): counts[label] for label in sorted(counts)}


def _json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _write_atomic(path: Path, content: bytes) -> None:
    # Write beside the target and rename, so a crash never leaves half a file in a bundle.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
