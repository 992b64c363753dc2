"""The Python client package (`clients/python`) against the real server, sync and asyncio."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import socket
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from tierroute_client import (
    AsyncTierRouteClient,
    RetryPolicy,
    TierRouteClient,
    TierRouteClientError,
    resolve_target,
    service_config,
)
from tierroute_client._channel import channel_spec
from tierroute_client._requests import route_request
from tierroute_client._results import CascadeResult, RouteResult
from tierroute_client.v1 import tierroute_pb2 as client_pb

from tests.helpers import make_settings, running_server
from tests.pki import Pki, make_pki
from tierroute.api.security import hash_token
from tierroute.api.server import TierRouteServer
from tierroute.api.status import MethodHandler, ServerInterceptor
from tierroute.settings import Settings
from tierroute.testing import CallGate, StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

EASY = StaticScorer((0.9, 0.07, 0.03))
HARD = StaticScorer((0.1, 0.2, 0.7))
ROUTE = "/tierroute.v1.TierRouter/Route"
CASCADE = "/tierroute.v1.TierRouter/Cascade"
FEEDBACK = "/tierroute.v1.TierRouter/Feedback"
TOKEN = "client-test-token-8c1e"
# Bounds only a broken test: every expected outcome arrives far sooner.
LONG = 30.0


def _fast_settings(extra: dict[str, str] | None = None) -> Settings:
    # The replay backend answers at once with synthetic answers (no data file).
    return make_settings({"TIERROUTE_REPLAY_TIME_SCALE": "0", **(extra or {})})


class Scripted(ServerInterceptor):
    """Counts calls to one method and fails the first `fail_first` of them with `code`."""

    def __init__(
        self,
        method: str,
        fail_first: int = 0,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        self.method = method
        self.fail_first = fail_first
        self.code = code
        self.calls = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if handler_call_details.method != self.method or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def scripted(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            self.calls += 1
            if self.calls <= self.fail_first:
                await context.abort(self.code, "scripted failure")
            return await inner(request, context)  # type: ignore[arg-type]

        return grpc.unary_unary_rpc_method_handler(
            scripted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class FeedbackRecorder(ServerInterceptor):
    """Answers Feedback itself and keeps each request, so tests see what the client sent."""

    def __init__(self) -> None:
        self.requests: list[pb.FeedbackRequest] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if handler_call_details.method != FEEDBACK:
            return handler

        async def record(
            request: pb.FeedbackRequest, context: aio.ServicerContext[Any, Any]
        ) -> pb.FeedbackResponse:
            self.requests.append(request)
            return pb.FeedbackResponse(request_id=request.request_id)

        return grpc.unary_unary_rpc_method_handler(
            record,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@contextmanager
def server_thread(
    settings: Settings | None = None,
    *,
    scorer: StaticScorer = EASY,
    interceptors: tuple[ServerInterceptor, ...] = (),
) -> Iterator[int]:
    """The real server on its own event loop in a background thread, for blocking clients."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tierroute-test-server")
    thread.start()

    async def start() -> tuple[TierRouteServer, int]:
        # Built inside the loop that will run it, so its asyncio objects belong there.
        server = TierRouteServer(
            settings or _fast_settings(),
            scorer=scorer,
            environ={"TIERROUTE_DATA": "/nonexistent/tierroute-test-data"},
            interceptors=interceptors,
        )
        return server, await server.start("127.0.0.1", 0)

    server: TierRouteServer | None = None
    try:
        server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(LONG)
        yield port
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(LONG)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LONG)
        loop.close()


@pytest.fixture
def dead_address() -> Iterator[str]:
    """An address on loopback that refuses connections: bound, so no one else takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def client_for(port: int, **kwargs: Any) -> AsyncIterator[AsyncTierRouteClient]:
    """An asyncio client to 127.0.0.1:port."""
    async with AsyncTierRouteClient(f"127.0.0.1:{port}", **kwargs) as client:
        yield client


# --- channel configuration ----------------------------------------------------------------


def test_list_of_ipv4_addresses_becomes_one_ipv4_target() -> None:
    """Several `ip:port` addresses become one `ipv4:` target that round_robin spreads over."""
    assert resolve_target(["127.0.0.1:5001", "127.0.0.1:5002"]) == (
        "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    )


def test_list_of_ipv6_addresses_becomes_one_ipv6_target() -> None:
    """Bracketed IPv6 literals become one `ipv6:` target."""
    assert resolve_target(["[::1]:5001", "[::1]:5002"]) == "ipv6:[::1]:5001,[::1]:5002"


def test_target_string_passes_through() -> None:
    """A target string (a DNS name, a scheme) is used as given."""
    assert resolve_target("dns:///tierroute-headless:50051") == "dns:///tierroute-headless:50051"


@pytest.mark.parametrize(
    "addresses",
    [["svc-a:50051", "svc-b:50051"], ["127.0.0.1:1", "[::1]:2"], [], ["127.0.0.1"] * 2],
)
def test_list_of_host_names_or_mixed_addresses_is_refused(addresses: list[str]) -> None:
    """A list that gRPC's static schemes cannot take is a ValueError naming the alternative."""
    with pytest.raises(ValueError, match="target"):
        resolve_target(addresses)


