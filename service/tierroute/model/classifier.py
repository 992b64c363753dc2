"""The serving side of the router classifier: load a model bundle, validate it, predict.

A bundle is a directory with `model.onnx` (TF-IDF + logistic regression exported by
`tierroute.offline.training`), `metadata.json` (version, label order, hashes, training figures) and
`thresholds.json` (the calibrated risk limits). When `thresholds.json` sets
`cascade.policy = "value"`, the bundle also holds the Cascade's expected-value model
(`cascade.value.model`, `tierroute.model.value`). Loading checks every file and names the one at
fault. This module needs onnxruntime and numpy only: scikit-learn never loads when serving.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tierroute.errors import ModelLoadError
from tierroute.model.bundle import (
    CASCADE_POLICIES,
    METADATA_FILE,
    MODEL_FILE,
    POLICY_THRESHOLDS,
    POLICY_VALUE,
    THRESHOLDS_FILE,
)
from tierroute.model.onnx_session import ORT_LOAD_ERRORS, create_session
from tierroute.model.operating import Ladder
from tierroute.model.value import FAMILIARITY_OUTPUT, ValueModel
from tierroute.outcomes import file_sha256
from tierroute.routing import CascadePlan, RiskThresholds, Scored, classifier_text
from tierroute.settings import TierConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Graph names fixed by the exporter; the loader checks them so a foreign model fails early.
INPUT_NAME = "text"
PROBA_OUTPUT = "probabilities"
# FAMILIARITY_OUTPUT (value.py's): how much the prompt looks like the training prompts
# (0-1), from the same feature pass; bundles built before it serve without the signal.
# thresholds.json: the section with the threshold below which a query is unfamiliar.
FAMILIARITY_SECTION = "familiarity"


class RouterModel:
    """A loaded router classifier: per-tier probabilities for a query, plus its thresholds."""

    def __init__(
        self,
        session: Any,
        *,
        version: str,
        labels: tuple[str, ...],
        thresholds: RiskThresholds,
        prefix_chars: int,
        metadata: Mapping[str, Any],
        calibration: Mapping[str, Any] | None = None,
        cascade_thresholds: RiskThresholds | None = None,
        value_model: ValueModel | None = None,
        familiarity_threshold: float | None = None,
    ) -> None:
        self._session = session
        names = {o.name for o in session.get_outputs()}
        self.has_familiarity = FAMILIARITY_OUTPUT in names
        self._outputs = [PROBA_OUTPUT] + ([FAMILIARITY_OUTPUT] if self.has_familiarity else [])
        # Below it a query is unfamiliar (None: the bundle ships no signal or no threshold).
        self.familiarity_threshold = familiarity_threshold if self.has_familiarity else None
        self.version = version
        self.labels = labels
        self.thresholds = thresholds
        self.prefix_chars = prefix_chars
        self.metadata: dict[str, Any] = dict(metadata)
        # The whole thresholds document: `tierroute calibrate` adds a `cascade` section.
        self.calibration: dict[str, Any] = dict(calibration or {})
        # Where Cascade starts, when calibrated apart from the Route thresholds.
        self.cascade_thresholds = cascade_thresholds
        # The Cascade's expected-value policy, when the bundle's policy is "value".
        self.value_model = value_model

    @classmethod
    def load(
        cls, model_dir: Path, n_tiers: int, tiers: Sequence[TierConfig] | None = None
    ) -> RouterModel:
        """Load and validate the bundle in `model_dir` for `n_tiers` configured tiers.

        `tiers` price the value policy's predicted tokens (None: the prices it was
        calibrated under). Raises ModelLoadError naming the missing, corrupt or mismatched
        file.
        """
        metadata_path = model_dir / METADATA_FILE
        metadata = _read_json(metadata_path)
        version, labels, prefix_chars, onnx_sha = _check_metadata(metadata, metadata_path)
        if len(labels) != n_tiers:
            raise ModelLoadError(
                f"{metadata_path}: the model predicts {len(labels)} tiers {list(labels)} "
                f"but {n_tiers} tiers are configured"
            )

        model_path = model_dir / MODEL_FILE
        if not model_path.is_file():
            raise ModelLoadError(f"router model file not found: {model_path}")
        actual_sha = file_sha256(model_path)
        if actual_sha != onnx_sha:
            raise ModelLoadError(
                f"{model_path}: SHA-256 {actual_sha} does not match {onnx_sha} "
                f"recorded in {metadata_path}"
            )
        try:
            session = create_session(model_path.read_bytes())
        except ORT_LOAD_ERRORS as exc:
            raise ModelLoadError(f"{model_path}: onnxruntime cannot load it: {exc}") from exc
        _check_signature(session, model_path, n_tiers)

        thresholds_path = model_dir / THRESHOLDS_FILE
        thresholds_doc = _read_json(thresholds_path)
        try:
            thresholds = RiskThresholds.from_json(thresholds_doc, n_tiers)
        except (ModelLoadError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{thresholds_path}: {exc}") from exc
        cascade_section = thresholds_doc.get("cascade")
        cascade_thresholds = None
        if isinstance(cascade_section, dict) and "risk" in cascade_section:
            try:
                cascade_thresholds = RiskThresholds.from_json(cascade_section, n_tiers)
            except (ModelLoadError, TypeError, ValueError) as exc:
                raise ModelLoadError(f"{thresholds_path}: cascade: {exc}") from exc
        if thresholds_doc.get("version") != version:
            raise ModelLoadError(
                f"{thresholds_path}: calibrated for model version "
                f"{thresholds_doc.get('version')!r}, not {version!r} of {metadata_path}"
            )
        familiarity_threshold = _familiarity_threshold(thresholds_doc, thresholds_path)
        value_model = _load_policy(
            model_dir,
            cascade_section,
            thresholds_path,
            n_tiers=n_tiers,
            prefix_chars=prefix_chars,
            ladder=Ladder.of(tiers) if tiers is not None else None,
        )

        logger.info("loaded router model %s from %s", version, model_dir)
        return cls(
            session,
            version=version,
            labels=labels,
            thresholds=thresholds,
            prefix_chars=prefix_chars,
            metadata=metadata,
            calibration=thresholds_doc,
            cascade_thresholds=cascade_thresholds,
            value_model=value_model,
            familiarity_threshold=familiarity_threshold,
        )

    def predict_proba(self, text: str) -> list[float]:
        """Per-tier probabilities (label order) that each tier is the cheapest one needed."""
        return self.score(text).probs

    def score(self, text: str, point: str | None = None, *, plan: bool = False) -> Scored:
        """The probabilities and the familiarity of `text` from one run, and with `plan`
        the value policy's plan for a Cascade at operating point `point` (None: the
        default; the plan is None without a value model)."""
        if plan:
            value = self.value_model
            if (
                value is not None
                and value.shared
                and value.prefix_chars == self.prefix_chars
                and (value.familiar or not self.has_familiarity)
            ):
                return value.scored(text, point)
            scored = self.score(text)
            return Scored(scored.probs, scored.familiarity, self.cascade_plan(text, point))
        feed = {INPUT_NAME: np.array([[classifier_text(text, self.prefix_chars)]], dtype=object)}
        out = self._session.run(self._outputs, feed)
        familiarity = float(out[1].reshape(-1)[0]) if self.has_familiarity else None
        return Scored(out[0][0].tolist(), familiarity)

    @property
    def operating_points(self) -> tuple[str, ...]:
        """The value policy's operating point names a request may pick (none without it)."""
        return tuple(self.value_model.points) if self.value_model is not None else ()

    def cascade_plan(self, text: str, point: str | None = None) -> CascadePlan | None:
        """The value policy's plan for a Cascade of `text` at operating point `point` (None:
        the default), or None without a value model."""
        if self.value_model is None:
            return None
        return self.value_model.plan(text, point)

    def score_cascade(
        self, text: str, point: str | None = None
    ) -> tuple[list[float], CascadePlan | None]:
        """Per-tier probabilities and the value plan for a Cascade of `text` at operating
        point `point` (None: the default).

        With a value graph that shares the classifier's feature pass, one onnxruntime run
        answers both (the same probabilities as `predict_proba`, to 1e-5); otherwise the
        two models run one after the other.
        """
        scored = self.score(text, point, plan=True)
        return scored.probs, scored.plan

    def warm_up(self) -> None:
        """Run the models once: the first run after loading is much slower than the rest."""
        self.predict_proba("warm up the router model")
        self.cascade_plan("warm up the value model")
        self.score_cascade("warm up the shared feature pass")


