"""Bearer-token authentication, the admin credential, and TLS / mutual TLS, end to end."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers import Running, make_settings, running_server
from tests.pki import Pki, make_pki
from tierroute.api import security
from tierroute.api.security import (
    Authenticator,
    Principal,
    TokenStore,
    bearer_metadata,
    bearer_token,
    hash_token,
    server_credentials,
)
from tierroute.api.status import MethodHandler, ServerInterceptor, WrappedHandlers
from tierroute.errors import ConfigError, PermissionDenied, Unauthenticated
from tierroute.settings import TlsConfig
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

EASY = StaticScorer((0.9, 0.07, 0.03))
ACME_TOKEN = "acme-token-5b1f0c"
GLOBEX_TOKEN = "globex-token-77ad"
ADMIN_TOKEN = "admin-token-c0ffee"
ROUTE = "/tierroute.v1.TierRouter/Route"


def _tokens_file(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "tenants": {
                    "acme": [hash_token(ACME_TOKEN)],
                    "globex": [hash_token(GLOBEX_TOKEN), hash_token("globex-second")],
                },
                "admin": [hash_token(ADMIN_TOKEN)],
            }
        )
    )
    return path


@asynccontextmanager
async def _auth_server(
    tmp_path: Path, extra: dict[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[Running]:
    env = {"TIERROUTE_AUTH_TOKENS_FILE": str(_tokens_file(tmp_path / "tokens.json"))}
    async with running_server(make_settings(env | (extra or {})), scorer=EASY, **kwargs) as s:
        yield s


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# --- tokens and the tokens file ---------------------------------------------------------


def test_hash_token_is_sha256_hex() -> None:
    """A token's stored form is its SHA-256 hex digest."""
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_tokens_file_reads_json_and_toml_alike(tmp_path: Path) -> None:
    """The same tokens load from JSON and from TOML."""
    toml = tmp_path / "tokens.toml"
    toml.write_text(
        f'admin = ["{hash_token(ADMIN_TOKEN)}"]\n[tenants]\nacme = ["{hash_token(ACME_TOKEN)}"]\n'
    )
    for path in (_tokens_file(tmp_path / "tokens.json"), toml):
        store = TokenStore.load(path)
        assert store.authenticate(ACME_TOKEN) == Principal("acme")
        assert store.authenticate(ADMIN_TOKEN) == Principal(None, admin=True)
        assert store.authenticate("nope") is None


@pytest.mark.parametrize(
    "data",
    [
        {"tenants": {"acme": ["not-a-digest"]}},
        {"tenants": {"acme": [hash_token("x")[:-1]]}},
        {"tenants": {"acme": hash_token("x")}},
        {"tenants": {"": [hash_token("x")]}},
        {"tenants": {"a": [hash_token("x")], "b": [hash_token("x")]}},
        {"tenants": {"a": [hash_token("x")]}, "admin": [hash_token("x")]},
        {"tokens": {}},
    ],
)
def test_tokens_file_rejects_bad_entries(data: dict[str, Any]) -> None:
    """Malformed digests, duplicated digests and unknown keys are configuration errors."""
    with pytest.raises(ConfigError):
        TokenStore.from_mapping(data)