def test_service_config_retries_route_only() -> None:
    """By default the service config retries Route on UNAVAILABLE and RESOURCE_EXHAUSTED."""
    config = service_config(RetryPolicy())
    [method] = config["methodConfig"]
    assert method["name"] == [{"service": "tierroute.v1.TierRouter", "method": "Route"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
    assert method["retryPolicy"]["initialBackoff"] == "0.1s"
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]


def test_service_config_retries_cascade_when_asked() -> None:
    """`retry_cascade=True` adds Cascade to the retried methods."""
    config = service_config(RetryPolicy(), retry_cascade=True)
    names = [n["method"] for n in config["methodConfig"][0]["name"]]
    assert names == ["Route", "Cascade"]


def test_service_config_without_retries_has_no_method_config() -> None:
    """`retry=None` leaves balancing and health checking only."""
    assert set(service_config(None)) == {"loadBalancingConfig", "healthCheckConfig"}


def test_service_config_checks_replica_health() -> None:
    """The client skips replicas whose TierRouter health is NOT_SERVING (draining)."""
    config = service_config(RetryPolicy())
    assert config["healthCheckConfig"] == {"serviceName": "tierroute.v1.TierRouter"}


def test_retry_policy_rejects_unknown_status_codes() -> None:
    """A retryable code that gRPC does not know is a ValueError."""
    with pytest.raises(ValueError, match="retryable_status_codes"):
        RetryPolicy(retryable_status_codes=("SOMETIMES",))


def test_token_over_plain_text_needs_explicit_consent() -> None:
    """A bearer token without TLS is refused unless allow_insecure_token is set."""
    with pytest.raises(ValueError, match="tls=True"):
        TierRouteClient("127.0.0.1:1", token=TOKEN)


def test_client_repr_never_shows_the_token() -> None:
    """The client's repr names the target and never the token."""
    with TierRouteClient("127.0.0.1:1", token=TOKEN, allow_insecure_token=True) as client:
        assert TOKEN not in repr(client)
        assert "127.0.0.1:1" in repr(client)


def test_unknown_enum_value_from_a_newer_server_comes_through_as_a_number() -> None:
    """An enum value the client predates is kept as its number instead of failing."""
    result = RouteResult.from_pb(pb.RouteResponse(strategy=42))  # type: ignore[arg-type]
    assert result.strategy == "42"


# --- asyncio client -------------------------------------------------------------------------


async def test_async_route_returns_a_typed_decision() -> None:
    """route() returns tier, model, scores by tier, thresholds and reason codes."""
    async with running_server(scorer=HARD) as s, client_for(s.port) as client:
        r = await client.route("prove it", strategy="classifier", request_id="req-1")
    assert (r.tier, r.tier_index, r.strategy, r.rule) == (
        "expensive",
        2,
        "classifier",
        "calibrated",
    )
    assert r.request_id == "req-1"
    assert r.model
    assert r.scores == pytest.approx({"cheap": 0.1, "mid": 0.2, "expensive": 0.7})
    assert r.thresholds["max_risk_cheap"] == pytest.approx(0.3)
    assert r.reasons[0].code == "RISK_ABOVE_THRESHOLD"
    assert r.model_version == "static-test"


async def test_async_route_sends_messages_and_policy() -> None:
    """Chat messages and a per-request policy reach the server."""
    async with running_server(scorer=StaticScorer((0.6, 0.33, 0.07))) as s, client_for(s.port) as c:
        r = await c.route(
            messages=[("system", "be brief"), ("user", "What is 2 + 2?")], rule="published"
        )
    assert (r.tier, r.rule) == ("mid", "published")


async def test_async_heuristic_route_reports_features() -> None:
    """The heuristic's shape signals come back as a Features dataclass."""
    async with running_server(scorer=EASY) as s, client_for(s.port) as client:
        r = await client.route("What is the capital of France?", strategy="heuristic")
    assert r.tier == "cheap"
    assert r.features.query_type == "factual"
    assert [x.code for x in r.reasons] == ["SIMPLE_QUERY"]


async def test_async_cascade_returns_answer_and_hops() -> None:
    """cascade() returns the answer, every hop with its verdict, and the judge status."""
    async with (
        running_server(_fast_settings(), scorer=EASY) as s,
        client_for(s.port) as client,
    ):
        r = await client.cascade("Tell me about otters.", judge="always", speculation=False)
    assert r.answer
    assert r.hops[0].role == "answer"
    assert r.hops[0].tier == "cheap"
    judges = [h for h in r.hops if h.role == "judge"]
    assert judges
    assert all(h.verdict in {"pass", "fail", "unavailable"} for h in judges)
    assert r.judge_status in {"passed", "not_required", "failed", "unavailable"}
    assert r.total_cost_usd == pytest.approx(sum(h.cost_usd for h in r.hops))
    assert r.route is not None
    assert r.route.tier == "cheap"


async def test_async_bad_input_raises_client_error_with_the_status_code() -> None:
    """A request the server rejects raises TierRouteClientError carrying INVALID_ARGUMENT."""
    async with running_server(scorer=EASY) as s, client_for(s.port) as client:
        with pytest.raises(TierRouteClientError) as err:
            await client.route("   ")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not err.value.transient
    assert isinstance(err.value.__cause__, grpc.RpcError)


async def test_async_unknown_option_value_is_a_value_error() -> None:
    """An unknown strategy name fails in the client before any call."""
    async with client_for(1) as client:
        with pytest.raises(ValueError, match="strategy"):
            await client.route("q", strategy="astrology")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_async_route_is_retried_through_the_service_config(code: grpc.StatusCode) -> None:
    """A Route that fails once with a retryable code succeeds on gRPC's own retry."""
    scripted = Scripted(ROUTE, fail_first=1, code=code)
    async with (
        running_server(scorer=EASY, interceptors=[scripted]) as s,
        client_for(s.port) as client,
    ):
        r = await client.route("hello")
    assert r.tier == "cheap"
    assert scripted.calls == 2


async def test_async_route_gives_up_after_max_attempts() -> None:
    """A Route that keeps failing is tried max_attempts times, then raises UNAVAILABLE."""
    scripted = Scripted(ROUTE, fail_first=100)
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.01)
    async with (
        running_server(scorer=EASY, interceptors=[scripted]) as s,
        client_for(s.port, retry=retry) as client,
    ):
        with pytest.raises(TierRouteClientError) as err:
            await client.route("hello")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.transient
    assert scripted.calls == 3


