"""Request bodies as JSON, decoded within fixed bounds before anything else reads them.

Every door that takes a JSON body (the Messages API and chat completions over HTTP, Envoy's
external processor) decodes it here, so one set of rules holds everywhere: the body is
UTF-8, one JSON value, nested at most `MAX_DEPTH` deep; its numbers are finite and an
integer has at most `MAX_INTEGER_DIGITS` digits; `NaN` and `Infinity` are not JSON; an
object names each key once (a repeated key is refused rather than resolved, so two readers
of one body, this door and the provider behind it, can never see two different requests);
no string holds half of a UTF-16 surrogate pair (`"\\ud800"` alone decodes in Python but
cannot be encoded again). JSON carried as a string inside a request (a tool call's
`arguments`, a gRPC `input_json`) is decoded by `decode_embedded` within the same bounds.
Every refusal is one exception, `InvalidRequest`, whose message says what is wrong without
quoting the body; each door maps it to its own error shape (a 400 in Anthropic's or OpenAI's
error JSON, INVALID_ARGUMENT). The byte limit is the door's: it knows its setting and how the
bytes arrive (`api.http.body`). `encode` writes the JSON the HTTP doors answer with.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from tierroute.errors import InvalidRequest

# Deeper than any Messages API body (a tool's input schema included) needs; shallow enough
# that nothing reading the body later (protobuf, json.dumps, a recursive check) can run out
# of stack on it.
MAX_DEPTH = 64
# Past any 128-bit integer (39 digits): no field of any API takes a larger one, and the
# digits of a huge integer cost quadratic time to read.
MAX_INTEGER_DIGITS = 40
# An escaped surrogate (`\uD800`-`\uDFFF`) in the raw body: only then can a decoded string
# hold a lone one (strict UTF-8 decoding refuses encoded surrogates).
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
BODY = "the request body"


class _Refused(Exception):
    """A decoding hook refused a value; the message says which."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {_shown(key)} appears twice in one object")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {_shown(text)} is out of range")
    return value


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise _Refused(f"an integer has {digits} digits; the limit is {MAX_INTEGER_DIGITS}")
    return int(text)


def _shown(text: str, width: int = 40) -> str:
    # A key or number named in a message: ASCII-escaped and cut short.
    short = text if len(text) <= width else text[:width] + "..."
    return ascii(short)


def decode(raw: bytes, *, max_depth: int = MAX_DEPTH, what: str = BODY) -> Any:
    """The JSON value in `raw`; InvalidRequest saying why when it breaks a rule above.
    `what` names the JSON in the messages (the request body, or a field that carries JSON)."""
    if not raw.strip():
        raise InvalidRequest(f"{what} is empty; it must be a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid UTF-8 (at byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except _Refused as exc:
        raise InvalidRequest(f"{what} is refused: {exc}") from None
    except RecursionError:
        raise InvalidRequest(_too_deep(what, max_depth)) from None
    # Only a body with more brackets than the bound can be too deep, and only one with an
    # escaped surrogate can hold a lone one: the rest need no walk.
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    if deep or _ESCAPED_SURROGATE.search(raw):
        _walk(value, max_depth, what)
    return value


def decode_object(raw: bytes, *, max_depth: int = MAX_DEPTH, what: str = BODY) -> dict[str, Any]:
    """`decode`, and InvalidRequest unless the value is a JSON object."""
    value = decode(raw, max_depth=max_depth, what=what)
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object, not {_json_type(value)}")
    return value


def decode_embedded(text: str, what: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A JSON object carried as a string inside a request (a tool call's `arguments`, a gRPC
    `input_json`), within the same bounds; `what` names the field. Empty text is `{}`."""
    _check_text(text, what)
    return decode_object(text.encode() if text else b"{}", max_depth=max_depth, what=what)


def encode(value: Any) -> bytes:
    """`value` as compact JSON in UTF-8, as the HTTP doors write their answers. A string
    holding a lone surrogate (only an upstream's answer can: a request holding one is refused)
    cannot be UTF-8, so then the whole value is written with `\\u` escapes instead: the same
    JSON, every byte ASCII, rather than an encoding error and a 500 for an answer in hand."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("ascii")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _too_deep(what: str, max_depth: int) -> str:
    return f"{what} is nested more than {max_depth} deep"


def _walk(value: Any, max_depth: int, what: str) -> None:
    """InvalidRequest if `value` nests deeper than `max_depth` or holds a lone surrogate."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, what)
            continue
        if not isinstance(item, dict | list):
            continue
        depth += 1
        if depth > max_depth:
            raise InvalidRequest(_too_deep(what, max_depth))
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, what)
                stack.append((child, depth))
        else:
            stack.extend((child, depth) for child in item)


def _check_text(text: str, what: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise InvalidRequest(
            f"{what} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
            "escape), which is not text"
        )
