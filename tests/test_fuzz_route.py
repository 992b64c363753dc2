"""Property tests: arbitrary and hostile RouteRequests against one running server.

The server (authentication on, real limits) runs on its own event loop in a background
thread, started once for the module; each Hypothesis example is one real call over a real
channel. The only outcomes allowed are a valid response or a clear refusal, never INTERNAL
or UNKNOWN, and the server must still report SERVING afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import Running, make_settings, running_server
from tierroute.classifier import MODEL_FILE
from tierroute.errors import Unauthenticated
from tierroute.router import Scorer
from tierroute.security import bearer_metadata, bearer_token, hash_token
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

T = TypeVar("T")

ACME_TOKEN = "fuzz-acme-token"
ADMIN_TOKEN = "fuzz-admin-token"
ROUTE = "/tierroute.v1.TierRouter/Route"
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
# Bounds a hung call so a broken server fails the test instead of stalling it.
DEADLINE_S = 60
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BASE = make_settings()
LIMITS = BASE.limits


class ServerThread:
    """A running tierroute server on an event loop of its own, driven from the test thread."""

    def __init__(self, settings: Settings, scorer: Scorer | None) -> None:
        self._settings = settings
        self._scorer = scorer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = AsyncExitStack()
        self.running: Running | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(DEADLINE_S * 2)

    def start(self) -> Running:
        """Start the loop thread and the server on it."""
        self._thread.start()

        async def enter() -> Running:
            return await self._stack.enter_async_context(
                running_server(self._settings, scorer=self._scorer)
            )

        self.running = self.run(enter())
        return self.running

    def stop(self) -> None:
        """Stop the server, then the loop and its thread."""
        self.run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@dataclass(frozen=True)
class Outcome:
    """How one call ended: a status code, and the response when it was OK."""

    code: grpc.StatusCode
    details: str
    response: pb.RouteResponse | None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the module, with bearer tokens on and the bundled model if built."""
    tokens = tmp_path_factory.mktemp("auth") / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tenants": {"acme": [hash_token(ACME_TOKEN)]},
                "admin": [hash_token(ADMIN_TOKEN)],
            }
        )
    )
    config = make_settings({"TIERROUTE_AUTH_TOKENS_FILE": str(tokens)})
    # The real ONNX model featurises the hostile text too, when a bundle has been built.
    bundle = (config.routing.model_dir / MODEL_FILE).is_file()
    thread = ServerThread(config, None if bundle else StaticScorer((0.5, 0.3, 0.2)))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def _call(server: ServerThread, request: Any, metadata: tuple[tuple[str, str], ...]) -> Outcome:
    """One Route call; `request` is a RouteRequest or raw bytes sent as they are."""
    running = server.running
    assert running is not None

    async def call() -> Outcome:
        try:
            if isinstance(request, bytes):
                raw = running.channel.unary_unary(ROUTE)
                await raw(request, metadata=metadata, timeout=DEADLINE_S)
                return Outcome(grpc.StatusCode.OK, "", None)
            response = await running.stub.Route(request, metadata=metadata, timeout=DEADLINE_S)
        except aio.AioRpcError as err:
            return Outcome(err.code(), err.details() or "", None)
        return Outcome(grpc.StatusCode.OK, "", response)

    return server.run(call())


def _health(server: ServerThread) -> int:
    running = server.running
    assert running is not None
    stub = health_pb2_grpc.HealthStub(running.channel)

    async def check() -> int:
        reply: Awaitable[Any] = stub.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
        return int((await reply).status)

    return server.run(check())


# --- strategies -------------------------------------------------------------------------

# Protobuf strings are UTF-8, so lone surrogates cannot be sent at all; everything else can.
UNICODE = st.characters(exclude_categories=["Cs"])
# NUL, right-to-left override, zero-width space, BOM, emoji, a combining accent on its own
# and after a letter, a non-character and the last code point.
HOSTILE = st.sampled_from(
    [
        *("\x00", "\u202e", "\u200b", "\ufeff", "\U0001f600", "\u0301", "e\u0301", "\uffff"),
        *("\U0010ffff", "```", "\n", "then", "finally"),
    ]
)


def _repeat(chars: st.SearchStrategy[str], sizes: list[int]) -> st.SearchStrategy[str]:
    # Big strings are built by repetition so Hypothesis only draws a character and a size.
    return st.builds(lambda c, n: (c * n)[:n], chars, st.sampled_from(sizes))


def _near(limit: int) -> list[int]:
    return [limit - 1, limit, limit + 1]


