"""The HTTP doors' last line: an exception no handler caught still gets the door's error JSON.

Every known failure is answered where it happens (`errors.http_error`); this catches what
escapes anyway (a bug, an answer no encoder can write), logs its traceback server-side and
sends a 500 with a generic message in the door's shape: Anthropic's `api_error`, or OpenAI's
`server_error` on `/v1/chat/completions` and on the OpenAI form of `/v1/models`. The caller
never sees Starlette's plain-text 500 or a traceback. A response that has begun (a stream)
cannot change its status: the exception goes on, and the server cuts the connection, so
the caller sees a broken stream rather than a clean end.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierroute.api import jsonbody
from tierroute.api.http.errors import INTERNAL_MESSAGE, HttpError
from tierroute.api.http.openai_stream import ChatWire
from tierroute.api.http.wire import MESSAGES_WIRE, Wire

logger = logging.getLogger(__name__)

_CHAT_PATH = "/v1/chat/completions"
_MODELS_PATH = "/v1/models"


def _wire(scope: Scope) -> Wire:
    """The door a request came in by, as the edge tells them apart."""
    path: str = scope.get("path", "")
    if path == _CHAT_PATH:
        return ChatWire()
    if path.startswith(_MODELS_PATH):
        names = {name.lower() for name, _ in scope.get("headers", [])}
        return MESSAGES_WIRE if b"anthropic-version" in names else ChatWire()
    return MESSAGES_WIRE


class CatchAll:
    """ASGI middleware: an unexpected exception becomes the door's 500 error JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, receive, watched)
        except Exception:
            # The method and path only: never the body, which holds the prompt.
            logger.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if started:
                raise
            status, body = _wire(scope).error(HttpError(500, "api_error", INTERNAL_MESSAGE))
            data = jsonbody.encode(body)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
