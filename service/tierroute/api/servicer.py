"""The gRPC servicer: validate, convert to domain objects, call the core, convert back.

It holds no routing or cascade logic of its own; errors propagate as tierroute exceptions
and `tierroute.api.status` maps them to status codes in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from tierroute.api import convert, recording
from tierroute.api.calllog import CallLog, request_texts
from tierroute.api.security import current_tenant
from tierroute.cascade import CascadeEngine, CascadeQuery, EventStream
from tierroute.errors import (
    ConfigError,
    InvalidRequest,
    ModelLoadError,
    NotFound,
)
from tierroute.model import ModelReloader, valid_version_name
from tierroute.providers.replay.faults import FAULT_HEADERS
from tierroute.querylog import FeedbackRecord, QueryLogWriter
from tierroute.querylog.records import Kind
from tierroute.routing import RouteQuery, Router
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]


def _with_tenant(query: RouteQuery) -> RouteQuery:
    # With authentication on, a request that names no tenant is the token's tenant's.
    tenant = current_tenant()
    if query.tenant_id or not tenant:
        return query
    return dataclasses.replace(query, tenant_id=tenant)


class TierRouterServicer(pb_grpc.TierRouterServicer):
    """Translates TierRouter calls to the router core and records each call in the log."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        engine: CascadeEngine | None,
        *,
        querylog: QueryLogWriter | None = None,
        models: ModelReloader | None = None,
        forward_fault_headers: bool = False,
    ) -> None:
        self._settings = settings
        self._router = router
        self._engine = engine
        self._log = querylog
        self._models = models
        # The query-log side of each call, shared in form with the HTTP endpoint.
        self._calls = CallLog(settings, router, querylog, models)
        self._store_text = settings.querylog.store_text
        self._forward_faults = forward_fault_headers
        self._tier_names = tuple(t.name for t in settings.tiers)

    def _record_failure(
        self,
        kind: Kind,
        request: pb.RouteRequest | pb.CascadeRequest,
        exc: BaseException,
    ) -> None:
        self._calls.failed(
            kind,
            exc,
            request_id=request.request_id,
            texts=request_texts(request),
            tenant_id=request.tenant_id or current_tenant() or "",
            session_id=request.session_id,
        )

    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        try:
            query = _with_tenant(convert.route_query(request, self._settings))
            if query.strategy == "self_routing":
                raise InvalidRequest(
                    "self-routing calls a model; use Cascade for STRATEGY_SELF_ROUTING"
                )
            decision = self._router.route(query)
        except BaseException as exc:
            self._record_failure("route", request, exc)
            raise
        self._calls.record(
            recording.route_record(query, decision, store_text=self._store_text), query.text
        )
        return convert.route_response(decision, query.request_id, self._tier_names)

    def _cascade_query(self, request: pb.CascadeRequest, context: Context) -> CascadeQuery:
        headers: dict[str, str] = {}
        if self._forward_faults:
            for key, value in context.invocation_metadata() or ():
                if key in FAULT_HEADERS and isinstance(value, str):
                    headers[key] = value
        query = convert.cascade_query(request, self._settings, headers)
        return dataclasses.replace(query, route=_with_tenant(query.route))

    async def Cascade(self, request: pb.CascadeRequest, context: Context) -> pb.CascadeResponse:
        if self._engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no model backend is configured")
        try:
            query = self._cascade_query(request, context)
            if query.stream_drafts:
                raise InvalidRequest("stream_drafts is for CascadeStream; Cascade has no drafts")
            # The caller's deadline flows down to every provider call; the engine caps it.
            result = await self._engine.run(
                query, deadline_s=convert.engine_deadline(context.time_remaining())
            )
        except BaseException as exc:
            self._record_failure("cascade", request, exc)
            raise
        self._calls.answered(query, result)
        return convert.cascade_response(result, self._tier_names)

    async def CascadeStream(
        self, request: pb.CascadeRequest, context: Context
    ) -> AsyncIterator[pb.CascadeEvent]:
        """The cascade as events: the engine runs in a task of this call, and leaving the
        stream for any reason (the client cancelled, the deadline passed) cancels it, and
        with it every provider call in flight."""
        if self._engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no model backend is configured")
        try:
            query = self._cascade_query(request, context)
            events = EventStream(drafts=query.stream_drafts)
            run = asyncio.create_task(
                self._engine.run(
                    query,
                    deadline_s=convert.engine_deadline(context.time_remaining()),
                    events=events,
                ),
                name=f"cascade-stream-{query.route.request_id}",
            )
            run.add_done_callback(lambda _: events.close())
            try:
                async for event in events.until_closed():
                    yield convert.cascade_event(event, self._tier_names)
                result = await run
            finally:
                if not run.done():
                    run.cancel()
                    await asyncio.wait([run])
        except BaseException as exc:
            self._record_failure("cascade", request, exc)
            raise
        self._calls.answered(query, result)

    async def Feedback(self, request: pb.FeedbackRequest, context: Context) -> pb.FeedbackResponse:
        if not request.request_id or len(request.request_id) > self._settings.limits.max_id_chars:
            raise InvalidRequest("request_id must name an earlier Route or Cascade call")
        if request.rating and not 1 <= request.rating <= 5:
            raise InvalidRequest(f"rating must be within 1-5 (or 0 for none), got {request.rating}")
        correct = request.correct if request.HasField("correct") else None
        if not request.rating and correct is None:
            raise InvalidRequest("give a rating, a correct flag, or both")
        if len(request.tenant_id) > self._settings.limits.max_id_chars:
            raise InvalidRequest("tenant_id is too long")
        if self._log is None:
            raise ConfigError("the query log is disabled, so feedback cannot be recorded")
        # With authentication on, a tenant may only give feedback on its own calls.
        if not await self._log.has_request(request.request_id, tenant_id=current_tenant()):
            raise NotFound(f"no logged call has request_id {request.request_id!r}")
        self._log.submit_feedback(
            FeedbackRecord(
                request_id=request.request_id,
                rating=request.rating or None,
                correct=correct,
                tenant_id=request.tenant_id or current_tenant() or "",
            )
        )
        return pb.FeedbackResponse(request_id=request.request_id)

    def _reloader(self) -> ModelReloader:
        if self._models is None:
            raise ConfigError("this server cannot reload its model")
        return self._models

    async def ReloadModel(
        self, request: pb.ReloadModelRequest, context: Context
    ) -> pb.ReloadModelResponse:
        if request.version and not valid_version_name(request.version):
            raise InvalidRequest("version must be a registry version name (letters, digits, ._-)")
        serving = self._router.model_version
        try:
            swap = await self._reloader().reload(request.version)
        except ModelLoadError as exc:
            # At start-up a bad model means nothing can serve (UNAVAILABLE); here the old
            # model keeps serving, so the call failed on the registry's state instead.
            raise ConfigError(f"model not reloaded; still serving {serving}: {exc}") from exc
        return pb.ReloadModelResponse(previous_version=swap.previous, version=swap.version)

    async def RollbackModel(
        self, request: pb.RollbackModelRequest, context: Context
    ) -> pb.RollbackModelResponse:
        serving = self._router.model_version
        try:
            swap = await self._reloader().rollback()
        except ModelLoadError as exc:
            raise ConfigError(f"not rolled back; still serving {serving}: {exc}") from exc
        return pb.RollbackModelResponse(previous_version=swap.previous, version=swap.version)
