"""A client that sends its body slowly: the request's deadline covers receiving the body, so
a body still incomplete when the deadline passes is a 504 `timeout_error`, and the in-flight
slot it held is free again; against the real server on port 0 over a raw socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.api.hostile_bodies import assert_no_traceback
from tests.helpers import Running, make_settings, running_server
from tierroute.testing import StaticScorer

GUARD_S = 60
BODY = json.dumps(
    {"model": "tierroute", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
).encode()


@pytest.fixture
async def served() -> AsyncIterator[Running]:
    """One call in flight at a time, shared by both transports; replay answers at once."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_TIME_SCALE": "0", "TIERROUTE_SERVER_MAX_IN_FLIGHT": "1"}
    )
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02)), http=True) as s:
        yield s


async def _post(port: int, head: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST /v1/messages with `head` and as much of the body as given; the status and body
    of the answer (the connection is closed by the client once it has read it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Bounds a hung call: a server that never answers fails the test instead of stalling.
        async with asyncio.timeout(GUARD_S):
            lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
            request = f"POST /v1/messages HTTP/1.1\r\nhost: test\r\n{lines}\r\n"
            writer.write(request.encode() + body)
            await writer.drain()
            status_line = await reader.readline()
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return int(status_line.split()[1]), await reader.readexactly(length)
    finally:
        writer.close()


async def test_a_body_not_sent_by_the_deadline_is_a_504_and_frees_its_slot(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a body then silence is a 504 timeout_error at the deadline; its slot is freed."""
    port = served.server.http_port
    assert port
    head = {
        "content-type": "application/json",
        "content-length": str(len(BODY)),
        "x-stainless-timeout": "0.5",
    }
    status, answer = await _post(port, head, BODY[: len(BODY) // 2])
    assert status == 504
    error = json.loads(answer)["error"]
    assert error["type"] == "timeout_error"
    assert "body" in error["message"]
    complete = {"content-type": "application/json", "content-length": str(len(BODY))}
    status, _ = await _post(port, complete, BODY)
    assert status == 200
    assert_no_traceback(caplog)
