"""The familiarity signal: fitted with training, output by the served graph (model.onnx and
the merged value graph) as scikit-learn's arithmetic computes it, its cross-validated
threshold in thresholds.json, and read by the serving side."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import make_records, write_dataset
from tierroute.errors import ModelLoadError
from tierroute.model import RouterModel, create_session
from tierroute.model.bundle import MODEL_FILE, THRESHOLDS_FILE
from tierroute.offline.training import familiarity
from tierroute.offline.training.export import adversarial_texts, to_onnx
from tierroute.offline.training.shared_graph import check_merged, merge_heads, read_head
from tierroute.offline.training.trainer import TrainOptions, TrainResult, train_bundle
from tierroute.offline.training.value_fit import export, fit_value_pipeline
from tierroute.routing import classifier_text

PREFIX = 4096


@dataclass(frozen=True)
class Trained:
    """A small trained bundle and the prompts it was trained on."""

    result: TrainResult
    prompts: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train on 300 synthetic records (2 folds), as `make model` trains on dev."""
    root = tmp_path_factory.mktemp("familiarity")
    records = make_records(300)
    data = write_dataset(root / "small.jsonl.gz", records)
    options = TrainOptions(folds=2, compare_none_labels=False, progress=False)
    result = train_bundle(data, root / "bundle", options)
    return Trained(result, [str(r["prompt"]) for r in records])


def served(trained: Trained) -> RouterModel:
    return RouterModel.load(trained.result.out_dir, 3)


def test_the_graph_computes_the_signal_as_training_does(trained: Trained) -> None:
    """model.onnx's familiarity equals the training code's on prompts and hostile texts."""
    tfidf = trained.result.pipeline.named_steps["tfidf"]
    graph = (trained.result.out_dir / MODEL_FILE).read_bytes()
    head = read_head(graph)
    assert head.familiarity is not None
    # Read back, the centroids follow the graph's columns; the training code's, scikit-learn's.
    order = [tfidf.vocabulary_[" ".join(gram)] for gram in head.ngrams]
    centroids = np.zeros_like(head.familiarity.centroids)
    centroids[order] = head.familiarity.centroids
    signal = dataclasses.replace(head.familiarity, centroids=centroids)
    texts = [*trained.prompts[:40], *adversarial_texts(trained.prompts[:3])]
    worst = familiarity.check_parity(graph, tfidf, signal, texts, prefix_chars=PREFIX)
    assert worst < familiarity.PARITY_TOLERANCE


def test_training_prompts_are_familiar_and_strange_text_is_not(trained: Trained) -> None:
    """A training prompt scores above the threshold; unknown words, and no words, score 0."""
    model = served(trained)
    threshold = model.familiarity_threshold
    assert threshold is not None
    assert model.score(trained.prompts[0]).familiarity > threshold  # type: ignore[operator]
    assert model.score("zzqx vvwy kkjj").familiarity == 0.0
    assert model.score("").familiarity == 0.0


def test_the_threshold_flags_the_held_out_share_it_states(trained: Trained) -> None:
    """thresholds.json's familiarity threshold flags about flag_rate of out-of-fold rows:
    the same folds, scored again, put held_out_flagged of them below it."""
    section = json.loads((trained.result.out_dir / THRESHOLDS_FILE).read_text())["familiarity"]
    assert section["flag_rate"] == familiarity.FLAG_RATE
    assert section["held_out_flagged"] <= familiarity.FLAG_RATE
    assert served(trained).familiarity_threshold == section["threshold"]
    assert 0.0 < section["threshold"] < section["held_out_quantiles"]["0.5"]


def test_the_merged_value_graph_carries_the_classifiers_signal(trained: Trained) -> None:
    """Merging model.onnx with a value head keeps the familiarity output, equal to
    model.onnx's (check_merged compares it) and read back as one head."""
    classifier = (trained.result.out_dir / MODEL_FILE).read_bytes()
    quality = np.array([[1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 0, 1]] * 150, dtype=float)
    tokens = np.ones((len(trained.prompts), 6, 3, 2))
    value = fit_value_pipeline(trained.prompts, quality, tokens, max_features=60)
    heads = {"probabilities": classifier, "variable": export(value)}
    merged = merge_heads(heads, doc="test")
    texts = [classifier_text(t, PREFIX) for t in trained.prompts[:20]]
    parity = check_merged(merged, heads, texts, prefix_chars=PREFIX, relative=("variable",))
    assert parity.max_abs_diff["familiarity"] < 1e-5
    names = [o.name for o in create_session(merged).get_outputs()]
    assert sorted(names) == ["familiarity", "probabilities", "variable"]


def test_a_threshold_outside_zero_to_one_fails_loading(trained: Trained, tmp_path: Path) -> None:
    """familiarity.threshold 1.5 is refused with ModelLoadError naming the file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(trained.result.out_dir, bundle)
    path = bundle / THRESHOLDS_FILE
    document = json.loads(path.read_text())
    document["familiarity"]["threshold"] = 1.5
    path.write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match=r"familiarity\.threshold"):
        RouterModel.load(bundle, 3)


def test_a_bundle_without_the_signal_scores_without_it(trained: Trained) -> None:
    """A classifier graph built without the signal (a bundle from before it): scores come
    with no familiarity, and a threshold is ignored."""
    bare = merge_heads({"probabilities": to_onnx(trained.result.pipeline)}, doc="test")
    assert [o.name for o in create_session(bare).get_outputs()] == ["probabilities"]
    model = RouterModel(
        create_session(bare),
        version="v",
        labels=("cheap", "mid", "expensive"),
        thresholds=served(trained).thresholds,
        prefix_chars=PREFIX,
        metadata={},
        familiarity_threshold=0.3,
    )
    scored = model.score("What is the capital of France?")
    assert (scored.familiarity, model.familiarity_threshold) == (None, None)
    assert scored.probs == pytest.approx(
        served(trained).predict_proba("What is the capital of France?"), abs=1e-6
    )
