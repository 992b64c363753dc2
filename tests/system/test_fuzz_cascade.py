"""Property tests: arbitrary and hostile CascadeRequests against a running server.

As in tests/system/test_fuzz_route.py (both use the server thread and strategies of
tests/fuzzing.py), the server runs on its own event loop in a background thread with
authentication on; its Cascade calls go through the replay backend with no simulated latency
and synthetic answers. Hostile fault-injection metadata makes the model backend fail in every
way it can, so circuit breakers open and close along the way. The only outcomes allowed are
a valid response or a clear status code, never INTERNAL or UNKNOWN, and the server must still
report SERVING and answer afterwards.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.fuzzing import (
    ACME_TOKEN,
    ADMIN_TOKEN,
    ASCII,
    CREDENTIAL,
    ID,
    MESSAGES,
    METADATA,
    NONBLANK,
    OWN_TENANT,
    SHORT_ID,
    SHORT_TEXT,
    STRATEGY,
    TENANT,
    TEXT,
    UNICODE,
    VALID_BODY,
    VALID_CREDENTIAL,
    Outcome,
    ServerThread,
    auth_status,
    call,
    enum_field,
    fuzz_settings,
    health_status,
    mostly,
    parses_as,
    serving,
    token_of,
)
from tests.helpers import make_settings
from tierroute.api.security import bearer_metadata
from tierroute.v1 import tierroute_pb2 as pb

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
FUZZ = fuzz_settings(max_examples=60)
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
# A hop is a tier's call or, when the value policy plans an agreement check, the probe's.
HOP_NAMES = [*TIER_NAMES, *(p.label for p in BASE.probes)]
MAX_TOKENS = BASE.cascade.max_output_tokens
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server for calls without injected faults."""
    with serving(tmp_path_factory.mktemp("auth"), SERVER_ENV) as thread:
        yield thread


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own for calls that inject provider faults (and so open breakers)."""
    with serving(tmp_path_factory.mktemp("auth"), SERVER_ENV) as thread:
        yield thread


def _cascade(
    server: ServerThread,
    request: pb.CascadeRequest | bytes,
    metadata: tuple[tuple[str, str], ...],
    timeout: float = DEADLINE_S,
) -> Outcome[pb.CascadeResponse]:
    """One Cascade call; raw bytes are sent as they are."""
    return call(server, "Cascade", request, metadata, timeout)


def _health(server: ServerThread) -> int:
    """The server's health status, bounded by this module's deadline."""
    return health_status(server, DEADLINE_S)


# --- strategies -------------------------------------------------------------------------


START_TIER = mostly(
    st.sampled_from(["", *TIER_NAMES]),
    st.one_of(ID, st.sampled_from(["CHEAP", " cheap", "gold", "cheap\x00", "mid\u200b"])),
)
OUTPUT_TOKENS = mostly(
    st.sampled_from([0, 1, 16, MAX_TOKENS]),
    st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, MAX_TOKENS + 1, 2**31 - 1])),
)
SPECULATION = enum_field([0, pb.SPECULATION_MODE_OFF, pb.SPECULATION_MODE_ON])
JUDGE_MODE = enum_field([0, pb.JUDGE_MODE_ALWAYS, pb.JUDGE_MODE_NEVER])
DOUBLE = mostly(
    st.floats(0.0, 1.0),
    st.sampled_from([-0.0, -1.0, 1.0 + 1e-12, math.nan, math.inf, -math.inf, 5e-324]),
)
POLICY = st.builds(
    pb.RoutingPolicy,
    rule=enum_field([0, pb.DECISION_RULE_CALIBRATED, pb.DECISION_RULE_PUBLISHED]),
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
            query=mostly(st.just(""), SHORT_TEXT),
            messages=MESSAGES,
            **common,
        ),
    )


def _valid(body: dict[str, Any], start_tier: str, **fields: Any) -> pb.CascadeRequest:
    request = pb.CascadeRequest(**body, **fields)
    if request.request_id:
        # A request id is an idempotency key: one reused for another request is refused,
        # so each example's id is its own (hostile text kept, a unique tail added).
        request.request_id = f"{request.request_id[:90]}-{uuid.uuid4().hex}"
    # Self-routing always starts on the cheapest tier: any start tier contradicts it.
    if request.strategy != pb.STRATEGY_SELF_ROUTING:
        request.start_tier = start_tier
    return request


# Requests valid in every field, with hostile text wherever text goes.
VALID_WITH_TIER = st.builds(
    _valid,
    VALID_BODY,
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


_parses = parses_as(pb.CascadeRequest)


# --- properties -------------------------------------------------------------------------


def _check(outcome: Outcome[pb.CascadeResponse], credential: tuple[tuple[str, str], ...]) -> None:
    # Shown by --hypothesis-show-statistics: how many examples ended each way.
    event(outcome.code.name)
    assert outcome.code == grpc.StatusCode.OK or outcome.code in REFUSALS, outcome
    if outcome.code != grpc.StatusCode.OK:
        assert "Traceback" not in outcome.details
        return
    assert token_of(credential) in (ACME_TOKEN, ADMIN_TOKEN)
    response = outcome.response
    if response is None:
        return
    assert response.request_id
    assert response.tier.name in TIER_NAMES
    assert response.hops
    assert all(h.tier in HOP_NAMES for h in response.hops)
    assert all(math.isfinite(h.cost_usd) and h.cost_usd >= 0 for h in response.hops)
    assert response.total_cost_usd == pytest.approx(sum(h.cost_usd for h in response.hops))
    assert response.judge_status != pb.JUDGE_STATUS_UNSPECIFIED
    assert response.degraded == bool(response.degraded_reasons)
    for hop in response.hops:
        if hop.outcome == pb.HOP_OUTCOME_SKIPPED:
            assert hop.error_kind in (
                "circuit_open",
                "budget",
                "deadline",
                "cost_ceiling",
                "tenant_budget",
            ), hop


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
        _check(_cascade(faulty_server, request, (*credential, *faults)), credential)

    property_()
    assert _health(faulty_server) == SERVING


def test_provider_faults_end_in_an_answer_or_a_clear_status(faulty_server: ServerThread) -> None:
    """Valid requests meeting every kind of provider fault (and the breakers those open) get
    an answer, possibly degraded, or UNAVAILABLE / FAILED_PRECONDITION / DEADLINE_EXCEEDED."""

    @settings(FUZZ, max_examples=150)
    @given(request=VALID_WITH_TIER, faults=FAULTS)
    def property_(request: pb.CascadeRequest, faults: tuple[tuple[str, str], ...]) -> None:
        credential = bearer_metadata(ACME_TOKEN)
        outcome = _cascade(faulty_server, request, (*credential, *faults))
        assert outcome.code in PROVIDER_OUTCOMES, outcome
        _check(outcome, credential)
        if outcome.response is not None:
            for hop in outcome.response.hops:
                event(f"hop {hop.error_kind or 'ok'}")

    property_()
    assert _health(faulty_server) == SERVING


def test_valid_cascade_requests_with_hostile_text_are_answered(server: ServerThread) -> None:
    """Requests valid in every field are answered, whatever Unicode their text holds."""

    @FUZZ
    @given(request=VALID_WITH_TIER, credential=VALID_CREDENTIAL)
    def property_(request: pb.CascadeRequest, credential: tuple[tuple[str, str], ...]) -> None:
        outcome = _cascade(server, request, credential)
        assert outcome.code == grpc.StatusCode.OK, (outcome, request)
        _check(outcome, credential)

    property_()
    assert _health(server) == SERVING


def test_hostile_credentials_never_get_a_cascade_answer(server: ServerThread) -> None:
    """Any credential and tenant_id on a valid query: OK only for a valid token of that
    tenant (or the admin's), otherwise exactly UNAUTHENTICATED or PERMISSION_DENIED."""

    @FUZZ
    @given(query=NONBLANK, tenant=TENANT, credential=CREDENTIAL)
    def property_(query: str, tenant: str, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.CascadeRequest(query=query, tenant_id=tenant, judge_mode=pb.JUDGE_MODE_NEVER)
        outcome = _cascade(server, request, credential)
        assert outcome.code == auth_status(credential, tenant), outcome
        _check(outcome, credential)

    property_()
    assert _health(server) == SERVING


def test_random_bytes_that_parse_are_handled_like_any_request(server: ServerThread) -> None:
    """Random bytes that parse as a CascadeRequest end OK or with a clear status code."""

    @FUZZ
    @given(data=st.binary(max_size=512).filter(_parses), credential=CREDENTIAL)
    def property_(data: bytes, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.CascadeRequest.FromString(data)
        _check(_cascade(server, request, credential), credential)

    property_()
    assert _health(server) == SERVING


def test_undecodable_bytes_are_invalid_argument(server: ServerThread) -> None:
    """Bytes that are not a CascadeRequest at all are INVALID_ARGUMENT, never INTERNAL."""

    @FUZZ
    @given(data=st.binary(min_size=1, max_size=512).filter(lambda d: not _parses(d)))
    def property_(data: bytes) -> None:
        outcome = _cascade(server, data, bearer_metadata(ACME_TOKEN))
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
        outcome = _cascade(server, request, bearer_metadata(ACME_TOKEN), timeout=timeout)
        assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), outcome
        _check(outcome, bearer_metadata(ACME_TOKEN))

    property_()


@pytest.mark.parametrize("which", ["server", "faulty_server"])
def test_servers_still_serve_after_the_fuzzing(which: str, request: pytest.FixtureRequest) -> None:
    """After every hostile call above, health is SERVING and a plain Cascade is answered."""
    thread: ServerThread = request.getfixturevalue(which)
    assert _health(thread) == SERVING
    plain = pb.CascadeRequest(query="What is the capital of France?", start_tier="expensive")
    outcome = _cascade(thread, plain, bearer_metadata(ACME_TOKEN))
    assert outcome.code == grpc.StatusCode.OK, outcome