def _mostly(common: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    # About four in five examples draw from `common`, so enough requests get past one
    # gate to reach the next instead of all failing at the first.
    return st.one_of(common, common, common, common, rare)


SHORT_TEXT = st.one_of(
    st.text(UNICODE, min_size=1, max_size=200),
    st.lists(HOSTILE, min_size=1, max_size=50).map("".join),
)
TEXT = _mostly(
    SHORT_TEXT,
    st.one_of(
        st.sampled_from(["", "  \n\t "]),
        _repeat(
            st.sampled_from(["x", "\x00", "\U0001f600", "word "]), _near(LIMITS.max_query_chars)
        ),
        _repeat(st.just("x"), [BASE.server.max_receive_message_bytes + 1]),
    ),
)


def _enum(valid: list[int]) -> st.SearchStrategy[int]:
    return _mostly(st.sampled_from(valid), st.integers(-(2**31), 2**31 - 1))


DOUBLE = _mostly(
    st.floats(0.0, 1.0),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([-0.0, 1.0 + 1e-12, -1.0, math.nan, math.inf, -math.inf, 5e-324]),
    ),
)
ID = _mostly(
    st.text(UNICODE, max_size=40),
    _repeat(st.sampled_from(["r", "\x00", "\U0001f600"]), _near(LIMITS.max_id_chars)),
)
ROLE = _enum([pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_USER, pb.ROLE_ASSISTANT])
MESSAGES = st.one_of(
    st.lists(st.builds(pb.ChatMessage, role=ROLE, content=TEXT), min_size=1, max_size=8),
    # Long conversations of short turns: the turn limit, not the size limit, should decide.
    st.builds(
        lambda m, n: [m] * n,
        st.builds(pb.ChatMessage, role=ROLE, content=SHORT_TEXT),
        st.sampled_from([*_near(LIMITS.max_messages), 5000]),
    ),
)
METADATA = _mostly(
    st.dictionaries(st.text(UNICODE, max_size=30), st.text(UNICODE, max_size=60), max_size=8),
    st.one_of(
        st.builds(
            lambda n: {f"k{i}": "v" for i in range(n)},
            st.sampled_from([*_near(LIMITS.max_metadata_entries), 5000]),
        ),
        st.builds(
            lambda k, v: {k: v},
            _repeat(st.just("k"), _near(LIMITS.max_metadata_key_chars)),
            _repeat(st.just("v"), _near(LIMITS.max_metadata_value_chars)),
        ),
    ),
)
POLICY = st.builds(
    pb.RoutingPolicy,
    rule=_enum([0, pb.DECISION_RULE_CALIBRATED, pb.DECISION_RULE_PUBLISHED]),
    quality_floor=DOUBLE,
    max_cost_usd=DOUBLE,
)
STRATEGY = _enum([0, pb.STRATEGY_HEURISTIC, pb.STRATEGY_CLASSIFIER, pb.STRATEGY_SELF_ROUTING])


def _requests(tenant: st.SearchStrategy[str]) -> st.SearchStrategy[pb.RouteRequest]:
    return st.one_of(
        st.builds(
            pb.RouteRequest,
            query=TEXT,
            strategy=STRATEGY,
            tenant_id=tenant,
            session_id=ID,
            policy=POLICY,
            metadata=METADATA,
            request_id=ID,
        ),
        st.builds(
            pb.RouteRequest,
            query=_mostly(st.just(""), SHORT_TEXT),
            messages=MESSAGES,
            strategy=STRATEGY,
            tenant_id=tenant,
            session_id=ID,
            policy=POLICY,
        ),
    )


# Requests that are valid in every field, with hostile text wherever text goes.
NONBLANK = SHORT_TEXT.filter(str.strip)
VALID_MESSAGES = st.builds(
    lambda turns, last: [*turns, pb.ChatMessage(role=pb.ROLE_USER, content=last)],
    st.lists(
        st.builds(
            pb.ChatMessage,
            role=st.sampled_from([pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT]),
            content=SHORT_TEXT,
        ),
        max_size=6,
    ),
    NONBLANK,
)
SHORT_ID = st.text(UNICODE, max_size=LIMITS.max_id_chars)
VALID_REQUEST = st.builds(
    lambda body, **fields: pb.RouteRequest(**body, **fields),
    st.one_of(
        st.builds(lambda q: {"query": q}, NONBLANK),
        st.builds(lambda m: {"messages": m}, VALID_MESSAGES),
    ),
    strategy=st.sampled_from([0, pb.STRATEGY_HEURISTIC, pb.STRATEGY_CLASSIFIER]),
    tenant_id=st.sampled_from(["", "acme"]),
    session_id=SHORT_ID,
    request_id=SHORT_ID,
    policy=st.builds(
        pb.RoutingPolicy,
        rule=st.sampled_from([0, pb.DECISION_RULE_CALIBRATED, pb.DECISION_RULE_PUBLISHED]),
        quality_floor=st.floats(0.0, 1.0),
        max_cost_usd=st.floats(0.0, 1e6),
    ),
    metadata=st.dictionaries(
        st.text(UNICODE, max_size=LIMITS.max_metadata_key_chars),
        st.text(UNICODE, max_size=80),
        max_size=LIMITS.max_metadata_entries,
    ),
)
# A caller with a valid credential for the tenant it names, sending hostile content.
OWN_TENANT = st.sampled_from(["", "acme"])
VALID_CREDENTIAL = st.sampled_from([bearer_metadata(ACME_TOKEN), bearer_metadata(ADMIN_TOKEN)])
# Metadata values must be printable ASCII, or the client library refuses to send them.
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
CREDENTIAL = st.one_of(
    VALID_CREDENTIAL,
    st.sampled_from(
        [
            (),
            bearer_metadata("not-a-token"),
            bearer_metadata(ACME_TOKEN.upper()),
            (("authorization", ACME_TOKEN),),
            (("authorization", f"bearer {ACME_TOKEN}"), ("authorization", "Bearer x")),
        ]
    ),
    ASCII.map(lambda v: (("authorization", v),)),
    ASCII.map(lambda v: (("authorization", f"Bearer {v}"),)),
)
TENANT = st.one_of(OWN_TENANT, st.sampled_from(["globex", "ACME", "acme\x00", " acme"]), ID)


