"""Property tests: arbitrary and hostile RouteRequests against one running server.

The server (authentication on, real limits) runs on its own event loop in a background
thread, started once for the module (tests/fuzzing.py); each Hypothesis example is one real
call over a real channel. The only outcomes allowed are a valid response or a clear refusal,
never INTERNAL or UNKNOWN, and the server must still report SERVING afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzzing import (
    ACME_TOKEN,
    ADMIN_TOKEN,
    CREDENTIAL,
    DEFAULTS,
    ID,
    LIMITS,
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
from tierroute.api.security import bearer_metadata
from tierroute.v1 import tierroute_pb2 as pb

REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
FUZZ = fuzz_settings(max_examples=150)
TIER_NAMES = [t.name for t in DEFAULTS.tiers]
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the module, with bearer tokens on and the bundled model if built."""
    with serving(tmp_path_factory.mktemp("auth")) as thread:
        yield thread


def _route(
    server: ServerThread, request: pb.RouteRequest | bytes, metadata: tuple[tuple[str, str], ...]
) -> Outcome[pb.RouteResponse]:
    """One Route call; raw bytes are sent as they are."""
    return call(server, "Route", request, metadata)


# --- strategies -------------------------------------------------------------------------

DOUBLE = mostly(
    st.floats(0.0, 1.0),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([-0.0, 1.0 + 1e-12, -1.0, math.nan, math.inf, -math.inf, 5e-324]),
    ),
)
POLICY = st.builds(
    pb.RoutingPolicy,
    rule=enum_field([0, pb.DECISION_RULE_CALIBRATED, pb.DECISION_RULE_PUBLISHED]),
    quality_floor=DOUBLE,
    max_cost_usd=DOUBLE,
)


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
            query=mostly(st.just(""), SHORT_TEXT),
            messages=MESSAGES,
            strategy=STRATEGY,
            tenant_id=tenant,
            session_id=ID,
            policy=POLICY,
        ),
    )


# Requests that are valid in every field, with hostile text wherever text goes.
VALID_REQUEST = st.builds(
    lambda body, **fields: pb.RouteRequest(**body, **fields),
    VALID_BODY,
    strategy=st.sampled_from([0, pb.STRATEGY_HEURISTIC, pb.STRATEGY_CLASSIFIER]),
    tenant_id=OWN_TENANT,
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
_parses = parses_as(pb.RouteRequest)


# --- properties -------------------------------------------------------------------------


def _check(
    outcome: Outcome[pb.RouteResponse], request: pb.RouteRequest | None, credential: Any
) -> None:
    # Shown by --hypothesis-show-statistics: how many examples got past each gate.
    event(outcome.code.name)
    assert outcome.code == grpc.StatusCode.OK or outcome.code in REFUSALS, outcome
    if outcome.code != grpc.StatusCode.OK:
        assert "Traceback" not in outcome.details
        return
    # Nothing gets through without a valid token, or with a token for another tenant.
    token = token_of(credential)
    assert token in (ACME_TOKEN, ADMIN_TOKEN)
    if request is not None and token == ACME_TOKEN:
        assert request.tenant_id in ("", "acme")
    response = outcome.response
    if response is not None:
        assert response.tier.name in TIER_NAMES
        assert [s.tier for s in response.scores] == TIER_NAMES
        assert all(math.isfinite(s.probability) for s in response.scores)
        assert math.isfinite(response.estimated_cost_usd)
        assert response.request_id


def test_hostile_content_gets_a_response_or_a_clear_refusal(server: ServerThread) -> None:
    """Authorised callers sending arbitrary RouteRequests get a valid response or a
    client-error status, never INTERNAL or UNKNOWN, and the server stays up."""

    @FUZZ
    @given(request=_requests(OWN_TENANT), credential=VALID_CREDENTIAL)
    def property_(request: pb.RouteRequest, credential: tuple[tuple[str, str], ...]) -> None:
        _check(_route(server, request, credential), request, credential)

    property_()
    assert health_status(server) == SERVING


def test_valid_requests_with_hostile_text_are_answered(server: ServerThread) -> None:
    """Requests valid in every field are answered, whatever Unicode (NUL, bidi controls,
    combining marks, emoji, non-characters) their text holds."""

    @FUZZ
    @given(request=VALID_REQUEST, credential=VALID_CREDENTIAL)
    def property_(request: pb.RouteRequest, credential: tuple[tuple[str, str], ...]) -> None:
        outcome = _route(server, request, credential)
        assert outcome.code == grpc.StatusCode.OK, outcome
        _check(outcome, request, credential)

    property_()
    assert health_status(server) == SERVING


def test_hostile_credentials_never_get_through(server: ServerThread) -> None:
    """Any credential and tenant_id on a valid query: OK only for a valid token of that
    tenant (or the admin's), otherwise exactly UNAUTHENTICATED or PERMISSION_DENIED."""

    @FUZZ
    @given(query=NONBLANK, tenant=TENANT, credential=CREDENTIAL)
    def property_(query: str, tenant: str, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.RouteRequest(query=query, tenant_id=tenant)
        outcome = _route(server, request, credential)
        assert outcome.code == auth_status(credential, tenant), outcome
        _check(outcome, request, credential)

    property_()
    assert health_status(server) == SERVING


def test_random_bytes_that_parse_are_handled_like_any_request(server: ServerThread) -> None:
    """Random bytes that parse as a RouteRequest end OK or with a client-error status."""

    @FUZZ
    @given(data=st.binary(max_size=512).filter(_parses), credential=CREDENTIAL)
    def property_(data: bytes, credential: tuple[tuple[str, str], ...]) -> None:
        request = pb.RouteRequest.FromString(data)
        _check(_route(server, request, credential), request, credential)

    property_()
    assert health_status(server) == SERVING


def test_undecodable_bytes_are_invalid_argument(server: ServerThread) -> None:
    """Bytes that are not a RouteRequest at all never become INTERNAL or UNKNOWN."""

    @FUZZ
    @given(data=st.binary(min_size=1, max_size=512).filter(lambda d: not _parses(d)))
    def property_(data: bytes) -> None:
        outcome = _route(server, data, bearer_metadata(ACME_TOKEN))
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
        assert "Traceback" not in outcome.details

    property_()
    assert health_status(server) == SERVING


def test_server_reports_serving_after_the_fuzzing(server: ServerThread) -> None:
    """After every hostile call above, health checking still answers SERVING."""
    assert health_status(server) == SERVING
    assert server.running is not None
    assert server.running.server.admission.in_flight == 0
