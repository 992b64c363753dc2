"""Who may call tierroute: per-tenant bearer tokens, an admin credential, and server TLS.

`AuthInterceptor` reads `authorization: Bearer <token>` from call metadata (unary,
server-streaming and bidirectional calls) and checks the token's SHA-256 against a tokens
file (tokens themselves are never configured). No or an
unknown token is UNAUTHENTICATED; a tenant's token used for another tenant's `tenant_id`, or
for an admin method, is PERMISSION_DENIED. Health checking and reflection stay open so
probes work. The authenticated tenant is available to the servicer via `current_tenant()`.
`server_credentials` builds TLS (mutual TLS when a client CA is configured) from settings.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import inspect
import json
import logging
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc import aio

from tierroute.api.status import MethodHandler, ServerInterceptor, WrappedHandlers, status_for
from tierroute.errors import ConfigError, PermissionDenied, TierrouteError, Unauthenticated
from tierroute.settings import AuthConfig, TlsConfig

logger = logging.getLogger(__name__)

# Services that answer without credentials and without admission control: load balancers
# and orchestrators probe health with no token, and refusing them would take us out of
# rotation exactly when we are busy.
PROBE_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_BEARER = "bearer "
_DIGEST_CHARS = frozenset("0123456789abcdef")

Behaviour = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehaviour = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
BidiBehaviour = Callable[[AsyncIterator[Any], aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def is_probe(method: str) -> bool:
    """Whether a full method name (`/package.Service/Method`) belongs to a probe service."""
    return method.lstrip("/").split("/", 1)[0] in PROBE_SERVICES


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of a bearer token, as stored in the tokens file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to: a tenant, or an admin (tenant None)."""

    tenant: str | None
    admin: bool = False


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tierroute_principal", default=None
)


def current_principal() -> Principal | None:
    """The caller authenticated for the current call; None when authentication is off."""
    return _principal.get()


def current_tenant() -> str | None:
    """The tenant whose token authenticated the current call; None for admins or no auth."""
    principal = _principal.get()
    return principal.tenant if principal is not None else None


class TokenStore:
    """Token digests by principal; looks a presented token up in constant time per entry."""

    def __init__(self, tenants: Mapping[str, Iterable[str]], admin: Iterable[str] = ()) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for tenant, digests in tenants.items():
            if not isinstance(tenant, str) or not tenant:
                raise ConfigError("tokens file: tenant ids must be non-empty strings")
            entries.extend((_digest(d, tenant), Principal(tenant)) for d in digests)
        entries.extend((_digest(d, "admin"), Principal(None, admin=True)) for d in admin)
        seen: set[bytes] = set()
        for digest, _ in entries:
            if digest in seen:
                raise ConfigError("tokens file: a token digest appears more than once")
            seen.add(digest)
        self._entries = tuple(entries)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TokenStore:
        """Build from `{"tenants": {id: [digest, ...]}, "admin": [digest, ...]}`."""
        unknown = set(data) - {"tenants", "admin"}
        if unknown:
            raise ConfigError(f"tokens file: unknown keys {sorted(unknown)}")
        tenants = data.get("tenants", {})
        admin = data.get("admin", [])
        if not isinstance(tenants, Mapping) or not isinstance(admin, list):
            raise ConfigError("tokens file: 'tenants' must be a table and 'admin' a list")
        for tenant, digests in tenants.items():
            if not isinstance(digests, list):
                raise ConfigError(f"tokens file: tenant {tenant!r} must map to a list")
        return cls(tenants, admin)

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        """Read a JSON (`.json`) or TOML (any other suffix) tokens file."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read tokens file {path}: {exc.strerror}; check auth.tokens_file"
            ) from exc
        try:
            data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"tokens file {path} (auth.tokens_file) does not parse: {exc}"
            ) from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"tokens file {path} (auth.tokens_file) must hold a table")
        try:
            return cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"{path} (auth.tokens_file): {exc}") from exc

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or None."""
        presented = bytes.fromhex(hash_token(token))
        found: Principal | None = None
        # Compare against every entry, without stopping early, so the time taken does not
        # say which entry (if any) matched.
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found