async def test_async_non_retryable_code_is_not_retried() -> None:
    """A code outside the retry policy (INTERNAL) reaches the caller after one attempt."""
    scripted = Scripted(ROUTE, fail_first=1, code=grpc.StatusCode.INTERNAL)
    async with (
        running_server(scorer=EASY, interceptors=[scripted]) as s,
        client_for(s.port) as client,
    ):
        with pytest.raises(TierRouteClientError) as err:
            await client.route("hello")
    assert err.value.code == grpc.StatusCode.INTERNAL
    assert scripted.calls == 1


async def test_async_cascade_is_not_retried_by_default() -> None:
    """Cascade is not idempotent (it pays for model calls), so one failure reaches the caller."""
    scripted = Scripted(CASCADE, fail_first=1)
    async with (
        running_server(_fast_settings(), scorer=EASY, interceptors=[scripted]) as s,
        client_for(s.port) as client,
    ):
        with pytest.raises(TierRouteClientError) as err:
            await client.cascade("Tell me about otters.", judge="never")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert scripted.calls == 1


async def test_async_cascade_is_retried_when_asked() -> None:
    """With retry_cascade=True a Cascade that fails once with UNAVAILABLE succeeds."""
    scripted = Scripted(CASCADE, fail_first=1)
    async with (
        running_server(_fast_settings(), scorer=EASY, interceptors=[scripted]) as s,
        client_for(s.port, retry_cascade=True) as client,
    ):
        r = await client.cascade("Tell me about otters.", judge="never")
    assert r.answer
    assert scripted.calls == 2


