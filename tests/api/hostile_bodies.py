"""A hostile set any JSON door of the HTTP endpoint must survive, built from one valid body.

`hostile_bodies(base, max_body_bytes=...)` returns the cases that break decoding (not UTF-8,
not JSON, too deep, numbers out of range, repeated keys, lone surrogates, wrong content
type, empty, too large), each one derived from `base`, a body the door answers with 200, so
every door (the Messages API, chat completions) runs the same set against its own shape.
`send` posts one case with httpx; `assert_clean` checks the answer: a status the case allows,
never a 5xx, and the door's own error JSON. Every case here must be refused by the bounded
decoder (`api.jsonbody`, `api.http.body`) before any field is read, with a 400 (413 for size).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest

# Statuses a hostile request may end in: answered, refused, rate-limited or overloaded.
CLEAN = frozenset(range(200, 300)) | frozenset(range(400, 429)) | {429, 529}
DEEP = 20_000
CHUNK = 64 * 1024
# The body limit of the server the hostile-request tests send to (`limited_served`).
LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    """One hostile request: its body, extra headers, and the statuses it may end in."""

    name: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    statuses: frozenset[int] = frozenset({400})
    # Sent without content-length, in pieces (transfer-encoding: chunked).
    chunked: bool = False

    def __str__(self) -> str:
        return self.name


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every scalar of `value` with its path of keys and indexes."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _leaves(child, (*path, index))
    else:
        yield path, value


def _named(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _with(base: Any, path: tuple[Any, ...], raw: str) -> bytes:
    """`base` as JSON with the value at `path` replaced by the raw JSON text `raw`."""
    marker = "\u0001hostile\u0001"
    copy = json.loads(json.dumps(base))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = marker
    text = json.dumps(copy, ensure_ascii=False)
    return text.replace(json.dumps(marker, ensure_ascii=False), raw, 1).encode("utf-8")


def _dumped(base: Any) -> bytes:
    return json.dumps(base).encode()


def hostile_bodies(base: Mapping[str, Any], *, max_body_bytes: int) -> list[Hostile]:
    """The hostile set for a door whose valid body is `base` and whose body limit is
    `max_body_bytes` (the server under test should set a small one)."""
    valid = _dumped(base)
    first_key = next(iter(base))
    cases = [
        Hostile("empty body", b""),
        Hostile("whitespace body", b" \r\n\t "),
        Hostile("truncated", valid[:-1]),
        Hostile("trailing garbage", valid + b"}"),
        Hostile("two values", valid + b" " + valid),
        Hostile("not JSON at all", b"model=tierroute&max_tokens=5"),
        Hostile("single-quoted", valid.replace(b'"', b"'")),
        Hostile("a JSON array", b"[" + valid + b"]"),
        Hostile("a JSON string", b'"hello"'),
        Hostile("JSON null", b"null"),
        Hostile("a JSON number", b"42"),
        Hostile("invalid UTF-8 byte", valid.replace(b'"' + first_key.encode(), b'"\xff', 1)),
        Hostile("encoded surrogate (CESU-8)", valid[:-1] + b', "x": "\xed\xa0\x80"}'),
        Hostile("overlong UTF-8", valid[:-1] + b', "x": "\xc0\xaf"}'),
        Hostile("UTF-16 body", json.dumps(base).encode("utf-16")),
        Hostile("UTF-8 byte order mark", b"\xef\xbb\xbf" + valid),
        Hostile("lone surrogate in a key", valid[:-1] + b', "\\ud800": 1}'),
        Hostile("array nested 20,000 deep", b"[" * DEEP + b"]" * DEEP),
        Hostile("object nested 20,000 deep", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
        Hostile("unclosed nesting 20,000 deep", b"[" * DEEP),
        Hostile(f"repeated key {first_key}", valid[:-1] + b", " + valid[1:]),
        Hostile("NaN at the top", valid[:-1] + b', "x": NaN}'),
        Hostile("text/plain content type", valid, headers={"content-type": "text/plain"}),
        Hostile(
            "form content type",
            valid,
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        Hostile(
            "multipart content type",
            valid,
            headers={"content-type": "multipart/form-data; boundary=x"},
        ),
        Hostile("gzip content encoding", valid, headers={"content-encoding": "gzip"}),
        Hostile(
            "body over the limit",
            valid[:-1] + b', "x": "' + b"a" * max_body_bytes + b'"}',
            statuses=frozenset({413}),
        ),
        Hostile(
            "chunked body over the limit",
            valid[:-1] + b', "x": "' + b"a" * max_body_bytes + b'"}',
            statuses=frozenset({413}),
            chunked=True,
        ),
    ]
    for path, value in _leaves(dict(base)):
        where = _named(path)
        cases.append(Hostile(f"lone surrogate in {where}", _with(base, path, '"x\\ud800y"')))
        cases.append(
            Hostile(f"low surrogate first in {where}", _with(base, path, '"\\udc00\\ud800"'))
        )
        cases.append(Hostile(f"20,000 deep at {where}", _with(base, path, "[" * DEEP + "]" * DEEP)))
        cases.append(Hostile(f"100 deep at {where}", _with(base, path, "[" * 100 + "]" * 100)))
        if isinstance(value, int | float) and not isinstance(value, bool):
            cases.extend(
                [
                    Hostile(f"1e999999 at {where}", _with(base, path, "1e999999")),
                    Hostile(f"-1e400 at {where}", _with(base, path, "-1e400")),
                    Hostile(f"100,000 digits at {where}", _with(base, path, "9" * 100_000)),
                    Hostile(f"NaN at {where}", _with(base, path, "NaN")),
                    Hostile(f"Infinity at {where}", _with(base, path, "Infinity")),
                    Hostile(f"-Infinity at {where}", _with(base, path, "-Infinity")),
                ]
            )
    for path, _ in _leaves(dict(base)):
        if len(path) > 1 and isinstance(path[-1], str):
            # A key repeated inside a nested object, with another value.
            where = _named(path)
            raw = _with(base, path[:-1], _repeated(base, path))
            cases.append(Hostile(f"repeated key {where}", raw))
            break
    return cases


def _repeated(base: Any, path: tuple[Any, ...]) -> str:
    """The object at `path[:-1]` as JSON text with its key `path[-1]` written twice."""
    target = base
    for step in path[:-1]:
        target = target[step]
    text = json.dumps(target)
    return text[:-1] + f", {json.dumps(path[-1])}: null}}"


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


async def send(
    client: httpx.AsyncClient, path: str, case: Hostile, headers: Mapping[str, str]
) -> httpx.Response:
    """Post `case` to `path` with the door's `headers` (the case's own override them)."""
    sent = {"content-type": "application/json", **headers, **case.headers}
    content: bytes | AsyncIterator[bytes] = _pieces(case.body) if case.chunked else case.body
    return await client.post(path, content=content, headers=sent)


def assert_clean(
    response: httpx.Response, case: Hostile, error_shape: Callable[[Any], None]
) -> None:
    """The answer is a status `case` allows (never a 5xx) in the door's error JSON."""
    assert response.status_code < 500, f"{case}: {response.status_code} {response.text[:200]}"
    assert response.status_code in case.statuses, f"{case}: {response.status_code}"
    if response.status_code >= 400:
        error_shape(response.json())


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged as an error, and no record carries a traceback."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info or r.exc_text]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]
