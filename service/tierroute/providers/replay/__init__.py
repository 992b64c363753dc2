"""The replay backend: a local Anthropic Messages API that serves recorded model answers.

The real Anthropic SDK is its client (`AnthropicProvider` with the server's base URL), so
the cascade runs offline with real recorded answers, judged from what the judging model
itself answered. It never reads ground-truth fields. Behaviour is documented in
docs/replay.md.
"""

from tierroute.providers.replay.faults import FAULT_HEADER, FAULT_KEY_HEADER, FAULT_KINDS
from tierroute.providers.replay.http_server import ReplayServer, ReplayStats
from tierroute.providers.replay.messages import (
    ReplayEngine,
    Reply,
    self_assessment,
    synthetic_answer,
)
from tierroute.providers.replay.recorded import RecordedAnswer, ReplayRecord, ReplayStore

__all__ = [
    "FAULT_HEADER",
    "FAULT_KEY_HEADER",
    "FAULT_KINDS",
    "RecordedAnswer",
    "ReplayEngine",
    "ReplayRecord",
    "ReplayServer",
    "ReplayStats",
    "ReplayStore",
    "Reply",
    "self_assessment",
    "synthetic_answer",
]
