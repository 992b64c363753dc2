"""Shared machinery for the property tests that fuzz a running server
(tests/system/test_fuzz_*.py).

A server with bearer tokens on, running on an event loop of its own in a background thread;
one helper that makes a call and says how it ended; a health probe; and the Hypothesis
strategies for the hostile text, ids, metadata and credentials that Route and Cascade share.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.helpers import Running, make_settings, running_server
from tierroute.api.security import bearer_metadata, bearer_token, hash_token
from tierroute.errors import Unauthenticated
from tierroute.model.bundle import MODEL_FILE
from tierroute.routing.router import Scorer
from tierroute.settings import Settings
from tierroute.testing import StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

T = TypeVar("T")
R = TypeVar("R")

ACME_TOKEN = "fuzz-acme-token"
ADMIN_TOKEN = "fuzz-admin-token"
SERVICE = "/tierroute.v1.TierRouter/"
# Bounds a hung call so a broken server fails the test instead of stalling it.
DEADLINE_S = 60
DEFAULTS = make_settings()
LIMITS = DEFAULTS.limits


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings for examples that each make a real call to a live server."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- the server ---------------------------------------------------------------------------


class ServerThread:
    """A running tierroute server on an event loop of its own, driven from the test thread."""

    def __init__(self, settings: Settings, scorer: Scorer | None) -> None:
        self._settings = settings
        self._scorer = scorer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = AsyncExitStack()
        self.running: Running | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(DEADLINE_S * 2)

    def start(self) -> Running:
        """Start the loop thread and the server on it."""
        self._thread.start()

        async def enter() -> Running:
            return await self._stack.enter_async_context(
                running_server(self._settings, scorer=self._scorer)
            )

        self.running = self.run(enter())
        return self.running

    def stop(self) -> None:
        """Stop the server, then the loop and its thread."""
        self.run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@contextmanager
def serving(tmp: Path, environ: Mapping[str, str] | None = None) -> Iterator[ServerThread]:
    """A server with `environ` on top of the test settings, bearer tokens on (ACME_TOKEN for
    tenant acme, ADMIN_TOKEN for the admin) and the bundled model if one has been built."""
    tokens = tmp / "tokens.json"
    tokens.write_text(
        json.dumps(
            {"tenants": {"acme": [hash_token(ACME_TOKEN)]}, "admin": [hash_token(ADMIN_TOKEN)]}
        )
    )
    config = make_settings({**(environ or {}), "TIERROUTE_AUTH_TOKENS_FILE": str(tokens)})
    # The real ONNX model featurises and routes the hostile text too, when a bundle is built.
    bundle = (config.routing.model_dir / MODEL_FILE).is_file()
    thread = ServerThread(config, None if bundle else StaticScorer((0.5, 0.3, 0.2)))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """How one call ended: a status code, and the response when it was OK."""

    code: grpc.StatusCode
    details: str
    response: R | None


def call(
    server: ServerThread,
    rpc_name: str,
    request: Message | bytes,
    metadata: tuple[tuple[str, str], ...],
    timeout: float = DEADLINE_S,
) -> Outcome[Any]:
    """One call of TierRouter's `rpc_name`; raw bytes are sent as they are, unparsed."""
    running = server.running
    assert running is not None

    async def call_() -> Outcome[Any]:
        try:
            if isinstance(request, bytes):
                raw = running.channel.unary_unary(SERVICE + rpc_name)
                await raw(request, metadata=metadata, timeout=timeout)
                return Outcome(grpc.StatusCode.OK, "", None)
            method = getattr(running.stub, rpc_name)
            response = await method(request, metadata=metadata, timeout=timeout)
        except aio.AioRpcError as err:
            return Outcome(err.code(), err.details() or "", None)
        return Outcome(grpc.StatusCode.OK, "", response)

    return server.run(call_())


def health_status(server: ServerThread, timeout: float = DEADLINE_S) -> int:
    """The server's overall health status, as a HealthCheckResponse.ServingStatus value."""
    running = server.running
    assert running is not None
    stub = health_pb2_grpc.HealthStub(running.channel)

    async def check() -> int:
        reply: Awaitable[Any] = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return int((await reply).status)

    return server.run(check())


# --- what the server must answer ------------------------------------------------------------


def token_of(credential: tuple[tuple[str, str], ...]) -> str | None:
    """The bearer token in `credential`, or None when it carries no well-formed one."""
    try:
        return bearer_token(credential)
    except Unauthenticated:
        return None


def auth_status(credential: tuple[tuple[str, str], ...], tenant: str) -> grpc.StatusCode:
    """How a valid query for `tenant` sent with `credential` must end."""
    token = token_of(credential)
    if token not in (ACME_TOKEN, ADMIN_TOKEN):
        return grpc.StatusCode.UNAUTHENTICATED
    if token == ACME_TOKEN and tenant not in ("", "acme"):
        return grpc.StatusCode.PERMISSION_DENIED
    if len(tenant) > LIMITS.max_id_chars:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.OK


def parses_as(message: type[Message]) -> Callable[[bytes], bool]:
    """A predicate: do these bytes decode as a `message`?"""

    def parses(data: bytes) -> bool:
        try:
            message.FromString(data)
        except DecodeError:
            return False
        return True

    return parses


# --- strategies -------------------------------------------------------------------------

