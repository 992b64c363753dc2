"""The words a router model knows, read from its ONNX graph: what drift's coverage measures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tierroute.errors import ModelLoadError
from tierroute.model.bundle import MODEL_FILE
from tierroute.routing import classifier_text

# scikit-learn's default token, as the model was trained with (tierroute.offline.training.model).
WORD = re.compile(r"(?u)\b\w\w+\b")


# ONNX protobuf field numbers (onnx.proto3): ModelProto.graph, GraphProto.node,
# NodeProto.op_type / attribute, AttributeProto.name / ints / strings.
_MODEL_GRAPH, _GRAPH_NODE, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 7, 1, 4, 5
_ATTR_NAME, _ATTR_INTS, _ATTR_STRINGS = 1, 8, 9


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one protobuf message, skipping nothing, copying nothing."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield number, value


def _ints(value: int | memoryview) -> list[int]:
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(item)
    return out


def onnx_unigrams(model: bytes) -> frozenset[str]:
    """The single words of an ONNX model's vocabulary, read from its protobuf: its
    TfIdfVectorizer's (skl2onnx's graph), or its LabelEncoder's keys (the shared feature
    graph the bundle ships, whose bigram keys are two words with a space).

    Serving has onnxruntime, not the `onnx` package, and onnxruntime does not expose node
    attributes; the few fields needed are read from the wire format directly.
    """
    try:
        for number, graph in _fields(memoryview(model)):
            if number != _MODEL_GRAPH or isinstance(graph, int):
                continue
            for node_number, node in _fields(graph):
                if node_number != _GRAPH_NODE or isinstance(node, int):
                    continue
                words = _node_unigrams(node)
                if words is not None:
                    return words
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read the model's vocabulary: {exc}") from exc
    raise ModelLoadError(
        "the model has no TfIdfVectorizer or LabelEncoder node to read a vocabulary from"
    )


def _node_unigrams(node: memoryview) -> frozenset[str] | None:
    op_type = ""
    attributes: dict[str, tuple[list[int], list[str]]] = {}
    for number, value in _fields(node):
        if number == _NODE_OP_TYPE and not isinstance(value, int):
            op_type = bytes(value).decode()
        elif number == _NODE_ATTRIBUTE and not isinstance(value, int):
            name, ints, strings = "", [], []
            for attr_number, attr_value in _fields(value):
                if attr_number == _ATTR_NAME and not isinstance(attr_value, int):
                    name = bytes(attr_value).decode()
                elif attr_number == _ATTR_INTS:
                    ints.extend(_ints(attr_value))
                elif attr_number == _ATTR_STRINGS and not isinstance(attr_value, int):
                    strings.append(bytes(attr_value).decode())
            attributes[name] = (ints, strings)
    if op_type == "LabelEncoder":
        return frozenset(k for k in attributes.get("keys_strings", ([], []))[1] if " " not in k)
    if op_type != "TfIdfVectorizer":
        return None
    pool = attributes.get("pool_strings", ([], []))[1]
    starts = attributes.get("ngram_counts", ([], []))[0]
    # ngram_counts[k] is where the (k+1)-grams start in pool_strings; bigrams are stored as
    # their two words, which are always unigrams of the vocabulary too.
    end = starts[1] if len(starts) > 1 else len(pool)
    return frozenset(pool[starts[0] if starts else 0 : end])


@dataclass(frozen=True)
class Vocabulary:
    """The words a router model knows, and the share of a query's words among them."""

    words: frozenset[str]
    prefix_chars: int

    @classmethod
    def from_bundle(cls, bundle: Path, prefix_chars: int) -> Vocabulary:
        """The vocabulary of the bundle's model.onnx; ModelLoadError naming the file."""
        path = bundle / MODEL_FILE
        try:
            words = onnx_unigrams(path.read_bytes())
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read it: {exc}") from exc
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from exc
        if not words:
            raise ModelLoadError(f"{path}: the vocabulary is empty")
        return cls(words, prefix_chars)

    def coverage(self, text: str) -> float | None:
        """Share of the words the classifier reads in `text` that it knows; None for none."""
        tokens = WORD.findall(classifier_text(text, self.prefix_chars))
        if not tokens:
            return None
        return sum(map(self.words.__contains__, tokens)) / len(tokens)