async def test_async_default_deadline_bounds_every_call() -> None:
    """A call the server never answers ends with DEADLINE_EXCEEDED at the default deadline."""
    gate = CallGate()
    async with running_server(scorer=EASY, interceptors=[gate]) as s:
        try:
            async with client_for(s.port, deadline_s=0.2) as client:
                with pytest.raises(TierRouteClientError) as err:
                    await client.route("hello")
        finally:
            gate.release()
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_async_round_robin_spreads_calls_over_every_server() -> None:
    """Over two live servers, calls reach both (pick_first would pin one server)."""
    first, second = Scripted(ROUTE), Scripted(ROUTE)
    async with (
        running_server(scorer=EASY, interceptors=[first]) as a,
        running_server(scorer=EASY, interceptors=[second]) as b,
        AsyncTierRouteClient([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as client,
    ):
        for _ in range(200):
            await client.route("hello")
            if first.calls and second.calls:
                break
    assert first.calls > 0
    assert second.calls > 0


async def test_async_round_robin_skips_a_dead_address(dead_address: str) -> None:
    """With one address refusing connections, every call still succeeds on the live one."""
    async with (
        running_server(scorer=EASY) as s,
        AsyncTierRouteClient([dead_address, f"127.0.0.1:{s.port}"]) as client,
    ):
        results = [await client.route("hello") for _ in range(20)]
    assert {r.tier for r in results} == {"cheap"}


async def test_async_feedback_sends_rating_and_correctness() -> None:
    """feedback() sends the request id and rating, and `correct` only when given."""
    recorder = FeedbackRecorder()
    async with (
        running_server(scorer=EASY, interceptors=[recorder]) as s,
        client_for(s.port) as client,
    ):
        recorded = await client.feedback("req-9", rating=4, tenant_id="acme")
        await client.feedback("req-9", correct=False)
    assert recorded == "req-9"
    first, second = recorder.requests
    assert (first.request_id, first.rating, first.tenant_id) == ("req-9", 4, "acme")
    assert not first.HasField("correct")
    assert second.HasField("correct")
    assert second.correct is False


# --- TLS and bearer tokens -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA and server certificate."""
    return make_pki(tmp_path_factory.mktemp("client-pki"))


def _auth_settings(tmp_path: Path, pki: Pki | None) -> Settings:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tenants": {"acme": [hash_token(TOKEN)]}}))
    env = {"TIERROUTE_AUTH_TOKENS_FILE": str(tokens)}
    if pki is not None:
        env |= {
            "TIERROUTE_TLS_CERT_FILE": str(pki.server_cert),
            "TIERROUTE_TLS_KEY_FILE": str(pki.server_key),
        }
    return make_settings(env)


async def test_tls_and_token_reach_an_authenticating_server(pki: Pki, tmp_path: Path) -> None:
    """Over TLS the token travels as call credentials and the server accepts it."""
    async with (
        running_server(_auth_settings(tmp_path, pki), scorer=EASY) as s,
        client_for(s.port, tls=True, root_certificates=pki.ca.read_bytes(), token=TOKEN) as client,
    ):
        r = await client.route("hello", tenant_id="acme")
    assert r.tier == "cheap"


async def test_tls_without_token_is_unauthenticated(pki: Pki, tmp_path: Path) -> None:
    """Without a token the authenticating server refuses with UNAUTHENTICATED."""
    async with (
        running_server(_auth_settings(tmp_path, pki), scorer=EASY) as s,
        client_for(s.port, tls=True, root_certificates=pki.ca.read_bytes()) as client,
    ):
        with pytest.raises(TierRouteClientError) as err:
            await client.route("hello")
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_insecure_token_is_sent_as_metadata_when_allowed(tmp_path: Path) -> None:
    """With allow_insecure_token the token goes as `authorization` metadata over plain text."""
    async with (
        running_server(_auth_settings(tmp_path, None), scorer=EASY) as s,
        client_for(s.port, token=TOKEN, allow_insecure_token=True) as client,
    ):
        r = await client.route("hello")
    assert r.tier == "cheap"


# --- blocking client -------------------------------------------------------------------------


def test_sync_route_and_cascade() -> None:
    """The blocking client routes and answers through a real server."""
    with server_thread() as port, TierRouteClient(f"127.0.0.1:{port}") as client:
        decision = client.route("What is the capital of France?", strategy="heuristic")
        answer = client.cascade("Tell me about otters.", judge="never")
    assert decision.tier == "cheap"
    assert answer.answer
    assert answer.judge_status == "sampled_out"


def test_sync_error_carries_the_status_code() -> None:
    """A rejected call raises TierRouteClientError with INVALID_ARGUMENT."""
    with (
        server_thread() as port,
        TierRouteClient(f"127.0.0.1:{port}") as client,
        pytest.raises(TierRouteClientError) as err,
    ):
        client.cascade("q", start_tier="gold")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "start_tier" in err.value.details


def test_sync_route_is_retried_through_the_service_config() -> None:
    """A Route that fails once with UNAVAILABLE succeeds on gRPC's retry, blocking client too."""
    scripted = Scripted(ROUTE, fail_first=1)
    with (
        server_thread(interceptors=(scripted,)) as port,
        TierRouteClient(f"127.0.0.1:{port}") as client,
    ):
        assert client.route("hello").tier == "cheap"
    assert scripted.calls == 2


def test_sync_round_robin_over_a_dead_and_a_live_address(dead_address: str) -> None:
    """The blocking client with one dead and one live replica still answers every call."""
    with (
        server_thread() as port,
        TierRouteClient([dead_address, f"127.0.0.1:{port}"]) as client,
    ):
        tiers = {client.route("hello").tier for _ in range(20)}
    assert tiers == {"cheap"}


def test_sync_feedback_returns_the_request_id() -> None:
    """feedback() on the blocking client returns the id the server recorded."""
    recorder = FeedbackRecorder()
    with (
        server_thread(interceptors=(recorder,)) as port,
        TierRouteClient(f"127.0.0.1:{port}") as client,
    ):
        assert client.feedback("req-3", rating=5, correct=True) == "req-3"
    assert recorder.requests[0].correct is True


def test_caller_channel_options_replace_the_defaults() -> None:
    """A channel option the caller passes replaces the client's default of the same name."""
    spec = channel_spec(
        "127.0.0.1:1",
        tls=False,
        root_certificates=None,
        client_certificate=None,
        token=None,
        allow_insecure_token=False,
        retry=RetryPolicy(),
        retry_cascade=False,
        options=[("grpc.service_config", "{}")],
    )
    values = [v for k, v in spec.options if k == "grpc.service_config"]
    assert values == ["{}"]


CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"

# Run in a fresh interpreter where the server package cannot be imported: a meta-path finder
# refuses `tierroute` and everything under it (the editable install puts service/ on sys.path,
# so only a finder keeps it out). The client then builds requests and converts responses
# with its own generated code, opens a channel with its stub, and prints what it saw.
_WITHOUT_SERVER = textwrap.dedent(
    """
    import importlib.abc
    import importlib.util
    import json
    import sys

    # The server is installed here, so refusing it below is what the run proves.
    assert importlib.util.find_spec("tierroute") is not None


    class NoServer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tierroute" or name.startswith("tierroute."):
                raise ModuleNotFoundError(f"no server package here: {name}", name=name)
            return None


    sys.meta_path.insert(0, NoServer())
    try:
        import tierroute
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("the finder let the server package through")

    import tierroute_client
    from tierroute_client._requests import cascade_request, route_request
    from tierroute_client._results import CascadeResult, RouteResult
    from tierroute_client.v1 import tierroute_pb2 as pb

    request = route_request("What is 2 + 2?", {"strategy": "classifier", "tenant_id": "t1"})
    wire = pb.RouteRequest.FromString(request.SerializeToString())
    cascade = cascade_request("Why?", {"judge": "always", "speculation": False})
    route = pb.RouteResponse(
        request_id="r1",
        tier=pb.TierInfo(name="mid", model="claude-sonnet-4-6", index=1),
        strategy=pb.STRATEGY_CLASSIFIER,
        rule=pb.DECISION_RULE_CALIBRATED,
        scores=[
            pb.TierScore(tier="cheap", probability=0.3),
            pb.TierScore(tier="mid", probability=0.7),
        ],
        reasons=[pb.Reason(code=pb.REASON_CODE_RISK_WITHIN_THRESHOLD, detail="ok")],
    )
    answer = pb.CascadeResponse(
        answer="4",
        tier=route.tier,
        hops=[pb.Hop(tier="mid", role=pb.HOP_ROLE_JUDGE, verdict=pb.JUDGE_VERDICT_PASS)],
        judge_status=pb.JUDGE_STATUS_PASSED,
        route=route,
    )
    result = RouteResult.from_pb(route)
    cascaded = CascadeResult.from_pb(answer)
    # The constructor opens a channel and builds the generated stub; nothing is called.
    with tierroute_client.TierRouteClient("127.0.0.1:1"):
        pass
    print(json.dumps({
        "query": wire.query,
        "tenant": wire.tenant_id,
        "strategy": pb.Strategy.Name(wire.strategy),
        "judge_mode": pb.JudgeMode.Name(cascade.judge_mode),
        "tier": result.tier,
        "rule": result.rule,
        "scores": result.scores,
        "reasons": [r.code for r in result.reasons],
        "judge_status": cascaded.judge_status,
        "hops": [[h.role, h.verdict] for h in cascaded.hops],
        "module": pb.RouteRequest.__module__,
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "tierroute"),
    }))
    """
)


def test_client_works_without_the_server_package(tmp_path: Path) -> None:
    """With `tierroute` unimportable, the client builds requests and reads responses."""
    # -I: no PYTHONPATH, no user site, no working directory on sys.path.
    done = subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_SERVER],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=LONG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "query": "What is 2 + 2?",
        "tenant": "t1",
        "strategy": "STRATEGY_CLASSIFIER",
        "judge_mode": "JUDGE_MODE_ALWAYS",
        "tier": "mid",
        "rule": "calibrated",
        "scores": {"cheap": 0.3, "mid": 0.7},
        "reasons": ["RISK_WITHIN_THRESHOLD"],
        "judge_status": "passed",
        "hops": [["judge", "pass"]],
        "module": "tierroute_client.v1.tierroute_pb2",
        "loaded": [],
    }


