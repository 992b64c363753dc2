"""Training, calibration, ONNX export and parity of the router classifier."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.fixtures import make_records, write_dataset
from tierroute.errors import ConfigError, ModelLoadError
from tierroute.model.bundle import METADATA_FILE, MODEL_FILE, THRESHOLDS_FILE
from tierroute.model.classifier import RouterModel
from tierroute.offline.cli.modelling import add_train_parser
from tierroute.offline.training import calibrate, export
from tierroute.offline.training.folds import make_folds
from tierroute.offline.training.labels import (
    NO_TIER,
    build_training_set,
    check_trainable,
    training_rows,
)
from tierroute.offline.training.model import build_pipeline, fit_pipeline, select_vocabulary
from tierroute.offline.training.shared_graph import GRAPH_NAME
from tierroute.offline.training.trainer import TrainOptions, TrainResult, train_bundle
from tierroute.outcomes import file_sha256, load_records
from tierroute.routing.features import classifier_text
from tierroute.settings import Settings

PREFIX = 4096
BUNDLE_FILES = (MODEL_FILE, METADATA_FILE, THRESHOLDS_FILE)


@pytest.fixture(scope="module")
def bundle(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One bundle trained on the 300-record fixture file."""
    out = tmp_path_factory.mktemp("bundle")
    return train_bundle(small_data, out, TrainOptions(folds=3, progress=False))


def _parity(result: TrainResult, texts: list[str]) -> tuple[int, float]:
    model = RouterModel.load(result.out_dir, 3)
    served = np.array([model.predict_proba(t) for t in texts])
    expected = result.pipeline.predict_proba(
        [classifier_text(t, model.prefix_chars) for t in texts]
    )
    changes = int((served.argmax(axis=1) != expected.argmax(axis=1)).sum())
    return changes, float(np.abs(served - expected).max())


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tierroute")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_bundle_loads_with_the_version_it_records(bundle: TrainResult) -> None:
    """A trained bundle loads, and its version and labels are the ones in its metadata."""
    model = RouterModel.load(bundle.out_dir, 3)
    assert model.version == bundle.metadata["model_version"]
    assert model.labels == ("cheap", "mid", "expensive")
    assert model.prefix_chars == PREFIX


def test_metadata_records_data_and_model_hashes(bundle: TrainResult, small_data: Path) -> None:
    """metadata.json names the data file's SHA-256, record count and the model's SHA-256."""
    meta = json.loads((bundle.out_dir / METADATA_FILE).read_text())
    assert meta["data"]["sha256"] == file_sha256(small_data)
    assert meta["data"]["records"] == 300
    assert meta["onnx_sha256"] == file_sha256(bundle.out_dir / MODEL_FILE)
    assert meta["n_features"] > 0


def test_onnx_matches_sklearn_on_the_fixture_rows(bundle: TrainResult, small_data: Path) -> None:
    """The served model agrees with scikit-learn on every training row."""
    prompts = [r["prompt"] for r in load_records(small_data)]
    changes, diff = _parity(bundle, prompts)
    assert changes == 0
    assert diff < 1e-5


def test_onnx_matches_sklearn_on_adversarial_texts(bundle: TrainResult, small_data: Path) -> None:
    """Empty, symbol-only, emoji, CJK, code and 100 KB texts give scikit-learn's output."""
    prompts = [r["prompt"] for r in load_records(small_data)][:10]
    changes, diff = _parity(bundle, export.adversarial_texts(prompts))
    assert changes == 0
    assert diff < 1e-5


def test_the_bundle_serves_the_classifier_over_present_n_grams(bundle: TrainResult) -> None:
    """model.onnx is the one-head shared feature graph: n-grams looked up, not counted into
    a row as wide as the vocabulary (TfIdfVectorizer) and worked on whole (normaliser, linear
    classifier); its outputs are the probabilities and the familiarity signal."""
    graph = onnx.load(str(bundle.out_dir / MODEL_FILE)).graph
    ops = {n.op_type for n in graph.node}
    assert graph.name == GRAPH_NAME
    assert {"LabelEncoder", "Unique", "Gather", "MatMul", "Softmax"} <= ops
    assert not ops & {"TfIdfVectorizer", "Normalizer", "LinearClassifier"}
    assert [o.name for o in graph.output] == ["probabilities", "familiarity"]


def test_repeated_words_use_scikit_learns_sublinear_tf(bundle: TrainResult) -> None:
    """Term counts above one are scaled as 1 + log(tf), as scikit-learn does."""
    vocabulary = sorted(bundle.pipeline.named_steps["tfidf"].vocabulary_)
    words = [w for w in vocabulary if " " not in w][:20]
    texts = [
        " ".join([w] * k + [v] * (6 - k)) for k, (w, v) in enumerate(itertools.pairwise(words))
    ]
    _, diff = _parity(bundle, texts)
    assert diff < 1e-5