# Protobuf strings are UTF-8, so lone surrogates cannot be sent at all; everything else can.
UNICODE = st.characters(exclude_categories=["Cs"])
# NUL, right-to-left override, zero-width space, BOM, emoji, a combining accent on its own
# and after a letter, a non-character and the last code point.
HOSTILE = st.sampled_from(
    [
        *("\x00", "\u202e", "\u200b", "\ufeff", "\U0001f600", "\u0301", "e\u0301", "\uffff"),
        *("\U0010ffff", "```", "\n", "then", "finally"),
    ]
)


def _repeat(chars: st.SearchStrategy[str], sizes: list[int]) -> st.SearchStrategy[str]:
    # Big strings are built by repetition so Hypothesis only draws a character and a size.
    return st.builds(lambda c, n: (c * n)[:n], chars, st.sampled_from(sizes))


def _near(limit: int) -> list[int]:
    return [limit - 1, limit, limit + 1]


def mostly(common: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """About four in five examples draw from `common`, so enough requests get past one
    gate to reach the next instead of all failing at the first."""
    return st.one_of(common, common, common, common, rare)


def enum_field(valid: list[int]) -> st.SearchStrategy[int]:
    """Mostly the `valid` values of an enum field, sometimes any 32-bit integer."""
    return mostly(st.sampled_from(valid), st.integers(-(2**31), 2**31 - 1))


SHORT_TEXT = st.one_of(
    st.text(UNICODE, min_size=1, max_size=200),
    st.lists(HOSTILE, min_size=1, max_size=50).map("".join),
)
NONBLANK = SHORT_TEXT.filter(str.strip)
TEXT = mostly(
    SHORT_TEXT,
    st.one_of(
        st.sampled_from(["", "  \n\t "]),
        _repeat(
            st.sampled_from(["x", "\x00", "\U0001f600", "word "]), _near(LIMITS.max_query_chars)
        ),
        _repeat(st.just("x"), [DEFAULTS.server.max_receive_message_bytes + 1]),
    ),
)
ID = mostly(
    st.text(UNICODE, max_size=40),
    _repeat(st.sampled_from(["r", "\x00", "\U0001f600"]), _near(LIMITS.max_id_chars)),
)
SHORT_ID = st.text(UNICODE, max_size=LIMITS.max_id_chars)
ROLE = enum_field([pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_USER, pb.ROLE_ASSISTANT])
MESSAGES = st.one_of(
    st.lists(st.builds(pb.ChatMessage, role=ROLE, content=TEXT), min_size=1, max_size=8),
    # Long conversations of short turns: the turn limit, not the size limit, should decide.
    st.builds(
        lambda m, n: [m] * n,
        st.builds(pb.ChatMessage, role=ROLE, content=SHORT_TEXT),
        st.sampled_from([*_near(LIMITS.max_messages), 5000]),
    ),
)
METADATA = mostly(
    st.dictionaries(st.text(UNICODE, max_size=30), st.text(UNICODE, max_size=60), max_size=8),
    st.one_of(
        st.builds(
            lambda n: {f"k{i}": "v" for i in range(n)},
            st.sampled_from([*_near(LIMITS.max_metadata_entries), 5000]),
        ),
        st.builds(
            lambda k, v: {k: v},
            _repeat(st.just("k"), _near(LIMITS.max_metadata_key_chars)),
            _repeat(st.just("v"), _near(LIMITS.max_metadata_value_chars)),
        ),
    ),
)
STRATEGY = enum_field([0, pb.STRATEGY_HEURISTIC, pb.STRATEGY_CLASSIFIER, pb.STRATEGY_SELF_ROUTING])

# Valid conversations, and valid bodies (a query or a conversation), with hostile text.
VALID_MESSAGES = st.builds(
    lambda turns, last: [*turns, pb.ChatMessage(role=pb.ROLE_USER, content=last)],
    st.lists(
        st.builds(
            pb.ChatMessage,
            role=st.sampled_from([pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT]),
            # Blank turns are refused by contract (models reject them); valid ones have text.
            content=NONBLANK,
        ),
        max_size=6,
    ),
    NONBLANK,
)
VALID_BODY = st.one_of(
    st.builds(lambda q: {"query": q}, NONBLANK),
    st.builds(lambda m: {"messages": m}, VALID_MESSAGES),
)

# A caller with a valid credential for the tenant it names, sending hostile content.
OWN_TENANT = st.sampled_from(["", "acme"])
VALID_CREDENTIAL = st.sampled_from([bearer_metadata(ACME_TOKEN), bearer_metadata(ADMIN_TOKEN)])
# Metadata values must be printable ASCII, or the client library refuses to send them.
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
CREDENTIAL = st.one_of(
    VALID_CREDENTIAL,
    st.sampled_from(
        [
            (),
            bearer_metadata("not-a-token"),
            bearer_metadata(ACME_TOKEN.upper()),
            (("authorization", ACME_TOKEN),),
            (("authorization", f"bearer {ACME_TOKEN}"), ("authorization", "Bearer x")),
        ]
    ),
    ASCII.map(lambda v: (("authorization", v),)),
    ASCII.map(lambda v: (("authorization", f"Bearer {v}"),)),
)
TENANT = st.one_of(OWN_TENANT, st.sampled_from(["globex", "ACME", "acme\x00", " acme"]), ID)
