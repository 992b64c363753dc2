"""The HTTP edge: Anthropic's Messages API (`POST /v1/messages`, `POST
/v1/messages/count_tokens`), OpenAI's chat completions (`POST /v1/chat/completions`) and
`GET /v1/models` for both, over the same core the gRPC servicer calls.

Each request is admitted in one place (`MessagesEdge.admit`: the shared in-flight bound,
then the bearer token from `x-api-key` or `Authorization: Bearer`), its body becomes a
`CascadeRequest` (`messages.parse_request`) that `api.convert` checks exactly as it checks a
gRPC call, the tenancy core admits it (`MessagesEdge.open`: the tenant's rate limits and
budget, its session's floor), the engine answers it within the tenant's ledger, and
`calllog.CallLog` logs it, success or failure. A
client that goes away cancels its request and every provider call in flight, streamed or
not. Errors are each door's error JSON (`errors.http_error`, written by the door's `Wire`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierroute.api import convert, jsonbody
from tierroute.api.admission import AdmissionInterceptor
from tierroute.api.calllog import CallLog, request_texts
from tierroute.api.http.body import ClientGone, read_json
from tierroute.api.http.errors import HttpError, http_error
from tierroute.api.http.guard import CatchAll
from tierroute.api.http.messages import (
    CASCADE_MODEL,
    ModelChoice,
    ParsedRequest,
    answer_model,
    choose_model,
    parse_request,
    tierroute_headers,
)
from tierroute.api.http.openai import parse_chat
from tierroute.api.http.openai_stream import ChatWire
from tierroute.api.http.tokens import count_query
from tierroute.api.http.wire import MESSAGES_WIRE, Wire
from tierroute.api.security import Authenticator, Principal, bearer_metadata
from tierroute.cascade import (
    CascadeEngine,
    CascadeEvent,
    CascadeQuery,
    CascadeResult,
    EventStream,
    ResultEvent,
    RetractEvent,
    TextEvent,
)
from tierroute.errors import (
    TierrouteError,
    Unauthenticated,
)
from tierroute.providers import Provider
from tierroute.providers.replay.faults import FAULT_HEADERS
from tierroute.routing import Router
from tierroute.settings import Settings
from tierroute.tenancy import CascadeCall, Tenancy, resolve_tenant
from tierroute.v1 import tierroute_pb2 as pb

logger = logging.getLogger(__name__)

T = TypeVar("T")
# The method name the token check and the tenancy rules see for HTTP calls.
MESSAGES_METHOD = "POST /v1/messages"
MODELS_METHOD = "GET /v1/models"
CHAT_METHOD = "POST /v1/chat/completions"
COUNT_TOKENS_METHOD = "POST /v1/messages/count_tokens"
# Anthropic's SDKs send it on every request (its API requires it); OpenAI's never do.
ANTHROPIC_VERSION_HEADER = "anthropic-version"
# Request headers a caller may send besides Anthropic's own.
SESSION_HEADER = "x-tierroute-session-id"
REQUEST_ID_HEADER = "x-tierroute-request-id"
# The timeout, in seconds, the official SDKs announce on every request: the caller's deadline.
# OpenAI's Python SDK announces only its read timeout, which for one response is the same.
TIMEOUT_HEADER = "x-stainless-timeout"
READ_TIMEOUT_HEADER = "x-stainless-read-timeout"
# Anthropic's models carry a release date; tierroute's ids have none to give.
_CREATED_AT = "1970-01-01T00:00:00Z"


class _JSON(JSONResponse):
    """Starlette's JSON response, written by `jsonbody.encode`: an answer whose text holds a
    lone surrogate (an upstream's) is still sent, escaped, instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        return jsonbody.encode(content)


def _error_response(error: HttpError, request_id: str = "", wire: Wire = MESSAGES_WIRE) -> _JSON:
    headers = dict(error.headers())
    if request_id:
        headers.update({"request-id": request_id, REQUEST_ID_HEADER: request_id})
    status, body = wire.error(error)
    return _JSON(body, status_code=status, headers=headers)


def _listing_wire(request: Request) -> Wire:
    """Which door a request that both serve speaks: Anthropic's SDKs send anthropic-version."""
    return MESSAGES_WIRE if ANTHROPIC_VERSION_HEADER in request.headers else ChatWire()


async def _disconnected(receive: Receive) -> None:
    """Return when the client goes away (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(work: Awaitable[T], receive: Receive) -> T:
    """`work`'s result; ClientGone, with `work` cancelled, when the client leaves first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watch):
            pending.cancel()
        await asyncio.wait({task, watch})
    if task.cancelled():
        raise ClientGone
    return task.result()


@dataclass
class Admitted:
    """A request let in: who is calling, and the in-flight slot it holds until released."""

    principal: Principal | None
    _leave: Callable[[], None] | None = None

    def release(self) -> None:
        """Give the in-flight slot back (once)."""
        if self._leave is not None:
            self._leave()
            self._leave = None


@dataclass(frozen=True)
class _Call:
    """One validated Messages request on its way through the engine."""

    request: pb.CascadeRequest
    query: CascadeQuery
    model: ModelChoice
    admitted: Admitted
    # The tenancy checks passed: the tenant's ledger and session.
    tenancy: CascadeCall
    # The engine's deadline from the caller's announced timeout (None: the configured one).
    deadline_s: float | None = None
    # The door's format: Anthropic's Messages API or OpenAI's chat completions.
    wire: Wire = MESSAGES_WIRE

    @property
    def request_id(self) -> str:
        return self.query.route.request_id


class MessagesEdge:
    """The Messages API over the router, the engine and the query log the server built."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        engine: CascadeEngine,
        *,
        tenancy: Tenancy,
        calls: CallLog,
        authenticator: Authenticator,
        admission: AdmissionInterceptor,
        provider: Provider,
        forward_fault_headers: bool = False,
    ) -> None:
        self._settings = settings
        self._router = router
        self._engine = engine
        self._tenancy = tenancy
        self._calls = calls
        self._authenticator = authenticator
        self._admission = admission
        self._provider = provider
        self._forward_faults = forward_fault_headers
        self._ping_s = settings.http.ping_interval_s

    def app(self, tracer_provider: trace.TracerProvider | None = None) -> ASGIApp:
        """The ASGI application; with a tracer provider, one server span per request. An
        exception nothing else caught is the door's 500 error JSON (`guard.CatchAll`)."""
        app: ASGIApp = Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_exception},
            # Inside Starlette's own last handler, which would send its plain-text 500.
            middleware=[Middleware(CatchAll)],
        )
        if tracer_provider is None:
            return app
        # Only the request's own span: none for each ASGI receive and send. Its attributes
        # are the method, route, status and peer, never a header or the body.
        return OpenTelemetryMiddleware(
            app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
        )

    # -- admission: the one place a request is let in ----------------------------------

    def admit(self, request: Request, method: str, *, counted: bool = True) -> Admitted:
        """Let the request in, or raise: Overloaded (the server is at capacity),
        Unauthenticated or PermissionDenied (its token). The tenancy checks belong here."""
        leave: Callable[[], None] | None = None
        if counted:
            self._admission.enter()
            leave = self._admission.leave
        try:
            principal = self._authenticate(request, method)
        except BaseException:
            if leave is not None:
                leave()
            raise
        return Admitted(principal, leave)

    def _authenticate(self, request: Request, method: str) -> Principal | None:
        headers = request.headers
        if not self._authenticator.enabled:
            return None
        token = headers.get("x-api-key", "").strip()
        authorization = headers.get("authorization", "")
        if not token and authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
            token = value.strip()
        if not token:
            raise Unauthenticated(
                "missing credential: send the header x-api-key or Authorization: Bearer <token>"
            )
        # The gRPC rules, unchanged: an unknown token is refused (the tenant it may act for
        # is the tenancy core's `resolve_tenant`, in `_identify`).
        return self._authenticator.authorize(method, bearer_metadata(token), None)

    async def open(self, query: CascadeQuery) -> tuple[CascadeQuery, CascadeCall]:
        """The tenancy checks before the Cascade runs (docs/tenancy.md): the tenant's rate
        limits and budget (TenantLimited), its session's floor; the query with them. HTTP
        requests claim no request id: a repeat runs again."""
        route = query.route
        call = await self._tenancy.open_cascade(
            route.tenant_id, "", "", session_id=route.session_id, lease_s=0.0
        )
        route = dataclasses.replace(
            route, session_floor=call.session_floor, session_loop_tier=call.session_loop_tier
        )
        return dataclasses.replace(query, route=route, cheapest_only=call.admission.cheapest), call

    # -- POST /v1/messages --------------------------------------------------------------

    async def messages(self, request: Request) -> Response:
        """Answer one Messages request, whole or as a stream."""

        def parse(body: dict[str, Any]) -> tuple[ParsedRequest, Wire]:
            return parse_request(body, self._settings, self._operating_points()), MESSAGES_WIRE

        return await self._answer(request, MESSAGES_METHOD, MESSAGES_WIRE, parse)

    # -- POST /v1/chat/completions --------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        """Answer one OpenAI chat-completions request, whole or as a stream."""

        def parse(body: dict[str, Any]) -> tuple[ParsedRequest, Wire]:
            chat = parse_chat(body, self._settings, self._operating_points())
            return chat.parsed, ChatWire(include_usage=chat.include_usage)

        return await self._answer(request, CHAT_METHOD, ChatWire(), parse)

    async def _answer(
        self,
        request: Request,
        method: str,
        wire: Wire,
        parse: Callable[[dict[str, Any]], tuple[ParsedRequest, Wire]],
    ) -> Response:
        """Admit, read, convert and open one request; the response that runs it."""
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            admitted = self.admit(request, method)
        except TierrouteError as exc:
            logger.info("refused %s: %s", method, type(exc).__name__)
            return _error_response(http_error(exc), request_id, wire)
        cascade_request = pb.CascadeRequest(request_id=request_id)
        deadline = self._deadline(request)
        try:
            self._identify(cascade_request, request, admitted.principal, request_id)
            body = await read_json(
                request, self._settings.http.max_body_bytes, within_s=deadline.remaining()
            )
            parsed, wire = parse(body)
            cascade_request = parsed.request
            self._identify(cascade_request, request, admitted.principal, request_id)
            query = convert.cascade_query(cascade_request, self._settings, self._faults(request))
            query, tenancy = await self.open(query)
        except Exception as exc:
            admitted.release()
            self._failed(cascade_request, exc)
            if isinstance(exc, ClientGone):
                return Response(status_code=499)  # nobody reads it
            return _error_response(http_error(exc), request_id, wire)
        call = _Call(
            cascade_request,
            dataclasses.replace(query, pinned=parsed.model.tier is not None),
            parsed.model,
            admitted,
            tenancy,
            deadline.engine_s(),
            wire,
        )
        return _Streamed(self, call) if parsed.stream else _Answered(self, call)

    def _deadline(self, request: Request) -> _Deadline:
        """The request's one deadline, from now: the caller's announced timeout, else the
        configured default, capped by `cascade.max_deadline_s`."""
        cascade = self._settings.cascade
        announced = _announced_timeout(request)
        seconds = cascade.default_deadline_s if announced is None else announced
        return _Deadline(time.monotonic() + min(seconds, cascade.max_deadline_s), announced)

    def _operating_points(self) -> Sequence[str]:
        # The names the served model ships (none until the model has operating points).
        return tuple(getattr(self._router.scorer, "operating_points", None) or ())

    def _identify(
        self,
        target: pb.CascadeRequest,
        request: Request,
        principal: Principal | None,
        request_id: str,
    ) -> None:
        headers = request.headers
        target.request_id = request_id
        target.session_id = headers.get(SESSION_HEADER, "")
        # The gRPC rule: the token's tenant, and naming another is PermissionDenied.
        target.tenant_id = resolve_tenant(
            token_tenant=principal.tenant if principal is not None else None,
            auth_enabled=principal is not None,
            requested="",
            header=headers.get(self._settings.tenancy.tenant_header),
        )

    def _faults(self, request: Request) -> dict[str, str]:
        if not self._forward_faults:
            return {}
        return {k: request.headers[k] for k in FAULT_HEADERS if k in request.headers}

    def _failed(self, request: pb.CascadeRequest, exc: BaseException) -> None:
        self._calls.failed(
            "cascade",
            asyncio.CancelledError() if isinstance(exc, ClientGone) else exc,
            request_id=request.request_id,
            texts=request_texts(request),
            tenant_id=request.tenant_id,
            session_id=request.session_id,
        )

    def run(
        self, call: _Call, events: EventStream | None = None
    ) -> Coroutine[Any, Any, CascadeResult]:
        """The engine's run of the call, within the caller's deadline (capped by config) and
        its tenant's ledger."""
        return self._engine.run(
            call.query,
            deadline_s=call.deadline_s,
            events=events,
            ledger=call.tenancy.ledger(call.request_id),
        )

    def strategy(self, call: _Call) -> str:
        """How the answering tier was chosen, known before the answer is."""
        if call.model.strategy is not None:
            return call.model.strategy
        if call.query.self_routing:
            return "self_routing"
        return call.query.route.strategy or self._settings.routing.default_strategy

    async def answered(self, call: _Call, result: CascadeResult) -> dict[str, str]:
        """Raise the session's floor to the answering tier, log the call; its headers."""
        await call.tenancy.answered(
            call.query.route.session_id,
            result.tier_index,
            tool_call=result.judge_status == "tool_use",
            sticky=self._settings.routing.session_sticky,
            result=b"",
        )
        self._calls.answered(call.query, result)
        return tierroute_headers(result, self.strategy(call), call.request_id)

    def failed(self, call: _Call, exc: BaseException) -> None:
        """Log the call that failed with `exc` (ClientGone: cancelled)."""
        self._failed(call.request, exc)

    def error(self, call: _Call, exc: Exception) -> HttpError:
        """Log the call that failed with `exc`; the error to send."""
        self._failed(call.request, exc)
        return http_error(exc)

    def tier_model(self, tier: str) -> str:
        """The configured model of tier `tier`."""
        return self._settings.tier(tier).model

    @property
    def ping_s(self) -> float:
        """Seconds of silence after which a started stream sends a ping."""
        return self._ping_s

    # -- GET /v1/models -----------------------------------------------------------------

    def _model_list(self, anthropic: bool) -> list[dict[str, Any]]:
        points = self._operating_points()
        entries = [(CASCADE_MODEL, "tierroute: the Cascade at its default operating point")]
        entries.extend(
            (f"{CASCADE_MODEL}@{p}", f"tierroute: the Cascade at operating point {p}")
            for p in points
        )
        entries.extend((t.model, f"{t.model} (tier {t.name})") for t in self._settings.tiers)
        if not anthropic:
            # OpenAI's Model object; `created` is the epoch, as `created_at` is.
            return [
                {"id": id_, "object": "model", "created": 0, "owned_by": "tierroute"}
                for id_, _ in entries
            ]
        return [
            {"type": "model", "id": id_, "display_name": name, "created_at": _CREATED_AT}
            for id_, name in entries
        ]

    async def models(self, request: Request) -> Response:
        """Every model id a request may send, as Anthropic lists its models to Anthropic's
        SDKs (the anthropic-version header) and as OpenAI does to anyone else."""
        wire = _listing_wire(request)
        try:
            self.admit(request, MODELS_METHOD, counted=False)
        except TierrouteError as exc:
            return _error_response(http_error(exc), wire=wire)
        anthropic = wire is MESSAGES_WIRE
        data = self._model_list(anthropic)
        if not anthropic:
            return _JSON({"object": "list", "data": data})
        return _JSON(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    async def model(self, request: Request) -> Response:
        """One model id, or 404 (in the shape `models` uses)."""
        wire = _listing_wire(request)
        try:
            self.admit(request, MODELS_METHOD, counted=False)
            wanted = request.path_params["model_id"]
            choose_model(wanted, self._settings, self._operating_points())
        except TierrouteError as exc:
            return _error_response(http_error(exc), wire=wire)
        (entry,) = (m for m in self._model_list(wire is MESSAGES_WIRE) if m["id"] == wanted)
        return _JSON(entry)

    # -- POST /v1/messages/count_tokens ---------------------------------------------------

    async def count_tokens(self, request: Request) -> Response:
        """The input tokens of a Messages request, as the provider of the model it names
        counts them; for the Cascade, the tier it would start on (`tokens.count_query`)."""
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            admitted = self.admit(request, COUNT_TOKENS_METHOD)
        except TierrouteError as exc:
            return _error_response(http_error(exc), request_id)
        deadline = self._deadline(request)
        try:
            body = await read_json(
                request, self._settings.http.max_body_bytes, within_s=deadline.remaining()
            )
            counted = count_query(body, self._settings, self._router, self._operating_points())
            tokens = await _unless_gone(
                self._provider.count_tokens(
                    model=counted.tier.model,
                    messages=counted.messages,
                    timeout_s=self._settings.cascade.per_call_timeout_s,
                    system=counted.system,
                    headers=self._faults(request),
                    params=counted.params,
                ),
                request.receive,
            )
        except ClientGone:
            return Response(status_code=499)  # nobody reads it
        except Exception as exc:
            return _error_response(http_error(exc), request_id)
        finally:
            admitted.release()
        headers = {
            "x-tierroute-tier": counted.tier.name,
            "x-tierroute-request-id": request_id,
            "request-id": request_id,
        }
        return _JSON({"input_tokens": tokens}, headers=headers)


@dataclass(frozen=True)
class _Deadline:
    """When a request's time is up; it covers receiving the body as well as answering."""

    at: float
    # The caller's announced timeout (None: the configured default applies).
    announced: float | None

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self.at - time.monotonic())

    def engine_s(self) -> float:
        """The engine's share of what is left: less a margin when the caller announced its
        own timeout, so an answer in hand still reaches it (`convert.engine_deadline`)."""
        left = self.remaining()
        if self.announced is None:
            return left
        engine = convert.engine_deadline(left)
        assert engine is not None
        return engine


