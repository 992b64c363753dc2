"""Envoy's external processor: routes Anthropic Messages API requests that pass through Envoy.

Envoy's ext_proc HTTP filter opens one `envoy.service.ext_proc.v3.ExternalProcessor/Process`
stream per HTTP request and sends it the request's phases; each gets one response. With the
processing mode of deploy/envoy/envoy.yaml (request headers SEND, request body BUFFERED,
response headers SEND, the rest NONE):

- request headers: a `POST` to `ext_proc.path` will be routed; any client-sent copy of the
  headers this processor sets is removed. Any other request is let through, and Envoy is
  told (mode_override) that it need not send the body or the response headers.
- request body (whole, BUFFERED): the Messages API request is parsed, the Route decision
  made on it (the router of the Route RPC, strategy from `x-tierroute-strategy` when given),
  `model` rewritten to the routed tier's model with `content-length` set to match (Envoy
  keeps the header in this mode and checks it), `x-tierroute-tier`, `-model`, `-strategy`
  and `-request-id` set, and the route cache cleared so Envoy's routes can match on them.
  A request naming a concrete model is routed too unless `ext_proc.route_named_models` is
  off; then only the alias (`ext_proc.alias`, "tierroute") is.
- response headers: the client's response carries the same `x-tierroute-*` headers.

A request that cannot be routed (not a Messages request, too long, a router failure) either
continues unchanged with `x-tierroute-error` (failure_mode "open") or is answered by Envoy
with the Anthropic error JSON and status (failure_mode "closed"): 400, 413, 429 or 500.
Each routed or failed request is recorded in the query log as a Route call.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from tierroute.api import anthropic_body, recording
from tierroute.api.dataplane.envoy.config.core.v3 import base_pb2
from tierroute.api.dataplane.envoy.extensions.filters.http.ext_proc.v3 import (
    processing_mode_pb2 as mode_pb,
)
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from tierroute.api.dataplane.envoy.type.v3 import http_status_pb2
from tierroute.api.security import current_tenant
from tierroute.api.status import INTERNAL_MESSAGE, status_for
from tierroute.errors import (
    BudgetExhausted,
    InvalidRequest,
    Overloaded,
    QueryTooLong,
    TierrouteError,
)
from tierroute.querylog import QueryLog, QueryRecord
from tierroute.routing import Decision, RouteQuery, Router
from tierroute.settings import Settings
from tierroute.tenancy import Tenancy

logger = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
HEADER_TIER = "x-tierroute-tier"
HEADER_MODEL = "x-tierroute-model"
HEADER_STRATEGY = "x-tierroute-strategy"
HEADER_REQUEST_ID = "x-tierroute-request-id"
HEADER_ERROR = "x-tierroute-error"
HEADER_SESSION = "x-tierroute-session-id"
# The headers only this processor sets: a client's own copies never reach the upstream or
# Envoy's route matching.
OWNED_HEADERS = (HEADER_TIER, HEADER_MODEL, HEADER_STRATEGY, HEADER_REQUEST_ID, HEADER_ERROR)
# The strategies a request may ask for by header; self-routing calls a model, so it is a
# Cascade's, never a routing decision's.
HEADER_STRATEGIES = ("heuristic", "classifier")
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

Record = Callable[[QueryRecord], object]


@dataclass(frozen=True)
class Refusal:
    """A request the processor could not route, as Anthropic's API would answer it."""

    http_status: int
    error_type: str
    message: str
    grpc_status: str


def refusal(exc: BaseException) -> Refusal:
    """The Anthropic status and error type of a failure; unexpected ones say nothing more."""
    if isinstance(exc, TierrouteError):
        code = status_for(exc).name
        if isinstance(exc, QueryTooLong):
            return Refusal(413, "request_too_large", str(exc), code)
        if isinstance(exc, InvalidRequest):
            return Refusal(400, "invalid_request_error", str(exc), code)
        if isinstance(exc, Overloaded | BudgetExhausted):
            return Refusal(429, "rate_limit_error", str(exc), code)
        return Refusal(500, "api_error", "tierroute could not route the request", code)
    return Refusal(500, "api_error", INTERNAL_MESSAGE, "INTERNAL")


def _headers(headers: base_pb2.HeaderMap) -> dict[str, str]:
    # Envoy sends values as raw_value bytes (value when that is off); the first one wins.
    out: dict[str, str] = {}
    for h in headers.headers:
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out.setdefault(h.key.lower(), value)
    return out


def _set(headers: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, raw_value=v.encode("utf-8")),
            append_action=_OVERWRITE,
        )
        for k, v in headers.items()
    ]