def _parses(data: bytes) -> bool:
    try:
        pb.RouteRequest.FromString(data)
    except DecodeError:
        return False
    return True


# --- properties -------------------------------------------------------------------------


def _token(credential: tuple[tuple[str, str], ...]) -> str | None:
    try:
        return bearer_token(credential)
    except Unauthenticated:
        return None


def _check(outcome: Outcome, request: pb.RouteRequest | None, credential: Any) -> None:
    # Shown by --hypothesis-show-statistics: how many examples got past each gate.
    event(outcome.code.name)
    assert outcome.code == grpc.StatusCode.OK or outcome.code in REFUSALS, outcome
    if outcome.code != grpc.StatusCode.OK:
        assert "Traceback" not in outcome.details
        return
    # Nothing gets through without a valid token, or with a token for another tenant.
    token = _token(credential)
    assert token in (ACME_TOKEN, ADMIN_TOKEN)
    if request is not None and token == ACME_TOKEN:
        assert request.tenant_id in ("", "acme")
    response = outcome.response
    if response is not None:
        tiers = [t.name for t in BASE.tiers]
        assert response.tier.name in tiers
        assert [s.tier for s in response.scores] == tiers
        assert all(math.isfinite(s.probability) for s in response.scores)
        assert math.isfinite(response.estimated_cost_usd)
        assert response.request_id


def test_hostile_content_gets_a_response_or_a_clear_refusal(server: ServerThread) -> None:
    """Authorised callers sending arbitrary RouteRequests get a valid response or a
    client-error status, never INTERNAL or UNKNOWN, and the server stays up."""

    @FUZZ
    @given(request=_requests(OWN_TENANT), credential=VALID_CREDENTIAL)
    def property_(request: pb.RouteRequest, credential: tuple[tuple[str, str], ...]) -> None:
        _check(_call(server, request, credential), request, credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_valid_requests_with_hostile_text_are_answered(server: ServerThread) -> None:
    """Requests valid in every field are answered, whatever Unicode (NUL, bidi controls,
    combining marks, emoji, non-characters) their text holds."""

    @FUZZ
    @given(request=VALID_REQUEST, credential=VALID_CREDENTIAL)
    def property_(request: pb.RouteRequest, credential: tuple[tuple[str, str], ...]) -> None:
        outcome = _call(server, request, credential)
        assert outcome.code == grpc.StatusCode.OK, outcome
        _check(outcome, request, credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_hostile_credentials_never_get_through(server: ServerThread) -> None:
    """Any credential and tenant_id on a valid query: OK only for a valid token of that
    tenant (or the admin's), otherwise exactly UNAUTHENTICATED or PERMISSION_DENIED."""

    @FUZZ
    @given(query=SHORT_TEXT.filter(str.strip), tenant=TENANT, credential=CREDENTIAL)
    def property_(query: str, tenant: str, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.RouteRequest(query=query, tenant_id=tenant)
        outcome = _call(server, request, credential)
        token = _token(credential)
        if token not in (ACME_TOKEN, ADMIN_TOKEN):
            expected = grpc.StatusCode.UNAUTHENTICATED
        elif token == ACME_TOKEN and tenant not in ("", "acme"):
            expected = grpc.StatusCode.PERMISSION_DENIED
        elif len(tenant) > LIMITS.max_id_chars:
            expected = grpc.StatusCode.INVALID_ARGUMENT
        else:
            expected = grpc.StatusCode.OK
        assert outcome.code == expected, outcome
        _check(outcome, request, credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_random_bytes_that_parse_are_handled_like_any_request(server: ServerThread) -> None:
    """Random bytes that parse as a RouteRequest end OK or with a client-error status."""

    @FUZZ
    @given(data=st.binary(max_size=512).filter(_parses), credential=CREDENTIAL)
    def property_(data: bytes, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.RouteRequest.FromString(data)
        _check(_call(server, request, credential), request, credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_undecodable_bytes_are_invalid_argument(server: ServerThread) -> None:
    """Bytes that are not a RouteRequest at all never become INTERNAL or UNKNOWN."""

    @FUZZ
    @given(data=st.binary(min_size=1, max_size=512).filter(lambda d: not _parses(d)))
    def property_(data: bytes) -> None:
        outcome = _call(server, data, bearer_metadata(ACME_TOKEN))
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
        assert "Traceback" not in outcome.details

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_server_reports_serving_after_the_fuzzing(server: ServerThread) -> None:
    """After every hostile call above, health checking still answers SERVING."""
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING
    assert server.running is not None
    assert server.running.server.admission.in_flight == 0
