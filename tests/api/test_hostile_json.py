"""The bounded JSON decoder every door reads its body with (`api.jsonbody`): what it refuses,
with which message, and what it lets through."""

from __future__ import annotations

import json

import pytest

from tierroute.api import jsonbody
from tierroute.errors import InvalidRequest

DEEP = jsonbody.MAX_DEPTH


def _nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b" \n\t ", "empty"),
        (b"\xff{}", "not valid UTF-8 (at byte 0)"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON: Extra data"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
        (b'{"a": ["x", {"b": "\\uDC00\\uD800"}]}', "lone UTF-16 surrogate"),
        (b'{"a": "\\ud83d"}', "lone UTF-16 surrogate"),
        (b"[" * 20_000 + b"]" * 20_000, f"nested more than {DEEP} deep"),
        (_nested(DEEP + 1), f"nested more than {DEEP} deep"),
        (b'{"a": 1e999999}', "out of range"),
        (b'{"a": -1e400}', "out of range"),
        (b'{"a": ' + b"9" * 100_000 + b"}", "100000 digits"),
        (b'{"a": -' + b"1" * 41 + b"}", "41 digits"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": Infinity}', "Infinity is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"model": "a", "model": "b"}', "the key 'model' appears twice"),
        (b'{"a": [{"k": 1, "k": 1}]}', "the key 'k' appears twice"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
        (b"true", "must be a JSON object, not a boolean"),
        (b"12", "must be a JSON object, not a number"),
    ],
)
def test_a_hostile_body_is_refused_with_a_readable_reason(raw: bytes, message: str) -> None:
    """Each kind of undecodable body is one InvalidRequest whose message says what is wrong."""
    with pytest.raises(InvalidRequest) as caught:
        jsonbody.decode_object(raw)
    assert message in str(caught.value)


def test_a_refusal_never_quotes_a_long_key() -> None:
    """A repeated key is named cut short and ASCII-escaped, not echoed whole."""
    key = "\u00e9" * 1000
    raw = json.dumps({"x": 1}).replace("{", "{" + f'"{key}": 1, "{key}": 2, ', 1)
    with pytest.raises(InvalidRequest) as caught:
        jsonbody.decode_object(raw.encode())
    message = str(caught.value)
    assert message.isascii()
    assert "\\xe9" * 40 in message
    assert "\\xe9" * 41 not in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),
        (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),
        (b'{"a": "\xf0\x9f\x98\x80"}', {"a": "\U0001f600"}),
        (b'{"a": "\\u0000"}', {"a": "\x00"}),
        (b'{"a": 1.5e300, "b": -0.0}', {"a": 1.5e300, "b": -0.0}),
        (b'{"a": -' + b"9" * 40 + b"}", {"a": -int("9" * 40)}),
        (b'{"a": {"a": 1}}', {"a": {"a": 1}}),
    ],
)
def test_a_well_formed_body_decodes_as_json_does(raw: bytes, expected: object) -> None:
    """Pairs, escaped backslashes, NUL, big finite numbers decode as the standard decoder's."""
    assert jsonbody.decode_object(raw) == expected


def test_nesting_at_the_bound_is_accepted() -> None:
    """A body exactly MAX_DEPTH deep decodes; one level more is refused (above)."""
    value = jsonbody.decode_object(_nested(DEEP))
    depth = 0
    node: object = value
    while isinstance(node, dict | list) and node:
        depth += 1
        node = node["a"] if isinstance(node, dict) else node[0]
    assert depth == DEEP - 1  # the innermost empty array is the last level


def test_many_shallow_containers_are_not_deep() -> None:
    """Brackets side by side count as width, not depth."""
    raw = json.dumps({"a": [[1]] * 10_000}).encode()
    assert len(jsonbody.decode_object(raw)["a"]) == 10_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 20_000, "tools[0].input_schema_json is nested more than"),
        ('{"a": 1, "a": 2}', "tools[0].input_schema_json is refused: the key 'a' appears twice"),
        ('{"a": "\ud800"}', "tools[0].input_schema_json holds a lone UTF-16 surrogate"),
        ('{"a": NaN}', "tools[0].input_schema_json is refused: NaN"),
        ("[1]", "tools[0].input_schema_json must be a JSON object, not an array"),
        (" ", "tools[0].input_schema_json is empty"),
    ],
)
def test_json_inside_a_field_is_held_to_the_same_bounds(text: str, message: str) -> None:
    """A JSON object carried in a string field is refused by the same rules, naming the field."""
    with pytest.raises(InvalidRequest) as caught:
        jsonbody.decode_embedded(text, "tools[0].input_schema_json")
    assert message in str(caught.value)


def test_an_empty_embedded_object_is_an_empty_object() -> None:
    """An absent tool input (the empty string) is the empty object, as before."""
    assert jsonbody.decode_embedded("", "input_json") == {}
