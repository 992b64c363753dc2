"""Envoy's ext_proc HTTP filter as the tests' client of the external processor.

Envoy cannot be installed here, so this drives one `Process` stream per HTTP request the
way Envoy's filter does with the processing mode of deploy/envoy/envoy.yaml (request headers
SEND, request body BUFFERED, response headers SEND, response body and trailers NONE,
allow_mode_override on): it sends the request headers (pseudo-headers first, values as
raw_value bytes), then the whole body in one message, applies each response's header and
body mutations, honours a mode override from the headers response, answers the client
itself on an immediate_response, and refuses what Envoy refuses: a response for another
phase than the one sent, and a mutated body whose content-length does not match (Envoy
then answers 500 instead of calling the upstream).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from grpc import aio

from tierroute.api.dataplane.envoy.config.core.v3 import base_pb2
from tierroute.api.dataplane.envoy.extensions.filters.http.ext_proc.v3 import (
    processing_mode_pb2 as mode_pb,
)
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tierroute.api.dataplane.envoy.service.ext_proc.v3 import external_processor_pb2_grpc

Headers = dict[str, str]
# The upstream: request headers and body in, status, headers and body out.
Upstream = Callable[[Headers, bytes], tuple[int, Headers, bytes]]


@dataclass
class Seen:
    """What reached the upstream and the client, and what the processor asked of Envoy."""

    upstream_headers: Headers | None = None
    upstream_body: bytes | None = None
    status: int = 0
    client_headers: Headers = field(default_factory=dict)
    client_body: bytes = b""
    cleared_route_cache: bool = False
    phases: list[str] = field(default_factory=list)


def header_map(headers: Headers) -> base_pb2.HeaderMap:
    """Headers as Envoy sends them: lower-case keys, values as raw_value bytes."""
    return base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    )


def _apply(headers: Headers, mutation: ep.HeaderMutation) -> None:
    for key in mutation.remove_headers:
        headers.pop(key.lower(), None)
    for option in mutation.set_headers:
        h = option.header
        headers[h.key.lower()] = h.raw_value.decode() if h.raw_value else h.value


class ExtProcFilter:
    """One ext_proc filter in front of one upstream, calling the processor on `channel`."""

    def __init__(
        self,
        channel: aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        body_mode: int = mode_pb.ProcessingMode.BUFFERED,
    ) -> None:
        self._stub = external_processor_pb2_grpc.ExternalProcessorStub(channel)
        self._metadata = tuple(metadata)
        self._body_mode = body_mode

    async def request(
        self,
        method: str,
        path: str,
        upstream: Upstream,
        *,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> Seen:
        """Pass one HTTP request through the filter to `upstream`; what each side saw."""
        seen = Seen()
        sent: Headers = {":method": method, ":path": path, ":authority": "api.anthropic.com"}
        sent[":scheme"] = "https"
        sent.update({k.lower(): v for k, v in (headers or {}).items()})
        if body:
            sent["content-length"] = str(len(body))
        body_mode = self._body_mode
        response_header_mode = mode_pb.ProcessingMode.SEND
        call = self._stub.Process(metadata=self._metadata)
        try:
            reply = await self._exchange(
                call,
                ep.ProcessingRequest(
                    request_headers=ep.HttpHeaders(headers=header_map(sent), end_of_stream=not body)
                ),
                "request_headers",
                seen,
            )
            if reply.HasField("immediate_response"):
                return self._answered(reply.immediate_response, seen)
            _apply(sent, reply.request_headers.response.header_mutation)
            if reply.HasField("mode_override"):
                # Envoy takes the override whole: unset fields are NONE, or DEFAULT (SEND).
                override = reply.mode_override
                body_mode = override.request_body_mode
                response_header_mode = override.response_header_mode or response_header_mode
            if body and body_mode != mode_pb.ProcessingMode.NONE:
                reply = await self._exchange(
                    call,
                    ep.ProcessingRequest(
                        request_body=ep.HttpBody(
                            body=body, end_of_stream=body_mode == mode_pb.ProcessingMode.BUFFERED
                        )
                    ),
                    "request_body",
                    seen,
                )
                if reply.HasField("immediate_response"):
                    return self._answered(reply.immediate_response, seen)
                common = reply.request_body.response
                _apply(sent, common.header_mutation)
                seen.cleared_route_cache = common.clear_route_cache
                if common.HasField("body_mutation"):
                    body = common.body_mutation.body
                    if sent.get("content-length") != str(len(body)):
                        # Envoy: "mismatch between content length and the length of the
                        # mutated body"; a local reply, and the upstream is never called.
                        seen.status = 500
                        return seen
            seen.upstream_headers, seen.upstream_body = dict(sent), body
            status, answer_headers, answer = upstream(dict(sent), body)
            back = {":status": str(status), **answer_headers}
            if response_header_mode == mode_pb.ProcessingMode.SEND:
                reply = await self._exchange(
                    call,
                    ep.ProcessingRequest(response_headers=ep.HttpHeaders(headers=header_map(back))),
                    "response_headers",
                    seen,
                )
                _apply(back, reply.response_headers.response.header_mutation)
            seen.status = int(back.pop(":status"))
            seen.client_headers, seen.client_body = back, answer
            return seen
        finally:
            await call.done_writing()
            # Envoy half-closes the stream after the last phase; the processor ends it.
            await call.code()

    @staticmethod
    async def _exchange(
        call: aio.StreamStreamCall[ep.ProcessingRequest, ep.ProcessingResponse],
        request: ep.ProcessingRequest,
        phase: str,
        seen: Seen,
    ) -> ep.ProcessingResponse:
        seen.phases.append(phase)
        await call.write(request)
        reply = await call.read()
        assert isinstance(reply, ep.ProcessingResponse), f"the stream ended after {phase}"
        which = reply.WhichOneof("response")
        # Envoy closes the stream with an error on a response for another phase.
        assert which in (phase, "immediate_response"), f"spurious {which} for {phase}"
        return reply

    @staticmethod
    def _answered(immediate: ep.ImmediateResponse, seen: Seen) -> Seen:
        headers: Headers = {}
        _apply(headers, immediate.headers)
        seen.status = int(immediate.status.code)
        seen.client_headers, seen.client_body = headers, immediate.body
        return seen
