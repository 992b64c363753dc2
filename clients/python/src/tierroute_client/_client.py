"""`TierRouteClient` (blocking) and `AsyncTierRouteClient` (asyncio): one channel each.

Both take the same constructor arguments and offer `route`, `cascade`, `cascade_stream`
and `feedback`, each with a default deadline (gRPC has none of its own) that a `timeout=`
keyword overrides. `cascade_stream` is a generator (an async generator) of events; closing
it early cancels the call and every model call behind it. Failed calls raise
`TierRouteClientError` carrying the gRPC status code.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from types import TracebackType
from typing import Any, Self, Unpack, cast

import grpc
from grpc import aio

from tierroute_client._channel import ChannelOption, ChannelSpec, RetryPolicy, channel_spec
from tierroute_client._errors import TierRouteClientError
from tierroute_client._events import CascadeEvent, event_from_pb
from tierroute_client._requests import (
    CascadeOptions,
    FeedbackOptions,
    RouteOptions,
    cascade_request,
    feedback_request,
    route_request,
)
from tierroute_client._results import CascadeResult, RouteResult
from tierroute_client.v1 import tierroute_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
# Route calls no model and answers in milliseconds; Cascade waits for model calls,
# judges and escalations, so it needs a far longer budget.
DEFAULT_DEADLINE_S = 10.0
DEFAULT_CASCADE_DEADLINE_S = 120.0


class _Base:
    """Constructor arguments and deadline defaults shared by both clients."""

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        deadline_s: float | None = DEFAULT_DEADLINE_S,
        cascade_deadline_s: float | None = DEFAULT_CASCADE_DEADLINE_S,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: tuple[bytes, bytes] | None = None,
        token: str | None = None,
        allow_insecure_token: bool = False,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, so sharing is safe
        retry_cascade: bool = False,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        """Open a channel to `target` (an address, a gRPC target string or a list of `ip:port`).

        `deadline_s` bounds route and feedback calls, `cascade_deadline_s` cascade calls
        (None = no deadline, not recommended). `tls` uses the system roots unless
        `root_certificates` (PEM) is given; `client_certificate` is a (chain, key) PEM pair
        for mutual TLS. `token` is sent as `authorization: Bearer <token>`; over plain text
        only with `allow_insecure_token=True`. `retry=None` turns retries off.
        """
        for name, value in (("deadline_s", deadline_s), ("cascade_deadline_s", cascade_deadline_s)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        self._spec: ChannelSpec = channel_spec(
            target,
            tls=tls,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            token=token,
            allow_insecure_token=allow_insecure_token,
            retry=retry,
            retry_cascade=retry_cascade,
            options=options,
        )
        self._deadline_s = deadline_s
        self._cascade_deadline_s = cascade_deadline_s
        self._open()

    def _open(self) -> None:
        raise NotImplementedError  # each client opens its own kind of channel

    @property
    def target(self) -> str:
        """The gRPC target string the channel was opened with."""
        return self._spec.target

    def __repr__(self) -> str:
        # Never the token: only where the client points.
        return f"{type(self).__name__}(target={self._spec.target!r})"

    def _timeout(
        self, options: RouteOptions | FeedbackOptions, default: float | None
    ) -> float | None:
        # An explicit timeout=None means no deadline; leaving it out means the default.
        return options.get("timeout", default)


class TierRouteClient(_Base):
    """A blocking client; use it as a context manager or call `close()`."""

    def _open(self) -> None:
        spec = self._spec
        if spec.credentials is None:
            self._channel = grpc.insecure_channel(spec.target, options=spec.options)
        else:
            self._channel = grpc.secure_channel(spec.target, spec.credentials, options=spec.options)
        self._stub = pb_grpc.TierRouterStub(self._channel)

    def route(self, text: str | None = None, /, **options: Unpack[RouteOptions]) -> RouteResult:
        """Which tier should answer `text` (or `messages=`); retried per the retry policy."""
        request = route_request(text, options)
        try:
            response = self._stub.Route(
                request,
                timeout=self._timeout(options, self._deadline_s),
                metadata=self._spec.call_metadata,
            )
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        return RouteResult.from_pb(response)

    def cascade(
        self, text: str | None = None, /, **options: Unpack[CascadeOptions]
    ) -> CascadeResult:
        """Answer `text` through the judged cascade; not retried unless `retry_cascade`."""
        request = cascade_request(text, options)
        try:
            response = self._stub.Cascade(
                request,
                timeout=self._timeout(options, self._cascade_deadline_s),
                metadata=self._spec.call_metadata,
            )
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        return CascadeResult.from_pb(response)

    def cascade_stream(
        self, text: str | None = None, /, **options: Unpack[CascadeOptions]
    ) -> Generator[CascadeEvent, None, None]:
        """The cascade's events as they happen, the `Final` result last; never retried.

        Closing the generator early (`close()`, or a `break` that drops the last reference
        to it) cancels the call and every model call behind it.
        """
        request = cascade_request(text, options)
        call = self._stub.CascadeStream(
            request,
            timeout=self._timeout(options, self._cascade_deadline_s),
            metadata=self._spec.call_metadata,
        )
        try:
            for message in call:
                event = event_from_pb(message)
                if event is not None:
                    yield event
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        finally:
            # The stub's iterator is also the call, a grpc.Future at run time (the stubs
            # leave RpcContext.cancel untyped); cancelling a finished call does nothing.
            cast("grpc.Future[Any]", call).cancel()

    def feedback(
        self,
        request_id: str,
        rating: int | None = None,
        correct: bool | None = None,
        **options: Unpack[FeedbackOptions],
    ) -> str:
        """Record a 1-5 rating and/or a correctness flag; returns the request id recorded."""
        request = feedback_request(request_id, rating, correct, options.get("tenant_id", ""))
        try:
            response = self._stub.Feedback(
                request,
                timeout=self._timeout(options, self._deadline_s),
                metadata=self._spec.call_metadata,
            )
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        return response.request_id

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTierRouteClient(_Base):
    """An asyncio client; create it inside the event loop that will use it."""

    def _open(self) -> None:
        spec = self._spec
        if spec.credentials is None:
            self._channel = aio.insecure_channel(spec.target, options=spec.options)
        else:
            self._channel = aio.secure_channel(spec.target, spec.credentials, options=spec.options)
        self._stub = pb_grpc.TierRouterStub(self._channel)

    async def route(
        self, text: str | None = None, /, **options: Unpack[RouteOptions]
    ) -> RouteResult:
        """Which tier should answer `text` (or `messages=`); retried per the retry policy."""
        request = route_request(text, options)
        try:
            response = await self._stub.Route(
                request,
                timeout=self._timeout(options, self._deadline_s),
                metadata=self._spec.call_metadata,
            )
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        return RouteResult.from_pb(response)

    async def cascade(
        self, text: str | None = None, /, **options: Unpack[CascadeOptions]
    ) -> CascadeResult:
        """Answer `text` through the judged cascade; not retried unless `retry_cascade`."""
        request = cascade_request(text, options)
        try:
            response = await self._stub.Cascade(
                request,
                timeout=self._timeout(options, self._cascade_deadline_s),
                metadata=self._spec.call_metadata,
            )
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        return CascadeResult.from_pb(response)

    async def cascade_stream(
        self, text: str | None = None, /, **options: Unpack[CascadeOptions]
    ) -> AsyncGenerator[CascadeEvent, None]:
        """The cascade's events as they happen, the `Final` result last; never retried.

        To leave early, close the generator (`await stream.aclose()`, or iterate inside
        `contextlib.aclosing`): that cancels the call and every model call behind it at
        once. Cancelling the task that iterates does the same.
        """
        request = cascade_request(text, options)
        call = self._stub.CascadeStream(
            request,
            timeout=self._timeout(options, self._cascade_deadline_s),
            metadata=self._spec.call_metadata,
        )
        try:
            async for message in call:
                event = event_from_pb(message)
                if event is not None:
                    yield event
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        finally:
            call.cancel()

    async def feedback(
        self,
        request_id: str,
        rating: int | None = None,
        correct: bool | None = None,
        **options: Unpack[FeedbackOptions],
    ) -> str:
        """Record a 1-5 rating and/or a correctness flag; returns the request id recorded."""
        request = feedback_request(request_id, rating, correct, options.get("tenant_id", ""))
        try:
            response = await self._stub.Feedback(
                request,
                timeout=self._timeout(options, self._deadline_s),
                metadata=self._spec.call_metadata,
            )
        except grpc.RpcError as exc:
            raise TierRouteClientError.from_rpc_error(exc) from exc
        return response.request_id

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
