"""One ONNX graph, one tokenization and one n-gram count for several linear TF-IDF heads.

`to_onnx` exports each fitted pipeline (TF-IDF, then a logistic or linear layer) as a graph
of its own. A Cascade routed by the value policy needs two of them on the same text: the
classifier's per-tier probabilities and the value model's per-action estimates. Run apart,
each tokenizes the text and counts its n-grams, then does dense work over its whole
vocabulary (sublinear tf, idf, L2 norm, a dense linear layer): 10,000 features for one,
40,000 for the other.

`merge_heads` reads the exported graphs back (their vocabulary, idf, weights and output
transform, written by our exporter) and writes one graph that:

1. tokenizes once and forms the text's words and bigrams (StringConcat);
2. looks each up in the union of the vocabularies (LabelEncoder: its column, or -1) and
   counts the columns present (Unique): a prompt has tens, not 40,000, and no step of the
   graph is as wide as the vocabulary (a TfIdfVectorizer would write a dense row of it);
3. per head: 1 + log(tf) times that head's idf, L2-normalised over that head's own
   features (a head's idf is zero for the union's other n-grams, which drops them from its
   norm and its dot product), then its weight rows for those n-grams only (Gather, MatMul).

With one head it is the bundle's model.onnx (the classifier alone); with the classifier and
the value model, value.onnx.

A head may carry the familiarity signal (`Familiarity`, fitted by `offline.training.
familiarity`): the graph then also outputs `familiarity`, in [0, 1], from the same pass over
that head's features: the TF-IDF mass of the prompt before normalisation (its L2 norm) and
the cosine of its normalised row to the nearest of a few training centroids, each divided
by its median over the training rows and capped at 1, multiplied. Text like the training
prompts scores near 1; text the head knows little of (few or common n-grams, none of the
training prompts' shape) scores near 0.

This is scikit-learn's arithmetic (sublinear tf, idf, L2 norm, linear layer) on the
non-zero entries only, so every head's output equals its own graph's; `check_merged`
proves it on the parity texts, and the heads' own parity checks tie those to scikit-learn.
The graph reads one text per run (serving's shape).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from tierroute.errors import ModelLoadError
from tierroute.model.classifier import INPUT_NAME
from tierroute.model.value import FAMILIARITY_OUTPUT
from tierroute.routing import classifier_text

logger = logging.getLogger(__name__)

GRAPH_NAME = "tierroute_shared_features"
# 20 for StringConcat; ai.onnx.ml for LabelEncoder; com.microsoft for the Tokenizer.
OPSETS = {"": 20, "ai.onnx.ml": 3, "com.microsoft": 1}
MERGE_TOLERANCE = 1e-5
# Outputs compared relative to their size (the value heads' token estimates): float32 sums
# over the present n-grams, in another order than the dense graph's, differ by about 1e-4
# of a token mean where its intercept and terms cancel (1.1e-4 measured on dev). A relative
# 1e-3 moves a priced cost by 0.1 %; plan changes are counted by the parity check after.
MERGE_RELATIVE_TOLERANCE = 1e-3
# Below any real L2 norm of a non-empty TF-IDF row; an empty row stays all zeros.
_TINY_NORM = 1e-12


@dataclass(frozen=True)
class Familiarity:
    """The familiarity signal's parameters over one head's features (its column order)."""

    centroids: npt.NDArray[np.float32]  # (n_features, n_centroids), unit columns
    mass_ref: float  # the median TF-IDF mass (L2 norm before normalisation) of training rows
    cos_ref: float  # the median cosine of a training row to its nearest centroid


@dataclass(frozen=True)
class LinearHead:
    """One exported TF-IDF + linear graph, read back: its n-grams and its arithmetic."""

    tokenizer: dict[str, Any]
    ngrams: tuple[tuple[str, ...], ...]  # column j of the head's TF-IDF row
    idf: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]  # (n_outputs, n_features)
    intercepts: npt.NDArray[np.float32]
    softmax: bool  # LinearClassifier SOFTMAX (probabilities), else raw (LinearRegressor)
    familiarity: Familiarity | None = None


def read_head(model_bytes: bytes) -> LinearHead:
    """The head of a graph `to_onnx` wrote, or of a one-head graph `merge_heads` wrote (the
    bundle's model.onnx); ModelLoadError when it has another shape."""
    model = onnx.load_from_string(model_bytes)
    nodes = {n.op_type: n for n in model.graph.node}
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    if model.graph.name == GRAPH_NAME:
        return _merged_head(model.graph, nodes, init)
    try:
        tokenizer = _attributes(nodes["Tokenizer"])
        counter = _attributes(nodes["TfIdfVectorizer"])
        idf = init[nodes["Mul"].input[1]]
    except KeyError as exc:
        raise ModelLoadError(f"not a TF-IDF graph of tierroute's exporter: no {exc}") from exc
    if "LinearClassifier" in nodes:
        linear = _attributes(nodes["LinearClassifier"])
        if linear.get("post_transform") != b"SOFTMAX":
            raise ModelLoadError("the classifier graph does not end in a softmax")
        n_out = len(linear["classlabels_ints"])
        softmax = True
    elif "LinearRegressor" in nodes:
        linear = _attributes(nodes["LinearRegressor"])
        n_out = int(linear["targets"])
        softmax = False
    else:
        raise ModelLoadError("not a TF-IDF graph of tierroute's exporter: no linear layer")
    if counter.get("mode") != b"TF" or counter.get("max_skip_count", 0) != 0:
        raise ModelLoadError("the graph's n-gram counter is not a plain TF counter")
    weights = np.asarray(linear["coefficients"], dtype=np.float32).reshape(n_out, -1)
    return LinearHead(
        tokenizer=tokenizer,
        ngrams=_ngrams(counter),
        idf=np.asarray(idf, dtype=np.float32),
        weights=weights,
        intercepts=np.asarray(linear["intercepts"], dtype=np.float32),
        softmax=softmax,
    )


def _merged_head(
    graph: Any, nodes: Mapping[str, Any], init: Mapping[str, npt.NDArray[Any]]
) -> LinearHead:
    """The one head of a graph `merge_heads` wrote, read back from its initializers."""
    names = [o.name for o in graph.output if o.name != FAMILIARITY_OUTPUT]
    if len(names) != 1:
        raise ModelLoadError(f"a shared feature graph with {len(names)} heads is not one head")
    name = names[0]
    p = f"{name}_"
    try:
        keys = _attributes(nodes["LabelEncoder"])["keys_strings"]
        tokenizer = _attributes(nodes["Tokenizer"])
        idf, weights = init[p + "idf"], init[p + "weights"]
        intercepts = init[p + "intercepts"]
        familiarity = None
        if len(graph.output) > 1:
            familiarity = Familiarity(
                centroids=np.asarray(init[p + "centroids"], dtype=np.float32),
                mass_ref=float(init[p + "mass_ref"]),
                cos_ref=float(init[p + "cos_ref"]),
            )
    except KeyError as exc:
        raise ModelLoadError(f"not a shared feature graph of merge_heads: no {exc}") from exc
    return LinearHead(
        tokenizer=tokenizer,
        ngrams=tuple(tuple(k.decode("utf-8").split(" ")) for k in keys),
        idf=np.asarray(idf, dtype=np.float32),
        weights=np.asarray(weights, dtype=np.float32).T,
        intercepts=np.asarray(intercepts, dtype=np.float32).reshape(-1),
        softmax=any(n.op_type == "Softmax" and n.output[0] == name for n in graph.node),
        familiarity=familiarity,
    )


def _attributes(node: Any) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ngrams(counter: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    """Each output column's n-gram, from the counter's pool (grouped by length)."""
    pool = [s.decode("utf-8") for s in counter["pool_strings"]]
    starts = [*counter["ngram_counts"], len(pool)]
    indexes = counter["ngram_indexes"]
    columns: dict[int, tuple[str, ...]] = {}
    k = 0
    for n in range(int(counter["min_gram_length"]), int(counter["max_gram_length"]) + 1):
        group = pool[starts[n - 1] : starts[n]]
        for i in range(0, len(group), n):
            columns[int(indexes[k])] = tuple(group[i : i + n])
            k += 1
    return tuple(columns[j] for j in range(len(columns)))


def merge_heads(
    heads: Mapping[str, bytes], *, doc: str, familiarity: Mapping[str, Familiarity] | None = None
) -> bytes:
    """One graph whose output `name` equals the graph `heads[name]`'s only output.

    `familiarity` gives a head the familiarity signal; a head read from a graph that has
    one keeps it. At most one head carries it (output `familiarity`)."""
    read = {name: read_head(data) for name, data in heads.items()}
    for name, fam in (familiarity or {}).items():
        read[name] = dataclasses.replace(read[name], familiarity=fam)
    if sum(h.familiarity is not None for h in read.values()) > 1:
        raise ModelLoadError("more than one head carries the familiarity signal")
    tokenizers = {repr(sorted(h.tokenizer.items())) for h in read.values()}
    if len(tokenizers) != 1:
        raise ModelLoadError("the heads tokenize differently; they cannot share a feature pass")
    tokenizer = next(iter(read.values())).tokenizer
    union = sorted({g for h in read.values() for g in h.ngrams}, key=lambda g: (len(g), g))
    column = {g: j for j, g in enumerate(union)}
    max_n = max(len(g) for g in union)
    if max_n > 2:
        raise ModelLoadError(
            f"the heads use {max_n}-grams; the shared graph reads words and bigrams"
        )
    # A bigram's key is its two words with a space: tokens never hold one (the tokenizer's
    # pattern has none, and the exporter refuses a bigram without both its words).
    keys = [" ".join(g) for g in union]

    nodes = [
        helper.make_node("Tokenizer", [INPUT_NAME], ["tokens"], domain="com.microsoft",
                         name="Tokenize", **tokenizer),
        helper.make_node("Reshape", ["tokens", "minus_one"], ["words"], name="Words"),
        # Each word and the next: the text's bigrams, as "left right".
        helper.make_node("Slice", ["words", "zero_axis", "minus_one"], ["lefts"], name="Lefts"),
        helper.make_node("Slice", ["words", "one_index", "to_end"], ["rights"], name="Rights"),
        helper.make_node("StringConcat", ["lefts", "space"], ["lefts_sp"], name="LeftsSp"),
        helper.make_node("StringConcat", ["lefts_sp", "rights"], ["pairs"], name="Pairs"),
        helper.make_node("Concat", ["words", "pairs"], ["grams"], axis=0, name="Grams"),
        # Each n-gram's column, -1 for one outside the vocabulary; those are dropped.
        helper.make_node(
            "LabelEncoder", ["grams"], ["ids"], domain="ai.onnx.ml", name="Columns",
            keys_strings=keys, values_int64s=list(range(len(keys))), default_int64=-1,
        ),
        helper.make_node("Greater", ["ids", "minus_one"], ["known"], name="Known"),
        helper.make_node("Compress", ["ids", "known"], ["known_ids"], axis=0, name="KnownIds"),
        # The present columns in column order, with their counts (the term frequencies).
        helper.make_node(
            "Unique", ["known_ids"], ["present", "first_at", "inverse", "counts"], sorted=1,
            name="Present",
        ),
        helper.make_node("Cast", ["counts"], ["tf"], to=TensorProto.FLOAT, name="Tf"),
        # scikit-learn's sublinear tf on non-zero counts: 1 + log(tf).
        helper.make_node("Log", ["tf"], ["tf_log"], name="TfLog"),
        helper.make_node("Add", ["tf_log", "one"], ["tf_sub"], name="TfSub"),
    ]  # fmt: skip
    initializers = [
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one_index"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "to_end"),
        numpy_helper.from_array(np.array([" "], dtype=object), "space"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(_TINY_NORM, dtype=np.float32), "tiny"),
    ]
    outputs = []
    for name, head in read.items():
        idf_u = np.zeros(len(union), dtype=np.float32)
        weights_u = np.zeros((len(union), head.weights.shape[0]), dtype=np.float32)
        for j, gram in enumerate(head.ngrams):
            idf_u[column[gram]] = head.idf[j]
            weights_u[column[gram]] = head.weights[:, j]
        p = f"{name}_"
        initializers += [
            numpy_helper.from_array(idf_u, p + "idf"),
            numpy_helper.from_array(weights_u, p + "weights"),
            numpy_helper.from_array(head.intercepts.reshape(1, -1), p + "intercepts"),
        ]
        nodes += [
            helper.make_node("Gather", [p + "idf", "present"], [p + "idf_present"]),
            helper.make_node("Mul", ["tf_sub", p + "idf_present"], [p + "x"]),
            helper.make_node("ReduceSumSquare", [p + "x"], [p + "ss"], keepdims=1),
            helper.make_node("Sqrt", [p + "ss"], [p + "norm"]),
            helper.make_node("Max", [p + "norm", "tiny"], [p + "norm_safe"]),
            helper.make_node("Div", [p + "x", p + "norm_safe"], [p + "xn"]),
            helper.make_node("Unsqueeze", [p + "xn", "zero_axis"], [p + "row"]),
            helper.make_node("Gather", [p + "weights", "present"], [p + "w_present"], axis=0),
            helper.make_node("MatMul", [p + "row", p + "w_present"], [p + "z"]),
        ]
        last = name if not head.softmax else p + "logits"
        nodes.append(helper.make_node("Add", [p + "z", p + "intercepts"], [last]))
        if head.softmax:
            nodes.append(helper.make_node("Softmax", [last], [name], axis=1))
        outputs.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, head.weights.shape[0]])
        )
        if head.familiarity is not None:
            _familiarity_nodes(head, column, p, nodes=nodes, initializers=initializers)
            outputs.append(
                helper.make_tensor_value_info(FAMILIARITY_OUTPUT, TensorProto.FLOAT, [1, 1])
            )
    initializers.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "zero_axis"))
    for index, node in enumerate(nodes):
        node.name = node.name or f"n{index}_{node.op_type}"
    graph = helper.make_graph(
        nodes,
        GRAPH_NAME,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.STRING, [1, 1])],
        outputs,
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in OPSETS.items()],
        producer_name="tierroute",
        producer_version="1",
        domain="tierroute",
        model_version=1,
        doc_string=doc,
    )
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def _familiarity_nodes(
    head: LinearHead,
    column: Mapping[tuple[str, ...], int],
    p: str,
    *,
    nodes: list[Any],
    initializers: list[Any],
) -> None:
    """The familiarity output from head `p`'s TF-IDF row: its mass before normalisation
    (`p`norm) and its normalised row's (`p`row) cosine to the nearest centroid, each over
    its training median and capped at 1, multiplied."""
    fam = head.familiarity
    assert fam is not None  # the caller checked
    centroids_u = np.zeros((len(column), fam.centroids.shape[1]), dtype=np.float32)
    for j, gram in enumerate(head.ngrams):
        centroids_u[column[gram]] = fam.centroids[j]
    initializers += [
        numpy_helper.from_array(centroids_u, p + "centroids"),
        numpy_helper.from_array(np.array(fam.mass_ref, dtype=np.float32), p + "mass_ref"),
        numpy_helper.from_array(np.array(fam.cos_ref, dtype=np.float32), p + "cos_ref"),
    ]
    nodes += [
        helper.make_node("Gather", [p + "centroids", "present"], [p + "c_present"], axis=0),
        # An empty row (no known n-gram) is all zeros: cosine 0, mass 0.
        helper.make_node("MatMul", [p + "row", p + "c_present"], [p + "cosines"]),
        helper.make_node("ReduceMax", [p + "cosines", "one_index"], [p + "cos"], keepdims=1),
        helper.make_node("Div", [p + "cos", p + "cos_ref"], [p + "cos_over"]),
        helper.make_node("Min", [p + "cos_over", "one"], [p + "cos_part"]),
        helper.make_node("Div", [p + "norm", p + "mass_ref"], [p + "mass_over"]),
        helper.make_node("Min", [p + "mass_over", "one"], [p + "mass_part"]),
        helper.make_node("Mul", [p + "cos_part", p + "mass_part"], [FAMILIARITY_OUTPUT]),
    ]


