"""Model providers behind one small Protocol (`base`): Anthropic through the real SDK, the
scripted test double, and the replay backend (`replay`: a local Messages API serving recorded
answers). `backend` chooses between Anthropic and replay; `prompts` holds the judge and
self-routing prompts every provider is sent.
"""

from tierroute.providers.answers import extract_answer, final_answer, final_answers_agree
from tierroute.providers.backend import Backend, build_backend, uses_anthropic
from tierroute.providers.base import (
    AnswerParams,
    Block,
    Completion,
    Message,
    Provider,
    StreamItem,
    TextDelta,
    ToolSpec,
    estimate_tokens,
    message_body,
    prompt_tokens,
)

__all__ = [
    "AnswerParams",
    "Backend",
    "Block",
    "Completion",
    "Message",
    "Provider",
    "StreamItem",
    "TextDelta",
    "ToolSpec",
    "build_backend",
    "estimate_tokens",
    "extract_answer",
    "final_answer",
    "final_answers_agree",
    "message_body",
    "prompt_tokens",
    "uses_anthropic",
]
