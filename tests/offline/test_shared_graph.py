"""One feature pass for the classifier and the value heads (offline.training.shared_graph):
the merged graph answers like scikit-learn for both, in one onnxruntime run."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.offline.test_value_model import LADDER, _training_table
from tierroute.errors import ModelLoadError
from tierroute.model import RouterModel, ValueModel, create_session
from tierroute.offline.training.export import adversarial_texts, to_onnx
from tierroute.offline.training.model import fit_pipeline
from tierroute.offline.training.shared_graph import check_merged, merge_heads, read_head
from tierroute.offline.training.value_fit import (
    export,
    fit_value_pipeline,
    predict,
    prepare_value_model,
)
from tierroute.routing import RiskThresholds, classifier_text
from tierroute.routing.plan import ACTIONS

PREFIX = 4096


@pytest.fixture(scope="module")
def heads() -> tuple[object, object, list[str]]:
    """A fitted classifier and value pipeline on the same texts (vocabularies differ)."""
    texts, quality, tokens = _training_table()
    labels = np.array([0 if i % 3 else 2 if i % 2 else 1 for i in range(len(texts))])
    classifier = fit_pipeline(texts, labels, 3)
    value = fit_value_pipeline(texts, quality, tokens, max_features=60)
    return classifier, value, texts


def _cases(texts: list[str]) -> list[str]:
    return [*texts[:30], "a text with no known word", *adversarial_texts(texts[:3])]


def test_one_run_matches_scikit_learn_for_both_heads(
    heads: tuple[object, object, list[str]],
) -> None:
    """The merged graph's probabilities and value outputs equal scikit-learn's on data and
    hostile texts (empty ones included)."""
    classifier, value, texts = heads
    merged = merge_heads(
        {"probabilities": to_onnx(classifier), "variable": export(value)},
        doc="test",  # type: ignore[arg-type]
    )
    session = create_session(merged)
    cases = _cases(texts)
    featurised = [classifier_text(t, PREFIX) for t in cases]
    got = [session.run(None, {"text": np.array([[f]], dtype=object)}) for f in featurised]
    proba = np.array(
        [dict(zip(["probabilities", "variable"], g, strict=True))["probabilities"][0] for g in got]
    )
    raw = np.array(
        [dict(zip(["probabilities", "variable"], g, strict=True))["variable"][0] for g in got]
    )
    assert np.abs(proba - classifier.predict_proba(featurised)).max() < 1e-5  # type: ignore[attr-defined]
    expected = value.predict(featurised)  # type: ignore[attr-defined]
    # Token estimates are compared relative to their size, as check_merged does.
    assert (np.abs(raw - expected) / np.maximum(np.abs(expected), 1.0)).max() < 1e-3


def test_the_served_value_model_shares_the_pass(heads: tuple[object, object, list[str]]) -> None:
    """A value model exported with the classifier answers scores and plan in one call, equal
    to the classifier's own predict_proba and the value model's own plan."""
    classifier, value, texts = heads
    model_bytes = to_onnx(classifier)  # type: ignore[arg-type]
    data, section = prepare_value_model(
        value,  # type: ignore[arg-type]
        ladder=LADDER,
        points={"parity": {"price_per_correct_usd": 1e-3}},
        default_point="parity",
        prefix_chars=PREFIX,
        parity_texts=texts[:20],
        classifier_model=model_bytes,
    )
    assert section["shared_features"]["parity_with_own_graphs"]["rows"] > 20
    served = ValueModel(
        create_session(data),
        actions=ACTIONS,
        ladder=LADDER,
        points={"parity": 1e-3, "cheap": 1e-5},
        default_point="parity",
        prefix_chars=PREFIX,
    )
    router = RouterModel(
        create_session(model_bytes),
        version="t",
        labels=("a", "b", "c"),
        thresholds=RiskThresholds((0.5, 0.5)),
        prefix_chars=PREFIX,
        metadata={},
        value_model=served,
    )
    assert served.shared
    for text in texts[:10]:
        scores, plan = router.score_cascade(text)
        assert np.allclose(scores, router.predict_proba(text), atol=1e-6)
        assert plan == served.plan(text)
        # An operating point picked by the request reaches the one-run plan too.
        assert router.score_cascade(text, "cheap")[1] == served.plan(text, "cheap")
    p, _ = predict(value, [classifier_text(texts[0], PREFIX)], 3)  # type: ignore[arg-type]
    assert np.allclose(served.estimate(texts[0])[0], p[0], atol=1e-4)


def test_a_changed_head_fails_the_merge_check(heads: tuple[object, object, list[str]]) -> None:
    """A merged graph checked against a head it was not built from is refused."""
    classifier, value, texts = heads
    own = {"probabilities": to_onnx(classifier), "variable": export(value)}  # type: ignore[arg-type]
    merged = merge_heads(own, doc="test")
    texts_b, quality, tokens = _training_table(90)
    other = export(fit_value_pipeline(texts_b, 1 - quality, tokens * 3, max_features=60))
    with pytest.raises(ModelLoadError, match="disagrees"):
        check_merged(merged, {**own, "variable": other}, texts[:20], prefix_chars=PREFIX)


def test_a_graph_without_tf_idf_is_not_read() -> None:
    """Reading a head out of a graph that is not one of our TF-IDF exports fails clearly."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("text", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ModelLoadError, match="not a TF-IDF graph"):
        read_head(helper.make_model(graph).SerializeToString())


def test_the_bundles_one_head_graph_reads_back_as_its_head(
    heads: tuple[object, object, list[str]],
) -> None:
    """model.onnx is the classifier as a one-head shared graph: read back, it is the dense
    export's head, so merging the value head with either gives the same graph."""
    classifier, value, _ = heads
    dense = to_onnx(classifier)  # type: ignore[arg-type]
    served = merge_heads({"probabilities": dense}, doc="test")
    a, b = read_head(dense), read_head(served)
    column = {gram: j for j, gram in enumerate(a.ngrams)}
    order = [column[gram] for gram in b.ngrams]
    assert sorted(order) == list(range(len(a.ngrams)))
    assert np.array_equal(a.idf[order], b.idf)
    assert np.array_equal(a.weights[:, order], b.weights)
    assert np.array_equal(a.intercepts, b.intercepts)
    assert (a.softmax, a.tokenizer) == (b.softmax, b.tokenizer)
    value_graph = export(value)  # type: ignore[arg-type]
    assert merge_heads({"probabilities": served, "variable": value_graph}, doc="t") == (
        merge_heads({"probabilities": dense, "variable": value_graph}, doc="t")
    )


def test_a_two_head_graph_is_not_one_head(heads: tuple[object, object, list[str]]) -> None:
    classifier, value, _ = heads
    both = merge_heads(
        {"probabilities": to_onnx(classifier), "variable": export(value)},  # type: ignore[arg-type]
        doc="test",
    )
    with pytest.raises(ModelLoadError, match="2 heads is not one head"):
        read_head(both)