def _announced_timeout(request: Request) -> float | None:
    """The seconds the client will wait, as its SDK announces them; None when unsaid."""
    announced = request.headers.get(TIMEOUT_HEADER) or request.headers.get(READ_TIMEOUT_HEADER, "")
    try:
        seconds = float(announced)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) as Anthropic's error JSON."""
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "api_error")
    error = HttpError(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}")
    return _error_response(error)


class _CallResponse(Response):
    """The response to one admitted call; it runs the call when Starlette sends it."""

    def __init__(self, edge: MessagesEdge, call: _Call) -> None:
        super().__init__()
        self._edge = edge
        self._call = call


class _Answered(_CallResponse):
    """A whole Message: the engine's answer as JSON, once it is there."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self._call
        try:
            result = await _unless_gone(self._edge.run(call), receive)
        except ClientGone as exc:
            self._edge.failed(call, exc)
            return
        except Exception as exc:
            response: Response = _error_response(
                self._edge.error(call, exc), call.request_id, call.wire
            )
        except BaseException as exc:
            # Cancelled (the server stops): logged as such, and the cancellation goes on.
            self._edge.failed(call, exc)
            raise
        else:
            headers = await self._edge.answered(call, result)
            response = _JSON(call.wire.body(result), headers=headers)
        finally:
            call.admitted.release()
        await response(scope, receive, send)


class _Streamed(_CallResponse):
    """A streamed Message: server-sent events from the Cascade's commit point on."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self._call
        events = EventStream()
        run: asyncio.Task[CascadeResult] = asyncio.create_task(
            self._edge.run(call, events), name=f"http-stream-{call.request_id}"
        )
        run.add_done_callback(lambda _: events.close())
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._serve(events.until_closed(), run, watch, scope, send)
        except ClientGone as exc:
            self._edge.failed(call, exc)
        except BaseException as exc:
            self._edge.failed(call, exc)
            raise
        finally:
            call.admitted.release()
            for task in (run, watch):
                task.cancel()
            await asyncio.wait({run, watch})

    async def _next(
        self,
        events: AsyncIterator[CascadeEvent],
        watch: asyncio.Future[None],
        ping: Callable[[], Awaitable[None]] | None = None,
    ) -> CascadeEvent | None:
        """The next event (None: the stream closed), sending pings while none comes."""
        pending = asyncio.ensure_future(anext(events, None))
        waiting: set[asyncio.Future[Any]] = {pending, watch}
        try:
            while True:
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=self._edge.ping_s if ping is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if pending in done:
                    return pending.result()
                if watch in done:
                    raise ClientGone
                if ping is not None:
                    await ping()
        finally:
            pending.cancel()

    async def _serve(
        self,
        events: AsyncIterator[CascadeEvent],
        run: asyncio.Task[CascadeResult],
        watch: asyncio.Future[None],
        scope: Scope,
        send: Send,
    ) -> None:
        call = self._call
        # Until the commit point nothing is sent, so a failure is still an HTTP error.
        first = await self._next(events, watch)
        while first is not None and not isinstance(first, TextEvent | ResultEvent):
            first = await self._next(events, watch)
        if first is None:
            try:
                await run
            except Exception as exc:
                error = self._edge.error(call, exc)
                response = _error_response(error, call.request_id, call.wire)
                await response(scope, _never, send)
                return
            raise AssertionError("the cascade ended without a result")  # pragma: no cover
        tier = first.tier if isinstance(first, TextEvent) else first.result.tier.name
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-tierroute-tier": tier,
            "x-tierroute-strategy": self._edge.strategy(call),
            "x-tierroute-request-id": call.request_id,
            "request-id": call.request_id,
        }
        if isinstance(first, ResultEvent):
            headers["x-tierroute-cost-usd"] = f"{first.result.total_cost_usd:.8f}"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )

        async def chunk(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        model = (
            answer_model(first.result)
            if isinstance(first, ResultEvent)
            else self._edge.tier_model(tier)
        )
        writer = call.wire.events(call.request_id, model)

        async def ping() -> None:
            await chunk(writer.ping())

        await chunk(writer.start())
        event: CascadeEvent | None = first
        try:
            while event is not None:
                if isinstance(event, TextEvent):
                    await chunk(writer.text(event.text))
                elif isinstance(event, RetractEvent):
                    # Without drafts committed text is never withdrawn; if it were, the
                    # stream could not take it back.
                    raise TierrouteError(f"the {event.tier} answer was withdrawn mid-stream")
                event = await self._next(events, watch, ping)
            result = await run
        except (ClientGone, asyncio.CancelledError):
            raise
        except Exception as exc:
            await chunk(writer.error(self._edge.error(call, exc)))
        else:
            headers = await self._edge.answered(call, result)
            extension = {
                "tier": result.tier.name,
                "model": answer_model(result),
                "strategy": headers["x-tierroute-strategy"],
                "cost_usd": result.total_cost_usd,
                "judge_status": result.judge_status,
                "escalated": result.escalated,
            }
            await chunk(writer.finish(result, extension))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _never() -> Message:
    # A Response's receive, for an error sent while the stream's own receive is watched.
    await asyncio.Event().wait()
    raise AssertionError("unreachable")  # pragma: no cover