def _continue(phase: str, common: ep.CommonResponse | None = None) -> ep.ProcessingResponse:
    """Let the phase go on, with `common`'s changes; `phase` is the request's oneof name."""
    response = ep.ProcessingResponse()
    part = getattr(response, phase)
    # Set the oneof even when nothing changes: an empty response must still name its phase.
    part.SetInParent()
    if common is not None and phase not in ("request_trailers", "response_trailers"):
        part.response.CopyFrom(common)
    return response


@dataclass
class Exchange:
    """One HTTP request's pass through the processor: each phase in, its response out.

    Transport-free, so the servicer stays a loop; the router is the Route RPC's.
    """

    settings: Settings
    router: Router
    tenant_id: str = ""
    record: Record | None = None
    routes: bool = False
    request_id: str = ""
    answer_headers: dict[str, str] = field(default_factory=dict)
    _asked: dict[str, str] = field(default_factory=dict)
    # The session's floor and open agent loop, read from the tenant state before the body.
    session: tuple[int, int | None] = (0, None)

    @property
    def session_id(self) -> str:
        """The session the request's headers name, if any."""
        return self._asked.get(HEADER_SESSION, "")

    def respond(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """The response to one ProcessingRequest; InvalidRequest when it names no phase."""
        phase = request.WhichOneof("request")
        if phase == "request_headers":
            return self._request_headers(request.request_headers)
        if phase == "request_body":
            return self._request_body(request.request_body)
        if phase == "response_headers":
            common = ep.CommonResponse(
                header_mutation=ep.HeaderMutation(set_headers=_set(self.answer_headers))
            )
            return _continue(phase, common)
        if phase in ("response_body", "request_trailers", "response_trailers"):
            return _continue(phase)
        raise InvalidRequest("a ProcessingRequest must carry one of the request's phases")

    def _request_headers(self, message: ep.HttpHeaders) -> ep.ProcessingResponse:
        headers = _headers(message.headers)
        cfg = self.settings.ext_proc
        path = headers.get(":path", "").split("?", 1)[0]
        self.routes = (
            headers.get(":method") == "POST" and path == cfg.path and not message.end_of_stream
        )
        given = headers.get("x-request-id", "")
        self.request_id = (
            given if 0 < len(given) <= self.settings.limits.max_id_chars else uuid.uuid4().hex
        )
        self._asked = {
            k: headers[k][: self.settings.limits.max_id_chars]
            for k in (HEADER_STRATEGY, HEADER_SESSION)
            if k in headers
        }
        common = ep.CommonResponse(
            header_mutation=ep.HeaderMutation(
                remove_headers=[h for h in OWNED_HEADERS if h in headers]
            )
        )
        response = _continue("request_headers", common)
        if not self.routes:
            # Nothing here is routed: Envoy (with allow_mode_override) skips the body and
            # the response headers instead of buffering and sending them.
            response.mode_override.CopyFrom(
                mode_pb.ProcessingMode(
                    request_body_mode=mode_pb.ProcessingMode.NONE,
                    response_header_mode=mode_pb.ProcessingMode.SKIP,
                )
            )
        return response

    def _request_body(self, message: ep.HttpBody) -> ep.ProcessingResponse:
        if not self.routes:
            return _continue("request_body")
        query: RouteQuery | None = None
        try:
            if not message.end_of_stream:
                raise InvalidRequest(
                    "the processor needs the whole body: set the ext_proc filter's "
                    "processing_mode.request_body_mode to BUFFERED"
                )
            body = anthropic_body.parse(message.body, self.settings.limits)
            if not self._wants_routing(body.model):
                return _continue("request_body")
            query = self._query(body)
            # The upstream answers whatever model this names, unchecked: an unfamiliar query
            # gets the reference tier, never the cheapest (routing.on_unfamiliar).
            decision = self.router.route(query, unchecked=True)
        except Exception as exc:  # every failure is answered per failure_mode, none escapes
            return self._refuse(exc, query)
        return self._routed(body, query, decision)

    def _wants_routing(self, model: str) -> bool:
        return model == self.settings.ext_proc.alias or self.settings.ext_proc.route_named_models

    def _query(self, body: anthropic_body.MessagesBody) -> RouteQuery:
        strategy = self._asked.get(HEADER_STRATEGY)
        if strategy is not None and strategy not in HEADER_STRATEGIES:
            raise InvalidRequest(
                f"{HEADER_STRATEGY} must be one of {', '.join(HEADER_STRATEGIES)}, "
                f"not {strategy[:40]!r}"
            )
        return RouteQuery(
            text=body.text,
            history=body.history,
            strategy=strategy,
            tenant_id=self.tenant_id,
            session_id=self.session_id,
            request_id=self.request_id,
            session_floor=self.session[0],
            session_loop_tier=self.session[1],
            metadata={"front_door": "envoy_ext_proc"},
            continues_tool_use=body.tool_results,
        )

    def _routed(
        self, body: anthropic_body.MessagesBody, query: RouteQuery, decision: Decision
    ) -> ep.ProcessingResponse:
        if self.record is not None:
            self.record(
                recording.route_record(
                    query, decision, store_text=self.settings.querylog.store_text
                )
            )
        self.answer_headers = {
            HEADER_TIER: decision.tier.name,
            HEADER_MODEL: decision.tier.model,
            HEADER_STRATEGY: decision.strategy,
            HEADER_REQUEST_ID: self.request_id,
        }
        upstream = dict(self.answer_headers)
        mutation = None
        if body.model != decision.tier.model:
            rewritten = anthropic_body.with_model(body, decision.tier.model)
            mutation = ep.BodyMutation(body=rewritten)
            upstream["content-length"] = str(len(rewritten))
        common = ep.CommonResponse(
            header_mutation=ep.HeaderMutation(set_headers=_set(upstream)),
            body_mutation=mutation,
            # The tier headers (and the model) changed after Envoy picked a route.
            clear_route_cache=True,
        )
        return _continue("request_body", common)

    def _refuse(self, exc: BaseException, query: RouteQuery | None) -> ep.ProcessingResponse:
        answer = refusal(exc)
        if isinstance(exc, TierrouteError):
            logger.info("ext_proc could not route %s: %s", self.request_id, type(exc).__name__)
        else:
            logger.exception("ext_proc failed unexpectedly on %s", self.request_id)
        if self.record is not None:
            self.record(
                recording.failed_record(
                    "route",
                    request_id=self.request_id,
                    texts=[query.text] if query is not None else [],
                    status=answer.grpc_status,
                    store_text=self.settings.querylog.store_text,
                    tenant_id=self.tenant_id,
                    session_id=self._asked.get(HEADER_SESSION, ""),
                )
            )
        self.answer_headers = {HEADER_ERROR: answer.error_type, HEADER_REQUEST_ID: self.request_id}
        if self.settings.ext_proc.failure_mode == "open":
            common = ep.CommonResponse(
                header_mutation=ep.HeaderMutation(set_headers=_set(self.answer_headers))
            )
            return _continue("request_body", common)
        error = {"type": "error", "error": {"type": answer.error_type, "message": answer.message}}
        headers = {"content-type": "application/json", **self.answer_headers}
        return ep.ProcessingResponse(
            immediate_response=ep.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=answer.http_status),  # type: ignore[arg-type]
                headers=ep.HeaderMutation(set_headers=_set(headers)),
                body=json.dumps(error).encode("utf-8"),
                details=f"tierroute_{answer.error_type}",
            )
        )


