"""What differs between the HTTP doors: how an answer, an error and a stream are written.

Both doors run a request the same way (`edge`: admission, the tenancy checks, the engine,
the commit point, the query log); a `Wire` writes what the caller reads in its door's
format. `MESSAGES_WIRE` is Anthropic's Messages API; `openai_stream.ChatWire` OpenAI's chat
completions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tierroute.api.http.errors import HttpError
from tierroute.api.http.messages import message_json
from tierroute.api.http.stream import PING, MessageEvents, error_event
from tierroute.cascade import CascadeResult


class EventWriter(Protocol):
    """Writes one streamed answer on the wire, from its commit point to its end."""

    def start(self) -> bytes:
        """The stream's opening (the answering model is known)."""
        ...

    def text(self, piece: str) -> bytes:
        """A piece of the answer's text."""
        ...

    def ping(self) -> bytes:
        """Something harmless to send while the stream is quiet."""
        ...

    def finish(self, result: CascadeResult, tierroute: Mapping[str, Any]) -> bytes:
        """The answer's tool calls, stop reason and usage, and the end of the stream."""
        ...

    def error(self, error: HttpError) -> bytes:
        """The error that ends a stream after it began."""
        ...


class Wire(Protocol):
    """One door's format: an answer, an error, a stream."""

    def body(self, result: CascadeResult) -> dict[str, Any]:
        """A whole answer's JSON."""
        ...

    def error(self, error: HttpError) -> tuple[int, dict[str, Any]]:
        """An error's status and JSON."""
        ...

    def events(self, request_id: str, model: str) -> EventWriter:
        """The writer of one streamed answer."""
        ...


class _MessageWriter:
    """Anthropic's events (`stream.MessageEvents`), with its ping and error events."""

    def __init__(self, request_id: str, model: str) -> None:
        self._events = MessageEvents(request_id, model)

    def start(self) -> bytes:
        return self._events.start()

    def text(self, piece: str) -> bytes:
        return self._events.text(piece)

    def ping(self) -> bytes:
        return PING

    def finish(self, result: CascadeResult, tierroute: Mapping[str, Any]) -> bytes:
        return self._events.finish(result, tierroute)

    def error(self, error: HttpError) -> bytes:
        return error_event(error)


class MessagesWire:
    """Anthropic's Messages API: a Message, Anthropic's error JSON, Anthropic's events."""

    def body(self, result: CascadeResult) -> dict[str, Any]:
        return message_json(result)

    def error(self, error: HttpError) -> tuple[int, dict[str, Any]]:
        return error.status, error.body()

    def events(self, request_id: str, model: str) -> EventWriter:
        return _MessageWriter(request_id, model)


MESSAGES_WIRE = MessagesWire()