def test_client_declares_and_imports_only_grpcio_and_protobuf() -> None:
    """The client's dependencies are grpcio and protobuf, and its code imports nothing else."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[ <>=!~;\[]", d, maxsplit=1)[0] for d in project["dependencies"]}
    assert declared == {"grpcio", "protobuf"}
    imported: set[str] = set()
    for path in (CLIENT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module)
    outside = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert {m.split(".")[0] for m in outside} == {"grpc", "google", "tierroute_client"}
    assert {m for m in outside if m.startswith("google")} <= {
        m for m in outside if m.startswith("google.protobuf")
    }


def test_client_dependency_floors_are_what_its_generated_code_checks() -> None:
    """grpcio and protobuf lower bounds match the versions the generated code refuses below."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([a-z]+)>=([0-9.]+),<[0-9]+", requirement)
        assert match, requirement
        floors[match[1]] = match[2]
    generated = CLIENT / "src" / "tierroute_client" / "v1"
    grpc_floor = re.search(
        r"^GRPC_GENERATED_VERSION = '([0-9.]+)'$",
        (generated / "tierroute_pb2_grpc.py").read_text(),
        re.MULTILINE,
    )
    protobuf_floor = re.search(
        r"^# Protobuf Python Version: ([0-9.]+)$",
        (generated / "tierroute_pb2.py").read_text(),
        re.MULTILINE,
    )
    assert grpc_floor
    assert protobuf_floor
    assert floors == {"grpcio": grpc_floor[1], "protobuf": protobuf_floor[1]}


