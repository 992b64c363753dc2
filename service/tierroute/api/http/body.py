"""An HTTP request's JSON body, read within the byte limit and decoded within bounds.

`read_json` is the one way an HTTP door reads its body, whatever error shape it answers
in: the content type must be JSON (or absent) and the body uncompressed, the bytes are
counted as they arrive and refused past the limit before they are all read (a declared
`content-length` over it is refused without reading any), and the bytes are decoded by
`api.jsonbody` (UTF-8, depth, numbers, keys, surrogates). It raises `InvalidRequest` for a
body it refuses (`RequestTooLarge`, a subclass, for one over the limit: 413),
`DeadlineExceeded` for one that has not all arrived by the request's deadline, and
`ClientGone` when the client leaves while sending it; the door maps the first two to its own
error JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import ClientDisconnect, Request

from tierroute.api import jsonbody
from tierroute.errors import DeadlineExceeded, InvalidRequest, RequestTooLarge

# A body under this many bytes decodes on the event loop (a few milliseconds at worst, for
# one made of tiny objects; a thread hop costs a fraction of one); a larger one in a thread.
THREAD_DECODE_BYTES = 64 * 1024


class ClientGone(Exception):
    """The client closed its connection before the answer was sent."""


def _check_content_type(request: Request) -> None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Nothing here inflates a body: a compressed one would only be read as bytes that are
        # not UTF-8, and inflating it could take it far past the byte limit.
        raise InvalidRequest(
            f"content-encoding {encoding[:40]!a} is not accepted; send the body uncompressed"
        )
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    shown = ascii(declared[:60])
    raise InvalidRequest(f"content-type {shown} is not JSON; send application/json")


async def read_bytes(request: Request, limit: int, *, within_s: float | None = None) -> bytes:
    """The body's bytes; RequestTooLarge past `limit`, ClientGone if the client leaves,
    DeadlineExceeded if it has not all come within `within_s` seconds (None: no bound)."""
    declared = request.headers.get("content-length", "")
    # ASCII digits only (str.isdigit takes "²" too), and no int() of a thousand of them.
    digits = declared.lstrip("0") or "0"
    if (
        digits.isascii()
        and digits.isdigit()
        and (len(digits) > len(str(limit)) or int(digits) > limit)
    ):
        raise RequestTooLarge(f"the request body has {declared[:40]} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within_s) as scope:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"the request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientGone from exc
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise DeadlineExceeded(
            f"the request's deadline passed with {size} bytes of its body received"
        ) from exc
    return b"".join(chunks)


async def read_json(
    request: Request, limit: int, *, within_s: float | None = None
) -> dict[str, Any]:
    """The request's body as a JSON object, within `limit` bytes, `within_s` seconds (the
    request's deadline: a client sending its body slowly holds its in-flight slot no longer)
    and `api.jsonbody`'s bounds.

    A large body is decoded in a worker thread: decoding a body of many small objects takes
    seconds at the byte limit, and the decoder's hooks let the event loop take the GIL in
    between, so the other calls in flight (streams, health checks) go on meanwhile.
    """
    _check_content_type(request)
    raw = await read_bytes(request, limit, within_s=within_s)
    if len(raw) < THREAD_DECODE_BYTES:
        return jsonbody.decode_object(raw)
    return await asyncio.to_thread(jsonbody.decode_object, raw)