def _load_policy(
    model_dir: Path,
    section: Any,
    thresholds_path: Path,
    *,
    n_tiers: int,
    prefix_chars: int,
    ladder: Ladder | None = None,
) -> ValueModel | None:
    """The value model when the thresholds file's `cascade.policy` is "value", else None."""
    if (
        not isinstance(section, dict)
        or section.get("policy", POLICY_THRESHOLDS) == POLICY_THRESHOLDS
    ):
        return None
    policy = section["policy"]
    if policy != POLICY_VALUE:
        raise ModelLoadError(
            f"{thresholds_path}: cascade.policy {policy!r} is not one of {list(CASCADE_POLICIES)}"
        )
    value = section.get("value")
    if not isinstance(value, dict):
        raise ModelLoadError(
            f"{thresholds_path}: cascade.policy is {POLICY_VALUE!r} but cascade.value is "
            "missing or not an object"
        )
    # The value model reads the prompt prefix it was fitted on, recorded beside it.
    prefix = value.get("prefix_chars", prefix_chars)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 1:
        raise ModelLoadError(
            f"{thresholds_path}: cascade.value.prefix_chars must be an integer >= 1"
        )
    return ValueModel.load(
        model_dir,
        value,
        n_tiers=n_tiers,
        prefix_chars=prefix,
        where=str(thresholds_path),
        ladder=ladder,
    )


