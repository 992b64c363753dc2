"""Reading an Anthropic Messages API request body for routing (tierroute.api.anthropic_body)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tierroute.api import anthropic_body
from tierroute.errors import InvalidRequest, QueryTooLong
from tierroute.settings import LimitsConfig

LIMITS = LimitsConfig()


def _raw(messages: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps(
        {"model": "claude-opus-4-8", "max_tokens": 64, "messages": messages, **extra}
    ).encode()


def test_the_last_user_turn_is_the_routed_text() -> None:
    """The last user turn's text is routed; earlier turns become its history."""
    body = anthropic_body.parse(
        _raw(
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": [{"type": "text", "text": "Prove it."}]},
            ]
        ),
        LIMITS,
    )
    assert body.text == "Prove it."
    assert [(m.role, m.content) for m in body.history] == [("user", "Hi"), ("assistant", "Hello")]
    assert not body.tool_results


def test_a_tool_result_turn_routes_on_the_question_that_asked() -> None:
    """A last turn of tool results is routed on the user turn that asked, and marked as such."""
    body = anthropic_body.parse(
        _raw(
            [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
                },
            ]
        ),
        LIMITS,
    )
    assert body.text == "Weather in Paris?"
    assert body.tool_results


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b'{"model": 1, "model": 2}', "appears twice"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (_raw([]), "messages"),
        (_raw([{"role": "system", "content": "x"}]), "messages[0].role"),
        (_raw([{"role": "user", "content": 7}]), "messages[0].content"),
        (_raw([{"role": "user", "content": [{"text": "x"}]}]), "messages[0].content[0]"),
        (_raw([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]), "last"),
        (_raw([{"role": "user", "content": [{"type": "image", "source": {}}]}]), "no user turn"),
    ],
)
def test_a_body_that_is_not_a_messages_request_is_refused(raw: bytes, field: str) -> None:
    """Each kind of malformed body is an InvalidRequest that names what is wrong."""
    with pytest.raises(InvalidRequest, match=field.replace("[", r"\[").replace("]", r"\]")):
        anthropic_body.parse(raw, LIMITS)


def test_a_conversation_over_the_character_limit_is_too_long() -> None:
    """Text over limits.max_query_chars, tool results included, is QueryTooLong."""
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "y" * 50}
    raw = _raw([{"role": "user", "content": [{"type": "text", "text": "x" * 60}, result]}])
    with pytest.raises(QueryTooLong):
        anthropic_body.parse(raw, LimitsConfig(max_query_chars=100))


def test_with_model_changes_only_the_model() -> None:
    """The rewritten body keeps every other field, in order, and non-ASCII text as it was."""
    raw = _raw([{"role": "user", "content": "Grüße"}], stream=True, metadata={"user_id": "u"})
    rewritten = anthropic_body.with_model(anthropic_body.parse(raw, LIMITS), "claude-haiku-4-5")
    original, new = json.loads(raw), json.loads(rewritten)
    assert new["model"] == "claude-haiku-4-5"
    assert list(new) == list(original)
    assert {k: v for k, v in new.items() if k != "model"} == {
        k: v for k, v in original.items() if k != "model"
    }
    assert "Grüße".encode() in rewritten