class ExternalProcessorServicer(external_processor_pb2_grpc.ExternalProcessorServicer):
    """Envoy's ext_proc service: one `Exchange` per stream, one response per phase."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        *,
        record: Record | None = None,
        tenancy: Tenancy | None = None,
    ) -> None:
        self._settings = settings
        self._router = router
        self._record = record
        self._tenancy = tenancy

    async def Process(  # noqa: N802 (the proto's method name)
        self,
        request_iterator: AsyncIterator[ep.ProcessingRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = Exchange(
            self._settings, self._router, tenant_id=current_tenant() or "", record=self._record
        )
        async for request in request_iterator:
            if (
                self._tenancy is not None
                and exchange.session_id
                and request.WhichOneof("request") == "request_body"
            ):
                # Routing reads the session's floor (raised only by answered Cascades).
                exchange.session = await self._tenancy.session(
                    exchange.tenant_id, exchange.session_id
                )
            try:
                response = exchange.respond(request)
            except InvalidRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            yield response


def add_to_server(
    server: aio.Server,
    settings: Settings,
    router: Router,
    querylog: QueryLog | None,
    tenancy: Tenancy | None = None,
) -> tuple[str, ...]:
    """Serve the processor on `server` when `ext_proc.enabled`; the service names added."""
    if not settings.ext_proc.enabled:
        return ()
    servicer = ExternalProcessorServicer(
        settings,
        router,
        record=querylog.submit if querylog is not None else None,
        tenancy=tenancy,
    )
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
    return (SERVICE_NAME,)