def _digest(value: object, owner: str) -> bytes:
    if not (isinstance(value, str) and len(value) == 64 and set(value.lower()) <= _DIGEST_CHARS):
        raise ConfigError(
            f"tokens file: digests of {owner!r} must be 64-character SHA-256 hex strings "
            "(see `tierroute hash-token`)"
        )
    return bytes.fromhex(value)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token in `authorization: Bearer <token>`; Unauthenticated when absent or malformed."""
    values = [v for k, v in metadata or () if k.lower() == "authorization"]
    if not values:
        raise Unauthenticated("missing credential: send metadata 'authorization: Bearer <token>'")
    if len(values) > 1:
        raise Unauthenticated("send exactly one authorization metadata entry")
    value = values[0]
    if isinstance(value, bytes) or not value[: len(_BEARER)].lower() == _BEARER:
        raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
    token = value[len(_BEARER) :].strip()
    if not token:
        raise Unauthenticated("the bearer token is empty")
    return token


def _requested_tenant(request: object) -> str:
    # Messages without a tenant_id field (and undecodable requests) name no tenant.
    if isinstance(request, Message) and "tenant_id" in request.DESCRIPTOR.fields_by_name:
        return str(getattr(request, "tenant_id", ""))
    return ""


class Authenticator:
    """Decides whether one call may proceed; transport-free so it is tested directly."""

    def __init__(self, store: TokenStore | None, admin_methods: Iterable[str]) -> None:
        self.store = store
        self.admin_methods = frozenset(admin_methods)

    @property
    def enabled(self) -> bool:
        """Whether tokens are checked at all."""
        return self.store is not None

    def swap_store(self, store: TokenStore) -> None:
        """Put a reloaded tokens file in force; a call already checked is not checked again.

        One assignment, so each call sees the old tokens or the new, never a mixture.
        """
        self.store = store
        logger.info("bearer tokens reloaded (%s tokens)", len(store))

    def authorize(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        request: object,
    ) -> Principal | None:
        """The caller's principal, or Unauthenticated / PermissionDenied."""
        if is_probe(method):
            return None
        if self.store is None:
            if method in self.admin_methods:
                # Fail closed: without a tokens file nobody can hold an admin credential.
                raise PermissionDenied(
                    "admin calls need an admin token; configure auth.tokens_file"
                )
            return None
        store = self.store
        if store is None:
            return None
        principal = store.authenticate(bearer_token(metadata))
        if principal is None:
            raise Unauthenticated("unknown bearer token")
        if principal.admin:
            return principal
        if method in self.admin_methods:
            raise PermissionDenied("this call needs an admin token")
        requested = _requested_tenant(request)
        if requested and requested != principal.tenant:
            raise PermissionDenied("the token does not belong to the requested tenant_id")
        return principal


class AuthInterceptor(ServerInterceptor):
    """Authenticates and authorises every unary and server-streaming call except probes."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self._handlers = WrappedHandlers(self._wrap_handler)

    @classmethod
    def from_settings(cls, auth: AuthConfig) -> AuthInterceptor:
        """Load the tokens file named by the settings (none: authentication off)."""
        store = TokenStore.load(auth.tokens_file) if auth.tokens_file is not None else None
        if store is not None:
            logger.info("bearer-token authentication on (%s tokens)", len(store))
        return cls(Authenticator(store, auth.admin_methods))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_probe(method):
            return handler
        # The wrapping holds no per-call state (each call's metadata is read from its
        # context), so it is built once per method.
        return self._handlers.get(method, handler)  # type: ignore[return-value]

    def _wrap_handler(self, method: str, handler: MethodHandler) -> MethodHandler | None:
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            # Bidirectional streams (Envoy's ext_proc) carry no tenant_id to check: the
            # token alone decides, and its tenant holds for the whole stream.
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_bidi(method, handler.stream_stream),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            # The tenant check needs the one request message; rather than let a
            # client-streaming method through unchecked, it is not served (UNIMPLEMENTED).
            logger.warning("refusing streaming method %s: authentication needs one request", method)
            return None
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(method, handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, method: str, behaviour: Behaviour) -> Behaviour:
        authenticator = self.authenticator

        async def authorised(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                principal = authenticator.authorize(method, context.invocation_metadata(), request)
            except TierrouteError as exc:
                # Never log the presented token; the method and the refusal are enough.
                logger.info("refused %s: %s", method, type(exc).__name__)
                await context.abort(status_for(exc), str(exc))
            token = _principal.set(principal)
            try:
                return await behaviour(request, context)
            finally:
                _principal.reset(token)

        return authorised

    def _wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        authenticator = self.authenticator

        async def authorised(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                principal = authenticator.authorize(method, context.invocation_metadata(), request)
            except TierrouteError as exc:
                logger.info("refused %s: %s", method, type(exc).__name__)
                await context.abort(status_for(exc), str(exc))
            # The stream is iterated in one task, so the principal holds for all of it.
            _principal.set(principal)
            async for response in behaviour(request, context):
                yield response

        return authorised

    def _wrap_bidi(self, method: str, behaviour: BidiBehaviour) -> BidiBehaviour:
        authenticator = self.authenticator

        async def authorised(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                principal = authenticator.authorize(method, context.invocation_metadata(), None)
            except TierrouteError as exc:
                logger.info("refused %s: %s", method, type(exc).__name__)
                await context.abort(status_for(exc), str(exc))
            _principal.set(principal)
            async for response in behaviour(requests, context):
                yield response

        return authorised


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {what} {path}: {exc.strerror}") from exc


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings; None when TLS is not configured (plain text)."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    pair = (_read_pem(tls.key_file, "key"), _read_pem(tls.cert_file, "certificate"))
    client_ca = (
        _read_pem(tls.client_ca_file, "client CA") if tls.client_ca_file is not None else None
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Call metadata that presents `token`, for clients."""
    return (("authorization", f"Bearer {token}"),)