def _familiarity_threshold(document: Mapping[str, Any], path: Path) -> float | None:
    """The `familiarity.threshold` of a thresholds file, checked; None when absent."""
    section = document.get(FAMILIARITY_SECTION)
    if section is None:
        return None
    value = section.get("threshold") if isinstance(section, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ModelLoadError(f"{path}: familiarity.threshold must be a number in [0, 1]")
    return float(value)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"router model file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def _check_metadata(
    metadata: Mapping[str, Any], path: Path
) -> tuple[str, tuple[str, ...], int, str]:
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: format_version {metadata.get('format_version')!r} is not "
            f"{FORMAT_VERSION}, the one this server reads"
        )
    version = metadata.get("model_version")
    labels = metadata.get("labels")
    prefix_chars = metadata.get("prefix_chars")
    onnx_sha = metadata.get("onnx_sha256")
    if not isinstance(version, str) or not version:
        raise ModelLoadError(f"{path}: 'model_version' must be a non-empty string")
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ModelLoadError(f"{path}: 'labels' must be a list of tier names")
    if not isinstance(prefix_chars, int) or isinstance(prefix_chars, bool) or prefix_chars < 1:
        raise ModelLoadError(f"{path}: 'prefix_chars' must be a positive integer")
    if not isinstance(onnx_sha, str) or len(onnx_sha) != 64:
        raise ModelLoadError(f"{path}: 'onnx_sha256' must be a SHA-256 hex digest")
    return version, tuple(labels), prefix_chars, onnx_sha


def _check_signature(session: Any, path: Path, n_tiers: int) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if inputs != [INPUT_NAME] or PROBA_OUTPUT not in outputs:
        raise ModelLoadError(
            f"{path}: expected input {INPUT_NAME!r} and output {PROBA_OUTPUT!r}, "
            f"found inputs {inputs} and outputs {sorted(outputs)}"
        )
    width = outputs[PROBA_OUTPUT][-1]
    if isinstance(width, int) and width != n_tiers:
        raise ModelLoadError(f"{path}: outputs {width} probabilities, expected {n_tiers}")
