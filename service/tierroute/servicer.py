"""The gRPC servicer: validate, convert to domain objects, call the core, convert back.

It holds no routing or cascade logic of its own; errors propagate as tierroute exceptions
and `tierroute.status` maps them to status codes in one place.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import grpc
from grpc import aio

from tierroute import convert
from tierroute.backend import FAULT_HEADERS
from tierroute.cascade import CascadeEngine
from tierroute.errors import InvalidRequest
from tierroute.router import RouteQuery, Router
from tierroute.security import current_tenant
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
    """Translates TierRouter calls to the router core."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        engine: CascadeEngine | None,
        *,
        forward_fault_headers: bool = False,
    ) -> None:
        self._settings = settings
        self._router = router
        self._engine = engine
        self._forward_faults = forward_fault_headers
        self._tier_names = tuple(t.name for t in settings.tiers)

    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        query = _with_tenant(convert.route_query(request, self._settings))
        if query.strategy == "self_routing":
            raise InvalidRequest(
                "self-routing calls a model; use Cascade for STRATEGY_SELF_ROUTING"
            )
        decision = self._router.route(query)
        return convert.route_response(decision, query.request_id, self._tier_names)

    async def Cascade(self, request: pb.CascadeRequest, context: Context) -> pb.CascadeResponse:
        if self._engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no model backend is configured")
        headers: dict[str, str] = {}
        if self._forward_faults:
            for key, value in context.invocation_metadata() or ():
                if key in FAULT_HEADERS and isinstance(value, str):
                    headers[key] = value
        query = convert.cascade_query(request, self._settings, headers)
        query = dataclasses.replace(query, route=_with_tenant(query.route))
        # The caller's deadline flows down to every provider call; the engine caps it.
        result = await self._engine.run(query, deadline_s=context.time_remaining())
        return convert.cascade_response(result, self._tier_names)

    async def Feedback(self, request: pb.FeedbackRequest, context: Context) -> pb.FeedbackResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Feedback is not available yet")
        raise AssertionError("unreachable")