def test_parity_check_fails_loudly_on_a_mismatched_model(bundle: TrainResult) -> None:
    """check_parity raises when the ONNX model is not the pipeline it is compared with."""
    other = make_records(60, seed=99)
    data = build_training_set(other, PREFIX)
    pipeline = fit_pipeline(data.texts, training_rows(data.labels, "cheap")[1], 3)
    model_bytes = (bundle.out_dir / MODEL_FILE).read_bytes()
    with pytest.raises(ModelLoadError, match="disagrees with scikit-learn"):
        export.check_parity(
            pipeline, model_bytes, list(data.prompts), prefix_chars=PREFIX, progress=False
        )


def test_vocabulary_keeps_the_words_of_every_bigram() -> None:
    """At a tie on the feature cut-off, words win over the bigrams made of them."""
    vocabulary = select_vocabulary(["zz yy", "xx ww", "xx ww"], max_features=3)
    assert set(vocabulary) == {"xx", "ww", "xx ww"}
    vocabulary = select_vocabulary(["zz yy", "xx ww", "xx ww"], max_features=4)
    assert set(vocabulary) == {"xx", "ww", "xx ww", "yy"}


def test_export_refuses_a_bigram_without_its_words() -> None:
    """A vocabulary whose bigram lacks one of its words cannot be exported silently wrong."""
    pipeline = build_pipeline({"zz": 0, "zz yy": 1})
    pipeline.fit(["zz yy", "zz", "qq yy"] * 2, np.array([0, 1, 2] * 2))
    with pytest.raises(ModelLoadError, match="bigrams lack one of their words"):
        export.to_onnx(pipeline)


def test_export_is_byte_identical_when_repeated(bundle: TrainResult) -> None:
    """Exporting the same fitted pipeline twice gives the same bytes."""
    assert export.to_onnx(bundle.pipeline) == export.to_onnx(bundle.pipeline)


def test_training_is_byte_identical_across_processes(small_data: Path, tmp_path: Path) -> None:
    """Whole bundles trained in processes with different string-hash seeds are identical."""
    script = (
        "import sys; from pathlib import Path; "
        "from tierroute.offline.training.trainer import TrainOptions, train_bundle; "
        "train_bundle(Path(sys.argv[1]), Path(sys.argv[2]), "
        "TrainOptions(folds=2, compare_none_labels=False, progress=False))"
    )
    # These seeds order skl2onnx's opset set differently, which once changed the bytes.
    for seed in ("1", "3", "4"):
        subprocess.run(
            [sys.executable, "-c", script, str(small_data), str(tmp_path / seed)],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
    for name in BUNDLE_FILES:
        first = (tmp_path / "1" / name).read_bytes()
        assert (tmp_path / "3" / name).read_bytes() == first, name
        assert (tmp_path / "4" / name).read_bytes() == first, name


def test_thresholds_file_states_target_rule_and_figures(bundle: TrainResult) -> None:
    """thresholds.json holds the target, the rule, two risk limits and the CV figures."""
    doc = json.loads((bundle.out_dir / THRESHOLDS_FILE).read_text())
    assert doc["rule"] == "calibrated"
    assert doc["version"] == bundle.metadata["model_version"]
    assert doc["target"]["kind"] == "max_cost_ratio"
    assert len(doc["risk"]) == 2
    overall = doc["cv"]["overall"]
    for name in ("calibrated", "calibrated_cross_fitted", "published", "always_cheap", "oracle"):
        assert set(overall[name]) >= {"quality", "cost_usd", "cost_vs_top", "mix"}
    assert set(doc["cv"]["per_task"]) == {"toy_facts", "toy_math", "toy_code"}


def test_calibrated_thresholds_meet_the_cost_target_on_their_rows(bundle: TrainResult) -> None:
    """The in-sample calibrated rule spends at most the target share of always-top's cost."""
    overall = bundle.thresholds["cv"]["overall"]
    assert overall["calibrated"]["cost_vs_top"] <= 1 / 3 + 1e-9


def test_too_few_records_are_refused() -> None:
    """Fewer records than folds x tiers is a ConfigError saying so."""
    data = build_training_set(make_records(8), PREFIX)
    with pytest.raises(ConfigError, match="too few"):
        check_trainable(data, 5, "cheap")


def test_a_tier_rarer_than_the_folds_is_refused() -> None:
    """A tier labelled on fewer records than there are folds is a ConfigError naming it."""
    records = make_records(60)
    for record in records:
        if record["min_tier_correct"] == "expensive":
            record["min_tier_correct"] = "mid"
    data = build_training_set(records, PREFIX)
    with pytest.raises(ConfigError, match="expensive"):
        check_trainable(data, 5, "cheap")


def test_label_is_derived_when_min_tier_correct_is_absent() -> None:
    """Records without min_tier_correct get the first correct tier of the trio."""
    records = make_records(30)
    expected = build_training_set(records, PREFIX).labels
    for record in records:
        del record["min_tier_correct"]
    assert build_training_set(records, PREFIX).labels.tolist() == expected.tolist()


def test_none_label_cheap_trains_unanswerable_records_as_cheap() -> None:
    """Under 'cheap', records no tier got right become cheap-tier examples."""
    keep, y = training_rows(np.array([NO_TIER, 2, 1, 0]), "cheap")
    assert keep.tolist() == [True, True, True, True]
    assert y.tolist() == [0, 2, 1, 0]


def test_none_label_drop_leaves_unanswerable_records_out() -> None:
    """Under 'drop', records no tier got right are not trained on."""
    keep, y = training_rows(np.array([NO_TIER, 2, 1, 0]), "drop")
    assert keep.tolist() == [False, True, True, True]
    assert y.tolist() == [2, 1, 0]


def test_folds_keep_duplicate_questions_together() -> None:
    """Records sharing a dup_group always land in the same fold."""
    records = make_records(120)
    for i in range(0, 120, 4):
        records[i]["dup_group"] = records[i + 1]["dup_group"] = f"group-{i}"
    data = build_training_set(records, PREFIX)
    folds = make_folds(data, 5)
    for i in range(0, 120, 4):
        assert folds[i] == folds[i + 1]
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]


