"""Anthropic's Messages API and OpenAI's chat completions over HTTP, beside gRPC in the same
process and event loop.

`MessagesEdge` serves `POST /v1/messages` (whole, or streamed as server-sent events),
`POST /v1/messages/count_tokens`, `POST /v1/chat/completions` (whole or streamed) and
`GET /v1/models` over the core the gRPC servicer calls; `HttpServer` runs it on uvicorn;
`http_error` is the one mapping of tierroute's exceptions to HTTP errors, which each door
writes in its own error JSON. See docs/http.md.
"""

from tierroute.api.http.edge import MessagesEdge
from tierroute.api.http.errors import HttpError, http_error
from tierroute.api.http.messages import CASCADE_MODEL, ModelChoice, choose_model, parse_request
from tierroute.api.http.server import HttpServer

__all__ = [
    "CASCADE_MODEL",
    "HttpError",
    "HttpServer",
    "MessagesEdge",
    "ModelChoice",
    "choose_model",
    "http_error",
    "parse_request",
]