def test_missing_tokens_file_fails_start_up(tmp_path: Path) -> None:
    """A tokens file that cannot be read is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="tokens file"):
        TokenStore.load(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
        (("authorization", "Bearer a"), ("authorization", "Bearer b")),
    ],
)
def test_bearer_token_refuses_missing_or_malformed_credentials(
    metadata: tuple[tuple[str, str], ...],
) -> None:
    """No, a non-bearer, an empty or a repeated authorization entry is Unauthenticated."""
    with pytest.raises(Unauthenticated):
        bearer_token(metadata)


def test_bearer_scheme_is_case_insensitive() -> None:
    """The 'Bearer' scheme name matches in any case, as RFC 6750 allows."""
    assert bearer_token((("authorization", "bEaReR tok"),)) == "tok"


def test_admin_methods_refused_when_authentication_is_off() -> None:
    """Without a tokens file nobody holds an admin credential, so admin calls are refused."""
    auth = Authenticator(None, ["/tierroute.v1.TierRouter/ReloadModel"])
    with pytest.raises(PermissionDenied):
        auth.authorize("/tierroute.v1.TierRouter/ReloadModel", (), None)
    assert auth.authorize(ROUTE, (), None) is None


def test_default_admin_methods_are_reload_and_rollback() -> None:
    """ReloadModel and RollbackModel need an admin token unless configured otherwise."""
    assert set(make_settings().auth.admin_methods) == {
        "/tierroute.v1.TierRouter/ReloadModel",
        "/tierroute.v1.TierRouter/RollbackModel",
    }


# --- authentication through the running server -----------------------------------------


async def test_call_without_token_is_unauthenticated(tmp_path: Path) -> None:
    """With authentication on, a call with no token is UNAUTHENTICATED and says what to send."""
    async with _auth_server(tmp_path) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="hi"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in (err.value.details() or "")


async def test_unknown_token_is_unauthenticated(tmp_path: Path) -> None:
    """A token whose digest is not in the tokens file is UNAUTHENTICATED."""
    async with _auth_server(tmp_path) as s:
        code = await _code(
            s.stub.Route(pb.RouteRequest(query="hi"), metadata=bearer_metadata("guess"))
        )
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_tenant_token_routes_for_its_own_tenant(tmp_path: Path) -> None:
    """A tenant's token may route with its own tenant_id or none."""
    async with _auth_server(tmp_path) as s:
        for tenant in ("acme", ""):
            r = await s.stub.Route(
                pb.RouteRequest(query="hi", tenant_id=tenant), metadata=bearer_metadata(ACME_TOKEN)
            )
            assert r.tier.name == "cheap"