def test_vectorised_rule_matches_the_serving_rule() -> None:
    """The calibration's vectorised rule picks the same tier as policy.calibrated_rule."""
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([1.0, 1.0, 1.0], size=2000)
    for risk in [(0.1, 0.3), (0.5, 0.2), (0.0, 1.0), (1.0, 0.0)]:
        fast = calibrate.calibrated_choices(proba, risk)
        assert fast.tolist() == calibrate.rule_choices(proba, "calibrated", risk).tolist()


def _random_outcomes(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet([2.0, 1.0, 1.0], size=n)
    correct = (rng.random((n, 3)) < np.array([0.6, 0.7, 0.8])).astype(float)
    cost = np.tile([1e-4, 2e-3, 1e-2], (n, 1)) * rng.uniform(0.5, 1.5, (n, 1))
    return proba, correct, cost


def test_cost_target_is_met_with_the_best_quality_on_the_grid() -> None:
    """No grid point within the cost budget has higher quality than the one chosen."""
    proba, correct, cost = _random_outcomes(5)
    found = calibrate.search_thresholds(
        proba, correct, cost, calibrate.Target("max_cost_ratio", 0.3)
    )
    rows = np.arange(len(proba))
    budget = 0.3 * cost[:, 2].mean()
    assert found.cost_usd <= budget * (1 + 1e-12)
    rng = random.Random(0)
    grid = calibrate.THRESHOLD_GRID.tolist()
    for _ in range(2000):
        choice = calibrate.calibrated_choices(proba, (rng.choice(grid), rng.choice(grid)))
        if cost[rows, choice].mean() <= budget:
            assert correct[rows, choice].mean() <= found.quality + 1e-12


def test_quality_target_is_met_at_the_lowest_cost_on_the_grid() -> None:
    """No grid point meeting the quality floor costs less than the one chosen."""
    proba, correct, cost = _random_outcomes(6)
    found = calibrate.search_thresholds(
        proba, correct, cost, calibrate.Target("min_quality_ratio", 0.95)
    )
    rows = np.arange(len(proba))
    floor = 0.95 * correct[:, 2].mean()
    assert found.quality >= floor - 1e-12
    rng = random.Random(1)
    grid = calibrate.THRESHOLD_GRID.tolist()
    for _ in range(2000):
        choice = calibrate.calibrated_choices(proba, (rng.choice(grid), rng.choice(grid)))
        if correct[rows, choice].mean() >= floor:
            assert cost[rows, choice].mean() >= found.cost_usd - 1e-15


def test_unreachable_target_is_a_config_error() -> None:
    """A cost ceiling below always-cheap's cost cannot be met and says so."""
    proba, correct, cost = _random_outcomes(7)
    with pytest.raises(ConfigError, match="no thresholds meet the target"):
        calibrate.search_thresholds(proba, correct, cost, calibrate.Target("max_cost_ratio", 0.001))


def test_cli_train_writes_a_loadable_bundle(small_data: Path, tmp_path: Path) -> None:
    """`tierroute train --data FILE --out DIR` exits 0 and leaves a bundle that loads."""
    out = tmp_path / "model"
    args = _cli(
        ["train", "--data", str(small_data), "--out", str(out), "--folds", "2", "--quiet",
         "--target-quality", "0.9", "--none-label", "drop", "--no-compare"]
    )  # fmt: skip
    assert args.func(args, Settings.from_env({}), {}) == 0
    model = RouterModel.load(out, 3)
    assert model.metadata["none_label"]["policy"] == "drop"
    assert model.metadata["cv"]["target"]["kind"] == "min_quality_ratio"


def test_make_models_build_script_writes_a_loadable_bundle(
    small_data: Path, tmp_path: Path
) -> None:
    """`model_export/build.py` (what `make model` runs) trains a bundle that loads."""
    out = tmp_path / "bundle"
    script = Path(__file__).resolve().parents[2] / "model_export" / "build.py"
    argv = [sys.executable, str(script), "--data", str(small_data), "--out", str(out),
            "--folds", "2", "--quiet", "--no-compare"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERROUTE_")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert RouterModel.load(out, 3).version


def test_cli_train_reports_data_too_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training on a handful of records exits 2 with a readable reason on stderr."""
    data = write_dataset(tmp_path / "tiny.jsonl.gz", make_records(6))
    args = _cli(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--quiet"])
    assert args.func(args, Settings.from_env({}), {}) == 2
    assert "too few" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.realdata
def test_onnx_matches_sklearn_on_real_dev_rows(real_data: Path) -> None:
    """Trained on part of the dev data, the export agrees on held-back dev rows."""
    records = load_records(real_data)
    random.Random(11).shuffle(records)
    train = build_training_set(records[:2000], PREFIX)
    pipeline = fit_pipeline(train.texts, training_rows(train.labels, "cheap")[1], 3)
    held_back = [r["prompt"] for r in records[2000:3500]]
    report = export.check_parity(
        pipeline,
        export.to_onnx(pipeline),
        held_back,
        prefix_chars=PREFIX,
        adversarial=export.adversarial_texts(held_back[:20]),
        progress=False,
    )
    assert report.class_changes == 0
    assert report.max_abs_diff < 1e-5


# -- the value policy's agreement actions, as `make model` calibrates them ----------------------


def test_calibrate_fits_the_agreement_actions_when_the_data_holds_the_probe(
    tmp_path: Path,
) -> None:
    """With the probe's recorded answers in the data, calibrate fits the eight actions (the
    agreement checks last), prices the probe as one more payer, stores which actions each
    record may take, ships `ref_parity` against the reference tier, and the bundle loads."""
    from tierroute.model.bundle import VALUE_CALIBRATION_FILE
    from tierroute.offline.evaluation.pipeline import Options
    from tierroute.offline.evaluation.pipeline import calibrate as calibrate_bundle
    from tierroute.routing import VALUE_ACTIONS

    records = make_records(150)
    for record in records[::2]:
        # The probe (its first replay model) agrees with the cheap tier on every other record.
        probe = dict(record["models"][record["tiers"]["cheap"]])
        record["models"]["gpt-4o-mini-2024-07-18"] = probe
    for record in records[1::2]:
        probe = dict(record["models"][record["tiers"]["expensive"]])
        record["models"]["gpt-4o-mini-2024-07-18"] = probe
    data = write_dataset(tmp_path / "probe.jsonl.gz", records)
    bundle = tmp_path / "bundle"
    train_bundle(data, bundle, TrainOptions(folds=2, compare_none_labels=False, progress=False))
    settings = Settings.from_env({"TIERROUTE_ROUTING_REFERENCE_TIER": "mid"})
    result = calibrate_bundle(
        data, bundle / THRESHOLDS_FILE, settings, None, Options(folds=2, model_dir=bundle)
    )
    section = result.thresholds["cascade"]["value"]
    assert [(a["start"], a["judge"]) for a in section["actions"]] == [
        (a.start, a.judge) for a in VALUE_ACTIONS
    ]
    assert section["probe"]["name"] == "probe"
    assert section["prices"]["input_usd_per_mtok"] == [1.0, 3.0, 5.0, 0.25]
    assert section["operating_points"]["ref_parity"]["target"]["reference_tier"] == {
        "index": 1,
        "name": "mid",
    }
    with np.load(bundle / VALUE_CALIBRATION_FILE) as stored:
        assert stored["allowed"].shape == (150, len(VALUE_ACTIONS))
        assert stored["tokens"].shape == (150, len(VALUE_ACTIONS), 4, 4)
        # The probe's payer bills only in the agreement actions.
        assert stored["tokens"][:, :6, 3].sum() == 0
        assert stored["tokens"][:, 6:, 3, 0].min() > 0
    model = RouterModel.load(bundle, 3, settings.tiers)
    assert model.value_model is not None
    assert model.value_model.actions == VALUE_ACTIONS
    assert "ref_parity" in model.operating_points
