"""The hostile decoding set through Envoy's external processor: failing closed, every body the
bounded decoder refuses is answered 400 in Anthropic's error JSON with the upstream never
called, and no traceback is logged; failing open, it reaches the upstream as sent, marked
with the error. Through the real server and a client that speaks ext_proc as Envoy does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from grpc import aio

from tests.api.envoy_filter import ExtProcFilter, Headers
from tests.api.hostile_bodies import Hostile, assert_no_traceback, hostile_bodies
from tests.helpers import make_settings, running_server
from tierroute.testing import StaticScorer

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
BASE: dict[str, Any] = {
    "model": "claude-opus-4-8",
    "max_tokens": 64,
    "system": "Answer briefly.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}],
    "metadata": {"user_id": "u-1"},
}
# The cases about the body's bytes: Envoy reads no content type for the processor, its own
# buffer limit bounds the size, and an empty body has no body phase.
CASES = [
    case
    for case in hostile_bodies(BASE, max_body_bytes=1024)
    if not case.headers and not case.chunked and case.statuses == {400} and case.body
]


class Upstream:
    """Records what reached it; answers like the Messages API."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        self.bodies.append(body)
        return 200, {"content-type": "application/json"}, b'{"type":"message"}'


async def _channel(mode: str) -> AsyncIterator[aio.Channel]:
    settings = make_settings({"TIERROUTE_EXT_PROC_FAILURE_MODE": mode})
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02))) as s:
        yield s.channel


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def closed() -> AsyncIterator[aio.Channel]:
    """A processor that fails closed: a body it cannot read is answered by Envoy."""
    async for channel in _channel("closed"):
        yield channel


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_() -> AsyncIterator[aio.Channel]:
    """A processor that fails open: a body it cannot read goes upstream, marked."""
    async for channel in _channel("open"):
        yield channel


def test_the_set_covers_the_body_cases() -> None:
    """Most of the shared decoding set applies to the processor's body phase."""
    assert len(CASES) > 40


@IN_MODULE_LOOP
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_failing_closed_a_hostile_body_is_a_400_and_never_goes_upstream(
    closed: aio.Channel, case: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing closed, a refused body is Envoy's 400 invalid_request_error; no upstream call."""
    upstream = Upstream()
    seen = await ExtProcFilter(closed).request("POST", "/v1/messages", upstream, body=case.body)
    assert seen.status == 400
    error = json.loads(seen.client_body or b"{}")
    assert error["error"]["type"] == "invalid_request_error"
    assert upstream.bodies == []
    assert_no_traceback(caplog)


@IN_MODULE_LOOP
@pytest.mark.parametrize(
    "case", [c for c in CASES if "20,000" in c.name or "surrogate" in c.name], ids=str
)
async def test_failing_open_a_hostile_body_goes_upstream_unchanged_and_marked(
    open_: aio.Channel, case: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing open, a refused body reaches the upstream as sent, with the error header."""
    upstream = Upstream()
    seen = await ExtProcFilter(open_).request("POST", "/v1/messages", upstream, body=case.body)
    assert upstream.bodies == [case.body]
    assert seen.upstream_headers is not None
    assert seen.upstream_headers["x-tierroute-error"] == "invalid_request_error"
    assert_no_traceback(caplog)
