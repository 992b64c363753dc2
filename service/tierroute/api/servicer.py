"""The gRPC servicer: validate, convert to domain objects, call the core, convert back.

It holds no routing or cascade logic of its own; errors propagate as tierroute exceptions
and `tierroute.api.status` maps them to status codes in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from tierroute.api import convert, recording
from tierroute.api.calllog import CallLog
from tierroute.api.live_labels import LiveLabeller, decision_metadata, is_unfamiliar
from tierroute.api.security import current_principal, current_tenant
from tierroute.api.status import status_for
from tierroute.cascade import CascadeEngine, CascadeQuery, CascadeResult, EventStream
from tierroute.errors import (
    ConfigError,
    InvalidRequest,
    ModelLoadError,
    NotFound,
    TierrouteError,
)
from tierroute.model import ModelReloader, valid_version_name
from tierroute.providers.replay.faults import FAULT_HEADERS
from tierroute.querylog import FeedbackRecord, QueryLog, QueryRecord
from tierroute.querylog.records import SHADOW_PREFIX, Kind
from tierroute.routing import Decision, RouteQuery, Router
from tierroute.settings import Settings
from tierroute.tenancy import CascadeCall, Tenancy, resolve_tenant
from tierroute.v1 import tierroute_pb2 as pb
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]


# Held on a request id beyond the call's own deadline, so that a replica that dies with it
# running frees it for a retry a little after the call would have ended anyway.
LEASE_MARGIN_S = 30.0


def _fingerprint(request: pb.CascadeRequest) -> str:
    """What a repeat of a request id must match: the request itself."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


