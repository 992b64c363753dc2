"""The gRPC edge: the server and its lifecycle, the servicer that translates protobuf to the
core and back, health, TLS and bearer tokens, admission control, error-to-status mapping and
the query-log records of each call; and, in `http`, Anthropic's Messages API over HTTP in the
same process. The only wing that imports grpc.

The door is lazy (`tierroute.lazy_door`): the command-line front ends in this wing
(`call_commands`) must not load the server to call one.
"""

from typing import TYPE_CHECKING

from tierroute import lazy_door

if TYPE_CHECKING:
    from tierroute.api.health import tier_health_name
    from tierroute.api.server import TierRouteServer, serve
    from tierroute.api.status import MethodHandler, ServerInterceptor, status_for

__all__ = [
    "MethodHandler",
    "ServerInterceptor",
    "TierRouteServer",
    "serve",
    "status_for",
    "tier_health_name",
]

__getattr__ = lazy_door(
    __name__,
    {
        "health": ["tier_health_name"],
        "server": ["TierRouteServer", "serve"],
        "status": ["MethodHandler", "ServerInterceptor", "status_for"],
    },
)
