"""Hostile requests on the gRPC edge: request bytes that do not parse (strings that are not
UTF-8, truncated messages) on every method, Envoy's external processor included, and hostile
values for Feedback and the admin calls, each end INVALID_ARGUMENT (or another clean status)
with a readable message, never INTERNAL or UNKNOWN, with no traceback logged; the server
serves afterwards. Against the real server on port 0 through a real channel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc import aio

from tests.api.hostile_bodies import assert_no_traceback
from tests.helpers import Running, make_settings, running_server
from tierroute.api.dataplane.envoy.config.core.v3 import base_pb2
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tierroute.api.security import bearer_metadata, hash_token
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

SERVICE = "/tierroute.v1.TierRouter/"
PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
ADMIN = "hostile-admin-token"
METADATA = bearer_metadata(ADMIN)
# Each unary method and its request type; CascadeStream streams its answer.
UNARY = {
    "Route": pb.RouteRequest,
    "Cascade": pb.CascadeRequest,
    "Feedback": pb.FeedbackRequest,
    "ReloadModel": pb.ReloadModelRequest,
}
pytestmark = pytest.mark.asyncio(loop_scope="module")
CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """One server for the module: tokens on (one admin token, which may also call as any
    tenant); the query log on."""
    tmp_path = tmp_path_factory.mktemp("hostile-grpc")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {}, "admin": [hash_token(ADMIN)]}))
    settings = make_settings(
        {
            "TIERROUTE_AUTH_TOKENS_FILE": str(tokens),
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_DB_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    async with running_server(settings, scorer=StaticScorer((0.9, 0.05, 0.05))) as s:
        yield s


def _bad_utf8(message: type[Message]) -> bytes:
    """`message` with its first string field set to two bytes that are not UTF-8."""
    field = next(f for f in message.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_STRING)
    return bytes([field.number << 3 | 2]) + b"\x02\xff\xfe"


# A length-delimited field 1 that claims more bytes than follow.
TRUNCATED = b"\x0a\x7f\x01"


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:  # type: ignore[attr-defined]
                pass
        else:
            await call  # type: ignore[misc]
    except aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _still_serves(served: Running) -> None:
    response = await served.stub.Route(pb.RouteRequest(query="What is 2 + 2?"), metadata=METADATA)
    assert response.tier.name


@pytest.mark.parametrize("method", sorted(UNARY))
async def test_a_string_that_is_not_utf8_is_invalid_argument(
    served: Running, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A request whose string field is not UTF-8 ends INVALID_ARGUMENT, saying so."""
    call = served.channel.unary_unary(SERVICE + method)(_bad_utf8(UNARY[method]), metadata=METADATA)
    code, details = await _code(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in details
    assert_no_traceback(caplog)
    await _still_serves(served)


async def test_a_stream_request_that_is_not_utf8_is_invalid_argument(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """CascadeStream refuses undecodable request bytes before streaming anything."""
    raw = _bad_utf8(pb.CascadeRequest)
    code, details = await _code(
        served.channel.unary_stream(SERVICE + "CascadeStream")(raw, metadata=METADATA)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in details
    assert_no_traceback(caplog)
    await _still_serves(served)


@pytest.mark.parametrize("method", [*sorted(UNARY), "RollbackModel"])
async def test_a_truncated_request_is_invalid_argument(
    served: Running, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that end inside a field end INVALID_ARGUMENT, on every method."""
    code, _ = await _code(
        served.channel.unary_unary(SERVICE + method)(TRUNCATED, metadata=METADATA)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert_no_traceback(caplog)


async def test_an_ext_proc_message_that_is_not_utf8_is_invalid_argument(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Envoy's Process refuses a message whose header name is not UTF-8: INVALID_ARGUMENT."""
    header = base_pb2.HeaderValue(key="hostile-key", value="v")
    request = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[header]))
    )
    raw = request.SerializeToString().replace(b"hostile-key", b"\xff\xfeostile-key")

    async def requests() -> AsyncIterator[bytes]:
        yield raw

    code, details = await _code(
        served.channel.stream_stream(PROCESS)(requests(), metadata=METADATA)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in details
    assert_no_traceback(caplog)
    await _still_serves(served)


@pytest.mark.parametrize(
    "request_",
    [
        pb.FeedbackRequest(request_id="r" * 100_000, rating=3),
        pb.FeedbackRequest(request_id="r-1", rating=6),
        pb.FeedbackRequest(request_id="r-1", rating=-(2**31)),
        pb.FeedbackRequest(request_id="r-1"),
        pb.FeedbackRequest(request_id="", correct=True),
        pb.FeedbackRequest(request_id="\x00", correct=True),
        pb.FeedbackRequest(request_id="r' OR '1'='1", correct=False),
        pb.FeedbackRequest(request_id="\U0001f600\u202e", rating=1),
        pb.FeedbackRequest(request_id="r-1", rating=1, tenant_id="t" * 10_000),
        pb.FeedbackRequest(request_id="r-1", rating=1, tenant_id="\x00"),
    ],
    ids=repr,
)
async def test_hostile_feedback_ends_clean(
    served: Running, request_: pb.FeedbackRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """Feedback with hostile values ends with a clean refusal (never INTERNAL) that says why."""
    code, details = await _code(served.stub.Feedback(request_, metadata=METADATA))
    assert code in CLEAN, (code, details)
    assert details
    assert_no_traceback(caplog)


@pytest.mark.parametrize(
    "version", ["../../etc/passwd", "v" * 100_000, "\x00", "bundle\n2", "\U0001f600", " "]
)
async def test_a_hostile_model_version_is_invalid_argument(
    served: Running, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ReloadModel refuses a version that is not a registry name, naming the rule."""
    code, details = await _code(
        served.stub.ReloadModel(pb.ReloadModelRequest(version=version), metadata=METADATA)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "version" in details
    assert_no_traceback(caplog)


# Deeper than the interpreter's recursion limit, within the tool schema's character limit.
DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.CascadeRequest(
                query="Look it up.", tools=[pb.Tool(name="lookup", input_schema_json=DEEP)]
            ),
            "tools",
        ),
        (
            pb.CascadeRequest(
                messages=[
                    pb.ChatMessage(role=pb.ROLE_USER, content="Look it up."),
                    pb.ChatMessage(
                        role=pb.ROLE_ASSISTANT,
                        blocks=[
                            pb.ContentBlock(
                                tool_use=pb.ToolUseBlock(id="t", name="lookup", input_json=DEEP)
                            )
                        ],
                    ),
                    pb.ChatMessage(role=pb.ROLE_USER, content="And?"),
                ],
            ),
            "input_json",
        ),
    ],
    ids=["tool schema", "tool_use input"],
)
async def test_json_nested_10000_deep_in_a_string_field_is_invalid_argument(
    served: Running, request_: pb.CascadeRequest, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON nested past the bound inside a string field is INVALID_ARGUMENT naming the field."""
    code, details = await _code(served.stub.Cascade(request_, metadata=METADATA))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details
    assert "nested more than" in details
    assert_no_traceback(caplog)