class TierRouterServicer(pb_grpc.TierRouterServicer):
    """Translates TierRouter calls to the router core and records each call in the log."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        engine: CascadeEngine | None,
        *,
        tenancy: Tenancy,
        querylog: QueryLog | None = None,
        models: ModelReloader | None = None,
        forward_fault_headers: bool = False,
        labels: LiveLabeller | None = None,
    ) -> None:
        self._settings = settings
        self._labels = labels
        self._tenancy = tenancy
        self._router = router
        self._engine = engine
        self._log = querylog
        self._models = models
        self._store_text = settings.querylog.store_text
        self._shadow_rate = settings.shadow.sample_rate
        self._rng = random.Random()
        self._calls = CallLog(settings, querylog, models)
        self._forward_faults = forward_fault_headers
        self._tier_names = tuple(t.name for t in settings.tiers)

    def _shadow(
        self, record: QueryRecord, query: RouteQuery | None, *, sampled: bool = False
    ) -> dict[str, Any]:
        """Shadow mode: for a sampled call (drawn here, or `sampled` for live labelling),
        what the policy would have decided, with the text.

        A caller's own `shadow.*` metadata is dropped, so only the server marks a sample.
        """
        metadata = {k: v for k, v in record.metadata.items() if not k.startswith(SHADOW_PREFIX)}
        changes: dict[str, Any] = {}
        if len(metadata) != len(record.metadata):
            changes["metadata"] = metadata
        if query is None:
            return changes
        if not sampled and (self._shadow_rate <= 0 or self._rng.random() >= self._shadow_rate):
            return changes
        try:
            decision = self._router.decide(
                dataclasses.replace(query, strategy="classifier", rule="calibrated")
            )
        except TierrouteError as exc:
            logger.debug("shadow decision unavailable: %s", exc)
            return changes
        metadata.update(decision_metadata(decision))
        return {"metadata": metadata, "query_text": query.text}

    def _record(
        self,
        record: QueryRecord,
        text: str,
        answer: str | None = None,
        query: RouteQuery | None = None,
        decision: Decision | None = None,
    ) -> None:
        if self._log is None:
            return
        unfamiliar = is_unfamiliar(decision)
        label = (
            self._labels is not None
            and query is not None
            and self._labels.wants(unfamiliar=unfamiliar)
        )
        extra = self._shadow(record, query, sampled=label)
        self._calls.record(record, text, answer, extra)
        if label and self._labels is not None and "query_text" in extra:
            # Queued only: the labelling runs in the background, after this call returns.
            self._labels.offer(record.request_id, text, unfamiliar=unfamiliar)

    def _record_failure(
        self,
        kind: Kind,
        request: pb.RouteRequest | pb.CascadeRequest,
        exc: BaseException,
    ) -> None:
        if self._log is None:
            return
        if isinstance(exc, TierrouteError):
            status = status_for(exc).name
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            # Cancelled, or a stream the client left (gRPC closes its generator).
            status = "CANCELLED"
        elif isinstance(exc, aio.AbortError):
            return  # aborted calls were recorded where they aborted
        else:
            status = "INTERNAL"
        texts = (
            [request.query]
            if request.query
            else [m.content for m in request.messages if m.role == pb.ROLE_USER]
        )
        self._log.submit(
            recording.failed_record(
                kind,
                request_id=request.request_id[:128] or uuid.uuid4().hex,
                texts=texts,
                status=status,
                store_text=self._store_text,
                tenant_id=request.tenant_id or current_tenant() or "",
                session_id=request.session_id,
            )
        )

    def _tenant(self, query: RouteQuery, context: Context) -> RouteQuery:
        """The query with its tenant (docs/tenancy.md): the token's, else the request's or
        the tenant header's when authentication is off."""
        return dataclasses.replace(query, tenant_id=self._tenant_id(query, context))

    def _tenant_id(self, query: RouteQuery, context: Context) -> str:
        header = self._settings.tenancy.tenant_header
        named = [v for k, v in context.invocation_metadata() or () if k == header]
        tenant = resolve_tenant(
            token_tenant=current_tenant(),
            auth_enabled=current_principal() is not None,
            requested=query.tenant_id,
            header=str(named[0]) if named else None,
        )
        if len(tenant) > self._settings.limits.max_id_chars:
            raise InvalidRequest("the tenant id is too long")
        return tenant

    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        try:
            query = convert.route_query(request, self._settings)
            if query.strategy == "self_routing":
                raise InvalidRequest(
                    "self-routing calls a model; use Cascade for STRATEGY_SELF_ROUTING"
                )
            tenant = self._tenant_id(query, context)
            # Route calls no model: it counts toward the tenant's requests per minute only,
            # and reads its session's floor without raising it.
            await self._tenancy.admit(tenant, model_calls=False)
            floor, loop = await self._tenancy.session(tenant, query.session_id)
            query = dataclasses.replace(
                query, tenant_id=tenant, session_floor=floor, session_loop_tier=loop
            )
            decision = self._router.route(query)
        except BaseException as exc:
            self._record_failure("route", request, exc)
            raise
        self._record(
            recording.route_record(query, decision, store_text=self._store_text),
            query.text,
            query=query,
            decision=decision,
        )
        return convert.route_response(decision, query.request_id, self._tier_names)

    def _cascade_query(self, request: pb.CascadeRequest, context: Context) -> CascadeQuery:
        headers: dict[str, str] = {}
        if self._forward_faults:
            for key, value in context.invocation_metadata() or ():
                if key in FAULT_HEADERS and isinstance(value, str):
                    headers[key] = value
        query = convert.cascade_query(request, self._settings, headers)
        return dataclasses.replace(query, route=self._tenant(query.route, context))

    async def _open(
        self, query: CascadeQuery, request: pb.CascadeRequest, context: Context
    ) -> tuple[CascadeQuery, CascadeCall]:
        """The tenancy checks before a Cascade runs; the query with its session's state
        (and, over budget in cheapest mode, on the cheapest tier)."""
        route = query.route
        remaining = context.time_remaining()
        deadline = self._settings.cascade.max_deadline_s
        call = await self._tenancy.open_cascade(
            route.tenant_id,
            request.request_id,
            _fingerprint(request),
            session_id=route.session_id,
            lease_s=(deadline if remaining is None else min(remaining, deadline)) + LEASE_MARGIN_S,
        )
        route = dataclasses.replace(
            route, session_floor=call.session_floor, session_loop_tier=call.session_loop_tier
        )
        return (
            dataclasses.replace(query, route=route, cheapest_only=call.admission.cheapest),
            call,
        )

    async def _run(self, query: CascadeQuery, call: CascadeCall, **kwargs: Any) -> CascadeResult:
        assert self._engine is not None
        request_id = query.route.request_id or uuid.uuid4().hex
        query = dataclasses.replace(
            query, route=dataclasses.replace(query.route, request_id=request_id)
        )
        return await self._engine.run(query, ledger=call.ledger(request_id), **kwargs)

    async def _answered(
        self,
        query: CascadeQuery,
        call: CascadeCall,
        result: CascadeResult,
        response: pb.CascadeResponse,
    ) -> None:
        """Raise the session's floor to the answering tier, keep the result for repeats of
        its request id, and log the call."""
        await call.answered(
            query.route.session_id,
            result.tier_index,
            tool_call=result.judge_status == "tool_use",
            sticky=self._settings.routing.session_sticky,
            result=response.SerializeToString(),
        )
        strategy = "self_routing" if query.self_routing else ""
        self._record(
            recording.cascade_record(
                query.route, result, strategy=strategy, store_text=self._store_text
            ),
            query.route.text,
            result.answer,
            query=query.route,
            decision=result.decision,
        )

    async def Cascade(self, request: pb.CascadeRequest, context: Context) -> pb.CascadeResponse:
        if self._engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no model backend is configured")
        call: CascadeCall | None = None
        try:
            query = self._cascade_query(request, context)
            if query.stream_drafts:
                raise InvalidRequest("stream_drafts is for CascadeStream; Cascade has no drafts")
            query, call = await self._open(query, request, context)
            if call.recorded is not None:
                # A repeat of a finished request id: its answer, with no model called.
                return pb.CascadeResponse.FromString(call.recorded)
            # The caller's deadline flows down to every provider call; the engine caps it.
            result = await self._run(
                query, call, deadline_s=convert.engine_deadline(context.time_remaining())
            )
        except BaseException as exc:
            if call is not None:
                await call.failed(cancelled=isinstance(exc, asyncio.CancelledError | GeneratorExit))
            self._record_failure("cascade", request, exc)
            raise
        response = convert.cascade_response(result, self._tier_names)
        await self._answered(query, call, result, response)
        return response

    async def CascadeStream(
        self, request: pb.CascadeRequest, context: Context
    ) -> AsyncIterator[pb.CascadeEvent]:
        """The cascade as events: the engine runs in a task of this call, and leaving the
        stream for any reason (the client cancelled, the deadline passed) cancels it, and
        with it every provider call in flight."""
        if self._engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no model backend is configured")
        call: CascadeCall | None = None
        try:
            query = self._cascade_query(request, context)
            query, call = await self._open(query, request, context)
            if call.recorded is not None:
                recorded = pb.CascadeResponse.FromString(call.recorded)
                if recorded.answer:
                    yield pb.CascadeEvent(text=recorded.answer)
                yield pb.CascadeEvent(response=recorded)
                return
            events = EventStream(drafts=query.stream_drafts)
            run = asyncio.create_task(
                self._run(
                    query,
                    call,
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
            if call is not None:
                await call.failed(cancelled=isinstance(exc, asyncio.CancelledError | GeneratorExit))
            self._record_failure("cascade", request, exc)
            raise
        await self._answered(
            query, call, result, convert.cascade_response(result, self._tier_names)
        )

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
