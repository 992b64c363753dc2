"""The client's one exception type, carrying the gRPC status code of a failed call."""

from __future__ import annotations

import grpc

# Codes after which sending the same request again may succeed.
_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)


class TierRouteClientError(Exception):
    """A tierroute call failed; `code` is its gRPC status code, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @property
    def transient(self) -> bool:
        """Whether the failure may pass on a later attempt (after the client's own retries)."""
        return self.code in _TRANSIENT

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> TierRouteClientError:
        """Translate a failed call from grpc (sync or asyncio)."""
        # Every RpcError that a call raises is also a grpc.Call with code() and details().
        code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
        details = exc.details() if callable(getattr(exc, "details", None)) else None
        return cls(code, details or "")