async def test_tenant_token_for_another_tenant_is_permission_denied(tmp_path: Path) -> None:
    """A valid token used with another tenant's tenant_id is PERMISSION_DENIED."""
    async with _auth_server(tmp_path) as s:
        code = await _code(
            s.stub.Route(
                pb.RouteRequest(query="hi", tenant_id="globex"),
                metadata=bearer_metadata(ACME_TOKEN),
            )
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_each_call_is_judged_on_its_own_credentials(tmp_path: Path) -> None:
    """The interceptors wrap a method once and reuse the wrapping: calls in turn on one
    method with a good token, none, another tenant's, the good one again and an unknown one
    each get their own verdict, and the handler sees each admitted call's own tenant."""
    recorder = _TenantRecorder()
    async with _auth_server(tmp_path, interceptors=[recorder]) as s:
        request = pb.RouteRequest(query="hi", tenant_id="acme")
        verdicts = [
            await _code(s.stub.Route(request, metadata=metadata))
            for metadata in (
                bearer_metadata(ACME_TOKEN),
                None,
                bearer_metadata(GLOBEX_TOKEN),
                bearer_metadata(ACME_TOKEN),
                bearer_metadata("not-a-token"),
            )
        ]
        await s.stub.Route(pb.RouteRequest(query="hi"), metadata=bearer_metadata(GLOBEX_TOKEN))
    assert verdicts == [
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
    ]
    assert recorder.seen == ["acme", "acme", "globex"]


async def test_every_token_of_a_tenant_is_accepted(tmp_path: Path) -> None:
    """A tenant may hold several tokens (for rotation); each one authenticates it."""
    async with _auth_server(tmp_path) as s:
        for token in (GLOBEX_TOKEN, "globex-second"):
            r = await s.stub.Route(
                pb.RouteRequest(query="hi", tenant_id="globex"), metadata=bearer_metadata(token)
            )
            assert r.request_id


async def test_admin_method_needs_the_admin_token(tmp_path: Path) -> None:
    """A configured admin method refuses tenant tokens and serves the admin token."""
    async with _auth_server(tmp_path, {"TIERROUTE_AUTH_ADMIN_METHODS": ROUTE}) as s:
        tenant = await _code(
            s.stub.Route(pb.RouteRequest(query="hi"), metadata=bearer_metadata(ACME_TOKEN))
        )
        admin = await _code(
            s.stub.Route(
                pb.RouteRequest(query="hi", tenant_id="acme"),
                metadata=bearer_metadata(ADMIN_TOKEN),
            )
        )
    assert tenant == grpc.StatusCode.PERMISSION_DENIED
    assert admin == grpc.StatusCode.OK


async def test_admin_method_refused_on_a_server_without_tokens() -> None:
    """With authentication off an admin method is PERMISSION_DENIED, not open to anyone."""
    settings = make_settings({"TIERROUTE_AUTH_ADMIN_METHODS": ROUTE})
    async with running_server(settings, scorer=EASY) as s:
        code = await _code(s.stub.Route(pb.RouteRequest(query="hi")))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_health_and_reflection_need_no_token(tmp_path: Path) -> None:
    """Probes work without credentials while authentication is on."""
    async with _auth_server(tmp_path) as s:
        health = await health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest())
        names: list[str] = []
        async for reply in reflection_pb2_grpc.ServerReflectionStub(s.channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names = [svc.name for svc in reply.list_services_response.service]
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "tierroute.v1.TierRouter" in names


class _TenantRecorder(ServerInterceptor):
    """Records what `current_tenant()` says inside the handler chain, after authentication.

    Like the server's own interceptors it builds its wrapping once per method, so the
    authentication in front of it reuses its own wrapping too, as in production."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self._handlers = WrappedHandlers(self._wrap_handler)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        return self._handlers.get(handler_call_details.method, handler)  # type: ignore[return-value]

    def _wrap_handler(self, method: str, handler: MethodHandler) -> MethodHandler:
        inner = handler.unary_unary

        async def record(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            self.seen.append(security.current_tenant())
            return await inner(request, context)  # type: ignore[misc]

        return grpc.unary_unary_rpc_method_handler(
            record,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def test_authenticated_tenant_is_visible_to_the_handler(tmp_path: Path) -> None:
    """Inside the call `current_tenant()` names the token's tenant; None for the admin."""
    recorder = _TenantRecorder()
    async with _auth_server(tmp_path, interceptors=[recorder]) as s:
        await s.stub.Route(pb.RouteRequest(query="hi"), metadata=bearer_metadata(ACME_TOKEN))
        await s.stub.Route(pb.RouteRequest(query="hi"), metadata=bearer_metadata(ADMIN_TOKEN))
    assert recorder.seen == ["acme", None]
    assert security.current_tenant() is None


async def test_refusals_never_log_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused call is logged by method and reason, never with the presented token."""
    caplog.set_level(logging.DEBUG, logger="tierroute")
    async with _auth_server(tmp_path) as s:
        await _code(
            s.stub.Route(
                pb.RouteRequest(query="hi"), metadata=bearer_metadata("leaked-token-value")
            )
        )
        await _code(
            s.stub.Route(
                pb.RouteRequest(query="hi", tenant_id="globex"),
                metadata=bearer_metadata(ACME_TOKEN),
            )
        )
    assert "refused /tierroute.v1.TierRouter/Route" in caplog.text
    assert "leaked-token-value" not in caplog.text
    assert ACME_TOKEN not in caplog.text


# --- TLS and mutual TLS -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate and a stranger's."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_env(pki: Pki, *, mutual: bool) -> dict[str, str]:
    env = {
        "TIERROUTE_TLS_CERT_FILE": str(pki.server_cert),
        "TIERROUTE_TLS_KEY_FILE": str(pki.server_key),
    }
    if mutual:
        env["TIERROUTE_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    return env


async def _route_over(channel: aio.Channel) -> grpc.StatusCode:
    # The deadline only bounds a broken test; every expected outcome arrives well before.
    stub = pb_grpc.TierRouterStub(channel)
    return await _code(stub.Route(pb.RouteRequest(query="hi"), timeout=30))


def _secure_channel(port: int, pki: Pki, client: tuple[Path, Path] | None = None) -> aio.Channel:
    key, chain = (client[1].read_bytes(), client[0].read_bytes()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=key, certificate_chain=chain
    )
    return aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def test_tls_round_trip(pki: Pki) -> None:
    """A client that trusts the CA routes over TLS."""
    async with (
        running_server(make_settings(_tls_env(pki, mutual=False)), scorer=EASY) as s,
        _secure_channel(s.port, pki) as channel,
    ):
        assert await _route_over(channel) == grpc.StatusCode.OK


async def test_plain_text_client_cannot_reach_a_tls_server(pki: Pki) -> None:
    """A plain-text client to a TLS server fails at the channel with UNAVAILABLE."""
    async with running_server(make_settings(_tls_env(pki, mutual=False)), scorer=EASY) as s:
        assert await _route_over(s.channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_accepts_a_client_certificate_from_the_ca(pki: Pki) -> None:
    """With a client CA configured, a client presenting a certificate it signed routes."""
    async with running_server(make_settings(_tls_env(pki, mutual=True)), scorer=EASY) as s:
        client = (pki.client_cert, pki.client_key)
        async with _secure_channel(s.port, pki, client) as channel:
            assert await _route_over(channel) == grpc.StatusCode.OK


async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    """With a client CA configured, a client without a certificate fails with UNAVAILABLE."""
    async with (
        running_server(make_settings(_tls_env(pki, mutual=True)), scorer=EASY) as s,
        _secure_channel(s.port, pki) as channel,
    ):
        assert await _route_over(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_certificate_from_another_ca(pki: Pki) -> None:
    """A client certificate signed by an untrusted CA fails with UNAVAILABLE."""
    async with running_server(make_settings(_tls_env(pki, mutual=True)), scorer=EASY) as s:
        stranger = (pki.stranger_cert, pki.stranger_key)
        async with _secure_channel(s.port, pki, stranger) as channel:
            assert await _route_over(channel) == grpc.StatusCode.UNAVAILABLE


async def test_tls_and_bearer_tokens_work_together(pki: Pki, tmp_path: Path) -> None:
    """Over TLS, the bearer token still decides: none is UNAUTHENTICATED, a valid one routes."""
    env = _tls_env(pki, mutual=False)
    env["TIERROUTE_AUTH_TOKENS_FILE"] = str(_tokens_file(tmp_path / "tokens.json"))
    async with (
        running_server(make_settings(env), scorer=EASY) as s,
        _secure_channel(s.port, pki) as channel,
    ):
        stub = pb_grpc.TierRouterStub(channel)
        anonymous = await _code(stub.Route(pb.RouteRequest(query="hi"), timeout=30))
        r = await stub.Route(
            pb.RouteRequest(query="hi"), metadata=bearer_metadata(ACME_TOKEN), timeout=30
        )
    assert anonymous == grpc.StatusCode.UNAUTHENTICATED
    assert r.tier.name == "cheap"


def test_tls_settings_need_certificate_and_key_together(pki: Pki) -> None:
    """A certificate without its key, or a client CA without both, is a ConfigError."""
    with pytest.raises(ConfigError):
        make_settings({"TIERROUTE_TLS_CERT_FILE": str(pki.server_cert)})
    with pytest.raises(ConfigError):
        make_settings({"TIERROUTE_TLS_CLIENT_CA_FILE": str(pki.ca)})


def test_unreadable_certificate_is_a_config_error(tmp_path: Path, pki: Pki) -> None:
    """A certificate path that cannot be read fails start-up with a ConfigError naming it."""
    tls = TlsConfig(cert_file=tmp_path / "absent.pem", key_file=pki.server_key)
    with pytest.raises(ConfigError, match=r"absent\.pem"):
        server_credentials(tls)


def test_no_tls_settings_means_plain_text() -> None:
    """Without a certificate the server listens in plain text (no credentials built)."""
    assert server_credentials(TlsConfig()) is None
