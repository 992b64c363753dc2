"""Export the fitted pipeline to ONNX so that onnxruntime reproduces scikit-learn, and prove it.

skl2onnx's default export of this pipeline differs from scikit-learn in three ways
(REFERENCE.md section 3), each fixed here:
1. sublinear tf: skl2onnx computes log(1 + tf) where scikit-learn computes 1 + log(tf) on
   non-zero counts; the graph is rewritten to log(max(tf, 1)) + min(tf, 1), which equals
   scikit-learn's value on every integer count, zero included, without ever taking log(0).
2. tokens: the default pattern is ASCII and keeps one-character tokens; the RE2 pattern
   below matches Python's `(?u)\\b\\w\\w+\\b` token for token.
3. lower-casing: done in Python by `classifier_text`, so the vectorizer has lowercase=False
   and the graph has no locale-dependent StringNormalizer.
The serialised model is byte-for-byte deterministic: every name and field that could carry
an id, a time or a path is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import StringTensorType
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from tqdm import tqdm

from tierroute.errors import ModelLoadError
from tierroute.model import RouterModel, create_session
from tierroute.model.classifier import INPUT_NAME, PROBA_OUTPUT
from tierroute.routing import RiskThresholds, classifier_text

logger = logging.getLogger(__name__)

ONNX_WORD_REGEX = r"[\p{L}\p{N}_]{2,}"
# Pinned so that a newer skl2onnx default cannot silently change the graph.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
GRAPH_NAME = "tierroute_router"
PARITY_TOLERANCE = 1e-5


def to_onnx(
    pipeline: Pipeline,
    *,
    output: str = PROBA_OUTPUT,
    doc: str = "tierroute router: tf-idf + logistic regression, per-tier probabilities",
) -> bytes:
    """The fitted pipeline as a serialised ONNX model, identical bytes for identical input.

    The pipeline is TF-IDF followed by a logistic regression (the router classifier) or a
    linear regression (the Cascade's value model); `output` is the graph output to check.
    """
    _check_bigram_words(pipeline.named_steps["tfidf"].vocabulary_)
    model = convert_sklearn(
        pipeline,
        name=GRAPH_NAME,
        initial_types=[(INPUT_NAME, StringTensorType([None, 1]))],
        options={
            TfidfVectorizer: {"tokenexp": ONNX_WORD_REGEX},
            LogisticRegression: {"zipmap": False},
        },
        target_opset=TARGET_OPSET,
    )
    _fix_sublinear_tf(model.graph)
    model.graph.name = GRAPH_NAME
    model.graph.doc_string = ""
    model.doc_string = doc
    model.producer_name = "tierroute"
    model.producer_version = "1"
    model.domain = "tierroute"
    model.model_version = 1
    del model.metadata_props[:]
    # skl2onnx collects opset imports in a set, whose order follows string hashing and so
    # changes from one process to the next.
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    onnx.checker.check_model(model)
    outputs = [o.name for o in model.graph.output]
    if output not in outputs:
        raise ModelLoadError(f"exported graph lacks output {output!r}: {outputs}")
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def _check_bigram_words(vocabulary: dict[str, int]) -> None:
    """Refuse a vocabulary holding a bigram without both its words.

    skl2onnx would export such a bigram as one token containing a space, which the tokenizer
    never produces: the feature would silently never fire.
    """
    orphans = sorted(
        term
        for term in vocabulary
        if " " in term and any(word not in vocabulary for word in term.split(" "))
    )
    if orphans:
        raise ModelLoadError(
            f"{len(orphans)} bigrams lack one of their words in the vocabulary, e.g. "
            f"{orphans[:3]}; select the vocabulary with tierroute.offline.training.model"
        )


def _fix_sublinear_tf(graph: Any) -> None:
    """Replace skl2onnx's log(tf + 1) with scikit-learn's 1 + log(tf) for non-zero tf."""
    ones = {i.name for i in graph.initializer if i.dims and np.all(_values(i) == 1.0)}
    nodes = list(graph.node)
    adds = [n for n in nodes if n.op_type == "Add" and any(i in ones for i in n.input)]
    logs = [n for n in nodes if n.op_type == "Log" and adds and n.input[0] == adds[0].output[0]]
    if len(adds) != 1 or len(logs) != 1:
        # A converter change would otherwise ship a silently wrong model.
        raise ModelLoadError(
            f"sublinear-tf rewrite expected one Add(ones) -> Log pair, found "
            f"{len(adds)} Add and {len(logs)} Log nodes; the skl2onnx graph has changed"
        )
    add, log = adds[0], logs[0]
    (ones_name,) = (i for i in add.input if i in ones)
    (counts,) = (i for i in add.input if i != ones_name)
    rewritten = []
    for node in nodes:
        if node is add:
            rewritten.append(
                helper.make_node("Max", [counts, ones_name], ["tf_at_least_one"], name="TfMax")
            )
        elif node is log:
            rewritten += [
                helper.make_node("Log", ["tf_at_least_one"], ["tf_log"], name="TfLog"),
                helper.make_node("Min", [counts, ones_name], ["tf_nonzero"], name="TfNonZero"),
                helper.make_node("Add", ["tf_log", "tf_nonzero"], [log.output[0]], name="TfSub"),
            ]
        else:
            rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)


def _values(initializer: Any) -> Any:
    return onnx.numpy_helper.to_array(initializer)


def adversarial_texts(samples: Sequence[str] = ()) -> list[str]:
    """Inputs that have broken text exports before: empty, symbols, scripts, code, size."""
    base = [
        "",
        " ",
        "\n\t  \r\n",
        "!!! ??",
        "... --- ;;; ((( )))",
        "a b c d e f g",
        "🙂🚀🔥",
        "What is the 🚀 derivative 🔥 of x^2? 🙂",
        "日本語の質問です。中文问题？한국어 질문",
        "Solve 方程 x² + 2x = 0 für alle reellen Zahlen",
        "```python\ndef f(x):\n    return [i * 2 for i in range(x)]\n```\nWhat does f(3) return?",
        "~~~\nSELECT * FROM t WHERE a_b = 'c';\n~~~",
        "İSTANBUL ıi DİYARBAKIR",
        "ΟΔΥΣΣΕΥΣ ΣΟΦΟΣ σοφος",
        "STRASSE straße ǅ ﬁnance",
        "e\u0301te\u0301 cafe\u0301 à a\u0300",
        "١٢٣ ٤٥ ²³ ½ 42 ⅷ",
        "__init__ snake_case_name _ __",
        "zero\u200bwidth joiner\u200dtest no\u00a0break",
        "ما هو الجواب الصحيح",
        "\x00\x01 control \x7f characters",
        "the the the the answer answer answer question question",
        "question about the answer " * 4000,
        "x" * 100_000,
    ]
    derived: list[str] = []
    for text in samples:
        derived += [text.upper(), f"🙂 {text} 日本語", text.replace(" ", " \t\n ")]
    return base + derived


@dataclass(frozen=True)
class ParityReport:
    """How far onnxruntime's probabilities are from scikit-learn's."""

    rows: int
    adversarial: int
    class_changes: int
    max_abs_diff: float
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        """The report as recorded in metadata.json."""
        return {
            "rows": self.rows,
            "adversarial": self.adversarial,
            "class_changes": self.class_changes,
            "max_abs_diff": float(f"{self.max_abs_diff:.3g}"),
            "tolerance": self.tolerance,
        }


def check_parity(
    pipeline: Pipeline,
    model_bytes: bytes,
    texts: Sequence[str],
    *,
    prefix_chars: int,
    adversarial: Sequence[str] = (),
    tolerance: float = PARITY_TOLERANCE,
    progress: bool = True,
) -> ParityReport:
    """Compare the serving path with scikit-learn on raw texts; ModelLoadError on any drift.

    The ONNX side runs through `RouterModel.predict_proba`, the exact serving call. The
    adversarial texts are checked twice: cut to the serving prefix, and whole, so that
    the 100 KB inputs also exercise the graph's tokenizer at full length.
    """
    session = create_session(model_bytes)
    n_classes = len(pipeline.named_steps["logreg"].classes_)
    full_length = max([prefix_chars, *(len(t) + 1 for t in adversarial)])
    cases = [(t, prefix_chars) for t in texts]
    cases += [(t, p) for t in adversarial for p in (prefix_chars, full_length)]
    served = {
        p: RouterModel(
            session,
            version="parity-check",
            labels=tuple(str(i) for i in range(n_classes)),
            thresholds=RiskThresholds((1.0,) * (n_classes - 1)),
            prefix_chars=p,
            metadata={},
        )
        for p in (prefix_chars, full_length)
    }
    expected = pipeline.predict_proba([classifier_text(t, p) for t, p in cases])
    actual = np.array(
        [
            served[p].predict_proba(t)
            for t, p in tqdm(cases, desc="parity", unit="text", disable=not progress)
        ]
    )
    diff = float(np.abs(actual - expected).max()) if cases else 0.0
    changes = int((actual.argmax(axis=1) != expected.argmax(axis=1)).sum()) if cases else 0
    report = ParityReport(len(texts), 2 * len(adversarial), changes, diff, tolerance)
    logger.info(
        "parity: %s rows, %s adversarial, %s class changes, max diff %.3g",
        report.rows,
        report.adversarial,
        report.class_changes,
        report.max_abs_diff,
    )
    if changes or not diff < tolerance:
        raise ModelLoadError(
            f"ONNX export disagrees with scikit-learn: {changes} class changes, largest "
            f"probability difference {diff:.3g} (tolerance {tolerance:g})"
        )
    return report
