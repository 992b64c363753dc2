"""Typed Python clients for the tierroute gRPC service.

`TierRouteClient` blocks, `AsyncTierRouteClient` awaits; both stream a cascade's events
(`cascade_stream`), balance calls over every replica (`round_robin`), retry the idempotent
`Route` through the gRPC service config, give every call a default deadline, and raise
`TierRouteClientError` (with the gRPC status code) when a call fails.
"""

from tierroute_client._channel import RetryPolicy, resolve_target, service_config
from tierroute_client._client import (
    DEFAULT_CASCADE_DEADLINE_S,
    DEFAULT_DEADLINE_S,
    DEFAULT_TARGET,
    AsyncTierRouteClient,
    TierRouteClient,
)
from tierroute_client._errors import TierRouteClientError
from tierroute_client._events import (
    CascadeEvent,
    Final,
    HopFinished,
    HopStarted,
    Retract,
    TextDelta,
    Verdict,
)
from tierroute_client._requests import CascadeOptions, FeedbackOptions, RouteOptions
from tierroute_client._results import CascadeResult, Features, Hop, Reason, RouteResult

__all__ = [
    "DEFAULT_CASCADE_DEADLINE_S",
    "DEFAULT_DEADLINE_S",
    "DEFAULT_TARGET",
    "AsyncTierRouteClient",
    "CascadeEvent",
    "CascadeOptions",
    "CascadeResult",
    "Features",
    "FeedbackOptions",
    "Final",
    "Hop",
    "HopFinished",
    "HopStarted",
    "Reason",
    "Retract",
    "RetryPolicy",
    "RouteOptions",
    "RouteResult",
    "TextDelta",
    "TierRouteClient",
    "TierRouteClientError",
    "Verdict",
    "resolve_target",
    "service_config",
]