@dataclass(frozen=True)
class MergeParity:
    """How far the merged graph's outputs are from each head's own graph."""

    rows: int
    max_abs_diff: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """For the thresholds file."""
        return {
            "rows": self.rows,
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in self.max_abs_diff.items()},
            "tolerance": MERGE_TOLERANCE,
            "relative_tolerance": MERGE_RELATIVE_TOLERANCE,
        }


def check_merged(
    merged: bytes,
    heads: Mapping[str, bytes],
    texts: Sequence[str],
    *,
    prefix_chars: int,
    relative: Sequence[str] = (),
) -> MergeParity:
    """Run the merged graph and every head's own graph on `texts` (cut to `prefix_chars`);
    ModelLoadError when an output differs by MERGE_TOLERANCE or more. Outputs named in
    `relative` (log costs, whose scale is large) are compared relative to their size."""
    from tierroute.model import create_session

    shared = create_session(merged)
    alone = {name: create_session(data) for name, data in heads.items()}
    # Heads whose own graph outputs the familiarity signal: the merged graph must equal it.
    familiar = {
        name
        for name, session in alone.items()
        if FAMILIARITY_OUTPUT in {o.name for o in session.get_outputs()}
    }
    worst = dict.fromkeys(heads, 0.0)
    for text in texts:
        feed = {INPUT_NAME: np.array([[classifier_text(text, prefix_chars)]], dtype=object)}
        got = dict(zip(heads, shared.run(list(heads), feed), strict=True))
        for name, session in alone.items():
            if name in familiar:
                expected, fam = session.run([name, FAMILIARITY_OUTPUT], feed)
                (mine,) = shared.run([FAMILIARITY_OUTPUT], feed)
                worst[FAMILIARITY_OUTPUT] = max(
                    worst.get(FAMILIARITY_OUTPUT, 0.0), float(np.abs(mine - fam).max())
                )
                diff = np.abs(got[name] - expected)
                worst[name] = max(worst[name], float(diff.max()))
                continue
            (expected,) = session.run([name], feed)
            diff = np.abs(got[name] - expected)
            if name in relative:
                diff = diff / np.maximum(np.abs(expected), 1.0)
            worst[name] = max(worst[name], float(diff.max()))
    parity = MergeParity(len(texts), worst)
    logger.info("shared feature graph parity: %s texts, max diff %s", len(texts), worst)
    bad = {
        k: v
        for k, v in worst.items()
        if not v < (MERGE_RELATIVE_TOLERANCE if k in relative else MERGE_TOLERANCE)
    }
    if bad:
        raise ModelLoadError(
            f"the shared feature graph disagrees with the heads' own graphs: {bad} "
            f"(tolerance {MERGE_TOLERANCE:g}, relative {MERGE_RELATIVE_TOLERANCE:g})"
        )
    return parity


__all__ = [
    "Familiarity",
    "LinearHead",
    "MergeParity",
    "check_merged",
    "merge_heads",
    "read_head",
]
