"""Property tests: arbitrary and hostile CascadeRequests against a running server.

As in tests/test_fuzz_route.py (whose server thread and text strategies this reuses), the
server runs on its own event loop in a background thread with authentication on; its
Cascade calls go through the replay backend with no simulated latency and synthetic
answers. Hostile fault-injection metadata makes the model backend fail in every way it
can, so circuit breakers open and close along the way. The only outcomes allowed are a
valid response or a clear status code, never INTERNAL or UNKNOWN, and the server must still
report SERVING and answer afterwards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import make_settings
from tests.test_fuzz_route import (
    ACME_TOKEN,
    ADMIN_TOKEN,
    ASCII,
    CREDENTIAL,
    ID,
    MESSAGES,
    METADATA,
    OWN_TENANT,
    SHORT_ID,
    SHORT_TEXT,
    STRATEGY,
    TENANT,
    TEXT,
    UNICODE,
    VALID_CREDENTIAL,
    VALID_MESSAGES,
    ServerThread,
)
from tierroute.classifier import MODEL_FILE
from tierroute.errors import Unauthenticated
from tierroute.security import bearer_metadata, bearer_token, hash_token
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

CASCADE = "/tierroute.v1.TierRouter/Cascade"
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# What provider trouble may turn a valid request into: nothing the caller did wrong.
PROVIDER_OUTCOMES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Bounds a hung call so a broken server fails the test instead of stalling it.
DEADLINE_S = 30
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SERVER_ENV = {
    "TIERROUTE_REPLAY_TIME_SCALE": "0",
    # Injected timeouts hold a connection this long, then drop it; 429s ask for no wait.
    "TIERROUTE_REPLAY_TIMEOUT_HOLD_S": "0.05",
    "TIERROUTE_REPLAY_RETRY_AFTER_S": "0",
    "TIERROUTE_CASCADE_RETRY_BASE_DELAY_S": "0.001",
    "TIERROUTE_CASCADE_RETRY_MAX_DELAY_S": "0.002",
    # Short, so breakers opened by injected faults also go half-open and close again.
    "TIERROUTE_BREAKER_COOLDOWN_S": "0.2",
}
BASE = make_settings(SERVER_ENV)
TIER_NAMES = [t.name for t in BASE.tiers]
MAX_TOKENS = BASE.cascade.max_output_tokens


def _server(tmp: Path) -> ServerThread:
    tokens = tmp / "tokens.json"
    tokens.write_text(
        json.dumps(
            {"tenants": {"acme": [hash_token(ACME_TOKEN)]}, "admin": [hash_token(ADMIN_TOKEN)]}
        )
    )
    config = make_settings({**SERVER_ENV, "TIERROUTE_AUTH_TOKENS_FILE": str(tokens)})
    # The real ONNX model routes the hostile text too, when a bundle has been built.
    bundle = (config.routing.model_dir / MODEL_FILE).is_file()
    thread = ServerThread(config, None if bundle else StaticScorer((0.5, 0.3, 0.2)))
    thread.start()
    return thread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server for calls without injected faults."""
    thread = _server(tmp_path_factory.mktemp("auth"))
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own for calls that inject provider faults (and so open breakers)."""
    thread = _server(tmp_path_factory.mktemp("auth"))
    try:
        yield thread
    finally:
        thread.stop()


@dataclass(frozen=True)
class Outcome:
    """How one call ended: a status code, and the response when it was OK."""

    code: grpc.StatusCode
    details: str
    response: pb.CascadeResponse | None


def _call(
    server: ServerThread,
    request: pb.CascadeRequest | bytes,
    metadata: tuple[tuple[str, str], ...],
    timeout: float = DEADLINE_S,
) -> Outcome:
    """One Cascade call; raw bytes are sent as they are."""
    running = server.running
    assert running is not None

    async def call() -> Outcome:
        try:
            if isinstance(request, bytes):
                raw = running.channel.unary_unary(CASCADE)
                await raw(request, metadata=metadata, timeout=timeout)
                return Outcome(grpc.StatusCode.OK, "", None)
            response = await running.stub.Cascade(request, metadata=metadata, timeout=timeout)
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


def _mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    # Most examples draw from `common`, so enough requests get past one gate to the next.
    return st.one_of(common, common, common, common, rare)


def _enum(valid: list[int]) -> Any:
    return _mostly(st.sampled_from(valid), st.integers(-(2**31), 2**31 - 1))


START_TIER = _mostly(
    st.sampled_from(["", *TIER_NAMES]),
    st.one_of(ID, st.sampled_from(["CHEAP", " cheap", "gold", "cheap\x00", "mid\u200b"])),
)
OUTPUT_TOKENS = _mostly(
    st.sampled_from([0, 1, 16, MAX_TOKENS]),
    st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, MAX_TOKENS + 1, 2**31 - 1])),
)
SPECULATION = _enum([0, pb.SPECULATION_MODE_OFF, pb.SPECULATION_MODE_ON])
JUDGE_MODE = _enum([0, pb.JUDGE_MODE_ALWAYS, pb.JUDGE_MODE_NEVER])
DOUBLE = _mostly(
    st.floats(0.0, 1.0),
    st.sampled_from([-0.0, -1.0, 1.0 + 1e-12, math.nan, math.inf, -math.inf, 5e-324]),
)
POLICY = st.builds(
    pb.RoutingPolicy,
    rule=_enum([0, pb.DECISION_RULE_CALIBRATED, pb.DECISION_RULE_PUBLISHED]),
    quality_floor=DOUBLE,
    max_cost_usd=DOUBLE,
)


def _cascade_requests(tenant: st.SearchStrategy[str]) -> st.SearchStrategy[pb.CascadeRequest]:
    common = {
        "strategy": STRATEGY,
        "tenant_id": tenant,
        "session_id": ID,
        "request_id": ID,
        "policy": POLICY,
        "metadata": METADATA,
        "start_tier": START_TIER,
        "max_output_tokens": OUTPUT_TOKENS,
        "speculation": SPECULATION,
        "judge_mode": JUDGE_MODE,
    }
    return st.one_of(
        st.builds(pb.CascadeRequest, query=TEXT, **common),
        st.builds(
            pb.CascadeRequest,
            query=_mostly(st.just(""), SHORT_TEXT),
            messages=MESSAGES,
            **common,
        ),
    )


NONBLANK = SHORT_TEXT.filter(str.strip)


def _valid(body: dict[str, Any], start_tier: str, **fields: Any) -> pb.CascadeRequest:
    request = pb.CascadeRequest(**body, **fields)
    # Self-routing always starts on the cheapest tier: any start tier contradicts it.
    if request.strategy != pb.STRATEGY_SELF_ROUTING:
        request.start_tier = start_tier
    return request


# Requests valid in every field, with hostile text wherever text goes.
VALID_WITH_TIER = st.builds(
    _valid,
    st.one_of(
        st.builds(lambda q: {"query": q}, NONBLANK),
        st.builds(lambda m: {"messages": m}, VALID_MESSAGES),
    ),
    st.sampled_from(["", *TIER_NAMES]),
    strategy=st.sampled_from(
        [0, pb.STRATEGY_HEURISTIC, pb.STRATEGY_CLASSIFIER, pb.STRATEGY_SELF_ROUTING]
    ),
    tenant_id=OWN_TENANT,
    session_id=SHORT_ID,
    request_id=SHORT_ID,
    max_output_tokens=st.integers(0, MAX_TOKENS),
    speculation=st.sampled_from([0, pb.SPECULATION_MODE_OFF, pb.SPECULATION_MODE_ON]),
    judge_mode=st.sampled_from([0, pb.JUDGE_MODE_ALWAYS, pb.JUDGE_MODE_NEVER]),
    metadata=st.dictionaries(
        st.text(UNICODE, max_size=40), st.text(UNICODE, max_size=80), max_size=8
    ),
)


# Every kind of injected provider fault (docs/replay.md), alone, scoped and combined, plus
# unreadable specs; `*N` specs count per fault key, so some calls carry a fresh key.
FAULT_SPECS = st.sampled_from(
    [
        "529",
        "529@cheap",
        "529*2@mid",
        "429",
        "429:0@expensive",
        "500@mid",
        "drop",
        "drop@expensive",
        "timeout@cheap",
        "timeout",
        "malformed_judge",
        "malformed_judge:text",
        "spend_limit@cheap",
        "400",
        "401@mid",
        "404@expensive",
        "413",
        "529@cheap,drop@mid,timeout@expensive",
    ]
)
FAULTS = st.one_of(
    st.just(()),
    FAULT_SPECS.map(lambda v: (("x-tierroute-fault", v),)),
    st.tuples(FAULT_SPECS, ASCII).map(
        lambda fk: (("x-tierroute-fault", fk[0]), ("x-tierroute-fault-key", fk[1]))
    ),
    ASCII.map(lambda v: (("x-tierroute-fault", v),)),
)


def _parses(data: bytes) -> bool:
    try:
        pb.CascadeRequest.FromString(data)
    except DecodeError:
        return False
    return True


def _token(credential: tuple[tuple[str, str], ...]) -> str | None:
    try:
        return bearer_token(credential)
    except Unauthenticated:
        return None


# --- properties -------------------------------------------------------------------------


def _check(outcome: Outcome, credential: tuple[tuple[str, str], ...]) -> None:
    # Shown by --hypothesis-show-statistics: how many examples ended each way.
    event(outcome.code.name)
    assert outcome.code == grpc.StatusCode.OK or outcome.code in REFUSALS, outcome
    if outcome.code != grpc.StatusCode.OK:
        assert "Traceback" not in outcome.details
        return
    assert _token(credential) in (ACME_TOKEN, ADMIN_TOKEN)
    response = outcome.response
    if response is None:
        return
    assert response.request_id
    assert response.tier.name in TIER_NAMES
    assert response.hops
    assert all(h.tier in TIER_NAMES for h in response.hops)
    assert all(math.isfinite(h.cost_usd) and h.cost_usd >= 0 for h in response.hops)
    assert response.total_cost_usd == pytest.approx(sum(h.cost_usd for h in response.hops))
    assert response.judge_status != pb.JUDGE_STATUS_UNSPECIFIED
    assert response.degraded == bool(response.degraded_reasons)
    for hop in response.hops:
        if hop.outcome == pb.HOP_OUTCOME_SKIPPED:
            assert hop.error_kind in ("circuit_open", "budget", "deadline"), hop


def test_hostile_cascade_requests_get_a_response_or_a_clear_status(
    faulty_server: ServerThread,
) -> None:
    """Authorised callers sending arbitrary CascadeRequests, with arbitrary provider faults
    injected, get a valid response or a clear status code, never INTERNAL or UNKNOWN."""

    @FUZZ
    @given(request=_cascade_requests(OWN_TENANT), credential=VALID_CREDENTIAL, faults=FAULTS)
    def property_(
        request: pb.CascadeRequest,
        credential: tuple[tuple[str, str], ...],
        faults: tuple[tuple[str, str], ...],
    ) -> None:
        _check(_call(faulty_server, request, (*credential, *faults)), credential)

    property_()
    assert _health(faulty_server) == health_pb2.HealthCheckResponse.SERVING


def test_provider_faults_end_in_an_answer_or_a_clear_status(faulty_server: ServerThread) -> None:
    """Valid requests meeting every kind of provider fault (and the breakers those open) get
    an answer, possibly degraded, or UNAVAILABLE / FAILED_PRECONDITION / DEADLINE_EXCEEDED."""

    @settings(FUZZ, max_examples=150)
    @given(request=VALID_WITH_TIER, faults=FAULTS)
    def property_(request: pb.CascadeRequest, faults: tuple[tuple[str, str], ...]) -> None:
        credential = bearer_metadata(ACME_TOKEN)
        outcome = _call(faulty_server, request, (*credential, *faults))
        assert outcome.code in PROVIDER_OUTCOMES, outcome
        _check(outcome, credential)
        if outcome.response is not None:
            for hop in outcome.response.hops:
                event(f"hop {hop.error_kind or 'ok'}")

    property_()
    assert _health(faulty_server) == health_pb2.HealthCheckResponse.SERVING


def test_valid_cascade_requests_with_hostile_text_are_answered(server: ServerThread) -> None:
    """Requests valid in every field are answered, whatever Unicode their text holds."""

    @FUZZ
    @given(request=VALID_WITH_TIER, credential=VALID_CREDENTIAL)
    def property_(request: pb.CascadeRequest, credential: tuple[tuple[str, str], ...]) -> None:
        outcome = _call(server, request, credential)
        assert outcome.code == grpc.StatusCode.OK, (outcome, request)
        _check(outcome, credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_hostile_credentials_never_get_a_cascade_answer(server: ServerThread) -> None:
    """Any credential and tenant_id on a valid query: OK only for a valid token of that
    tenant (or the admin's), otherwise exactly UNAUTHENTICATED or PERMISSION_DENIED."""

    @FUZZ
    @given(query=NONBLANK, tenant=TENANT, credential=CREDENTIAL)
    def property_(query: str, tenant: str, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.CascadeRequest(query=query, tenant_id=tenant, judge_mode=pb.JUDGE_MODE_NEVER)
        outcome = _call(server, request, credential)
        token = _token(credential)
        if token not in (ACME_TOKEN, ADMIN_TOKEN):
            expected = grpc.StatusCode.UNAUTHENTICATED
        elif token == ACME_TOKEN and tenant not in ("", "acme"):
            expected = grpc.StatusCode.PERMISSION_DENIED
        elif len(tenant) > BASE.limits.max_id_chars:
            expected = grpc.StatusCode.INVALID_ARGUMENT
        else:
            expected = grpc.StatusCode.OK
        assert outcome.code == expected, outcome
        _check(outcome, credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_random_bytes_that_parse_are_handled_like_any_request(server: ServerThread) -> None:
    """Random bytes that parse as a CascadeRequest end OK or with a clear status code."""

    @FUZZ
    @given(data=st.binary(max_size=512).filter(_parses), credential=CREDENTIAL)
    def property_(data: bytes, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.CascadeRequest.FromString(data)
        _check(_call(server, request, credential), credential)

    property_()
    assert _health(server) == health_pb2.HealthCheckResponse.SERVING


def test_undecodable_bytes_are_invalid_argument(server: ServerThread) -> None:
    """Bytes that are not a CascadeRequest at all are INVALID_ARGUMENT, never INTERNAL."""

    @FUZZ
    @given(data=st.binary(min_size=1, max_size=512).filter(lambda d: not _parses(d)))
    def property_(data: bytes) -> None:
        outcome = _call(server, data, bearer_metadata(ACME_TOKEN))
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
        assert "Traceback" not in outcome.details

    property_()


def test_short_client_deadlines_end_ok_or_deadline_exceeded(server: ServerThread) -> None:
    """A caller's deadline, however short, ends a call OK or DEADLINE_EXCEEDED, cleanly."""

    @FUZZ
    @given(
        request=VALID_WITH_TIER,
        timeout=st.sampled_from([1e-6, 0.001, 0.005, 0.02, 0.1]),
    )
    def property_(request: pb.CascadeRequest, timeout: float) -> None:
        outcome = _call(server, request, bearer_metadata(ACME_TOKEN), timeout=timeout)
        assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), outcome
        _check(outcome, bearer_metadata(ACME_TOKEN))

    property_()


@pytest.mark.parametrize("which", ["server", "faulty_server"])
def test_servers_still_serve_after_the_fuzzing(which: str, request: pytest.FixtureRequest) -> None:
    """After every hostile call above, health is SERVING and a plain Cascade is answered."""
    thread: ServerThread = request.getfixturevalue(which)
    assert _health(thread) == health_pb2.HealthCheckResponse.SERVING
    plain = pb.CascadeRequest(query="What is the capital of France?", start_tier="expensive")
    outcome = _call(thread, plain, bearer_metadata(ACME_TOKEN))
    assert outcome.code == grpc.StatusCode.OK, outcome