def test_client_and_server_generated_code_share_one_contract() -> None:
    """Both copies load in one process: one registered file, one class per message."""
    assert client_pb.DESCRIPTOR.name == pb.DESCRIPTOR.name == "tierroute/v1/tierroute.proto"
    assert client_pb.DESCRIPTOR.serialized_pb == pb.DESCRIPTOR.serialized_pb
    assert client_pb.RouteRequest is pb.RouteRequest
    assert client_pb.CascadeResponse is pb.CascadeResponse
    sent = route_request("hello", {"strategy": "heuristic", "metadata": {"k": "v"}})
    received = pb.RouteRequest.FromString(sent.SerializeToString())
    assert received == sent
    assert received.strategy == pb.STRATEGY_HEURISTIC
    assert dict(received.metadata) == {"k": "v"}
    # A response the server's code built reads the same through the client's class.
    response = pb.CascadeResponse(
        answer="4",
        tier=pb.TierInfo(name="cheap", model="claude-haiku-4-5"),
        judge_status=pb.JUDGE_STATUS_SAMPLED_OUT,
        degraded_reasons=["judge_sampled_out"],
    )
    parsed = client_pb.CascadeResponse.FromString(response.SerializeToString())
    assert CascadeResult.from_pb(parsed) == CascadeResult.from_pb(response)
    assert CascadeResult.from_pb(parsed).judge_status == "sampled_out"
