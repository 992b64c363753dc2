"""The serving loader of the router classifier: the bundled model and bundle validation."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tierroute.errors import ModelLoadError
from tierroute.model.bundle import METADATA_FILE, MODEL_FILE, THRESHOLDS_FILE
from tierroute.model.classifier import RouterModel
from tierroute.outcomes import file_sha256
from tierroute.settings import RoutingConfig

BUNDLE = RoutingConfig().model_dir


@pytest.fixture(scope="module")
def model() -> RouterModel:
    """The bundled model, loaded once."""
    return RouterModel.load(BUNDLE, 3)


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled model, for breaking it."""
    return Path(shutil.copytree(BUNDLE, tmp_path / "bundle"))


def _edit_json(path: Path, change: dict[str, Any]) -> None:
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))


def test_bundled_model_gives_probabilities_summing_to_one(model: RouterModel) -> None:
    """The shipped model returns one probability per tier, summing to 1."""
    probs = model.predict_proba("What is the capital of France?")
    assert len(probs) == 3
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-5)


def test_bundled_model_metadata_and_thresholds_agree(model: RouterModel) -> None:
    """The shipped bundle's version, labels and thresholds are consistent and parity passed."""
    assert model.labels == ("cheap", "mid", "expensive")
    assert model.version == model.metadata["model_version"]
    assert len(model.thresholds.risk) == 2
    assert model.metadata["parity"]["class_changes"] == 0
    assert model.metadata["parity"]["max_abs_diff"] < 1e-5


def test_predict_reads_only_the_bounded_prefix(model: RouterModel) -> None:
    """Text beyond prefix_chars does not change the prediction."""
    head = "Solve the integral of x squared. " * 200
    head = head[: model.prefix_chars]
    tail = " quantum chromodynamics renormalization python code " * 100
    assert model.predict_proba(head + tail) == model.predict_proba(head)


def test_predict_lower_cases_in_python(model: RouterModel) -> None:
    """Upper- and lower-case versions of a query get the same prediction."""
    text = "Which Python function returns the length of a list?"
    assert model.predict_proba(text.upper()) == model.predict_proba(text.lower())


def test_warm_up_leaves_predictions_unchanged(model: RouterModel) -> None:
    """Warming up runs the model without altering later answers."""
    before = model.predict_proba("how many apples are left?")
    model.warm_up()
    assert model.predict_proba("how many apples are left?") == before


@pytest.mark.parametrize("name", [MODEL_FILE, METADATA_FILE, THRESHOLDS_FILE])
def test_missing_file_is_named(bundle_copy: Path, name: str) -> None:
    """A bundle missing any of its three files fails to load, naming the file."""
    (bundle_copy / name).unlink()
    with pytest.raises(ModelLoadError, match=name):
        RouterModel.load(bundle_copy, 3)


def test_corrupt_onnx_is_named(bundle_copy: Path) -> None:
    """An ONNX file onnxruntime cannot parse fails with its name, even with a matching hash."""
    path = bundle_copy / MODEL_FILE
    path.write_bytes(b"not an onnx model at all")
    _edit_json(bundle_copy / METADATA_FILE, {"onnx_sha256": file_sha256(path)})
    with pytest.raises(ModelLoadError, match=f"{MODEL_FILE}.*onnxruntime cannot load"):
        RouterModel.load(bundle_copy, 3)


def test_onnx_not_matching_recorded_hash_is_named(bundle_copy: Path) -> None:
    """An ONNX file whose SHA-256 differs from metadata.json fails, naming the model file."""
    path = bundle_copy / MODEL_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=f"{MODEL_FILE}: SHA-256"):
        RouterModel.load(bundle_copy, 3)


def test_label_count_mismatch_is_named(bundle_copy: Path) -> None:
    """A three-tier model with two configured tiers fails, naming metadata.json."""
    with pytest.raises(ModelLoadError, match=f"{METADATA_FILE}.*2 tiers are configured"):
        RouterModel.load(bundle_copy, 2)


def test_corrupt_metadata_is_named(bundle_copy: Path) -> None:
    """metadata.json that is not JSON fails, naming it."""
    (bundle_copy / METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=f"{METADATA_FILE}: not readable JSON"):
        RouterModel.load(bundle_copy, 3)


def test_unknown_format_version_is_named(bundle_copy: Path) -> None:
    """A metadata format this server does not read fails, naming metadata.json."""
    _edit_json(bundle_copy / METADATA_FILE, {"format_version": 99})
    with pytest.raises(ModelLoadError, match=f"{METADATA_FILE}: format_version 99"):
        RouterModel.load(bundle_copy, 3)


@pytest.mark.parametrize(
    "change",
    [{"risk": [0.1, 1.5]}, {"risk": [0.1]}, {"risk": "0.1,0.2"}, {"risk": [0.1, "x"]}],
    ids=["out-of-range", "wrong-count", "not-a-list", "not-a-number"],
)
def test_bad_thresholds_are_named(bundle_copy: Path, change: dict[str, Any]) -> None:
    """Invalid risk thresholds fail to load, naming thresholds.json."""
    _edit_json(bundle_copy / THRESHOLDS_FILE, change)
    with pytest.raises(ModelLoadError, match=THRESHOLDS_FILE):
        RouterModel.load(bundle_copy, 3)


def test_thresholds_of_another_model_are_named(bundle_copy: Path) -> None:
    """Thresholds calibrated for a different model version fail, naming thresholds.json."""
    _edit_json(bundle_copy / THRESHOLDS_FILE, {"version": "some-other-model"})
    with pytest.raises(ModelLoadError, match=f"{THRESHOLDS_FILE}: calibrated for"):
        RouterModel.load(bundle_copy, 3)


def test_serving_module_does_not_import_sklearn() -> None:
    """Importing and loading the serving classifier never imports scikit-learn."""
    code = (
        "import sys; from pathlib import Path; import tierroute.model.classifier as c; "
        f"c.RouterModel.load(Path({str(BUNDLE)!r}), 3).predict_proba('x'); "
        "assert 'sklearn' not in sys.modules and 'skl2onnx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
