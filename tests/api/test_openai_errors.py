"""Errors on the OpenAI-compatible door: OpenAI's error JSON (`message`, `type`, `param`,
`code`) under the status OpenAI's SDKs map to their own classes, through the official
`openai` SDK against the real server with its replay backend (faults by header)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import ACME_TOKEN, Running, post_raw

QUESTION = str(labelled(cascade_records(), "cheap")["prompt"])
CHEAP = "claude-haiku-4-5"


@pytest.fixture
async def client(guarded_served: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    """acme's OpenAI SDK client; no retries, so each error is seen as the server sent it."""
    sdk = openai.AsyncOpenAI(
        base_url=f"{guarded_served.http_url}/v1", api_key=ACME_TOKEN, max_retries=0
    )
    try:
        yield sdk
    finally:
        await sdk.close()


async def _ask(client: openai.AsyncOpenAI, model: str = "tierroute", **kwargs: Any) -> Any:
    kwargs.setdefault("messages", [{"role": "user", "content": QUESTION}])
    return await client.chat.completions.create(model=model, **kwargs)


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    return body


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"seed": 7}, "seed"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
async def test_a_field_not_served_is_400_naming_it(
    client: openai.AsyncOpenAI, extra: dict[str, Any], param: str
) -> None:
    """A field tierroute does not serve is refused with OpenAI's error JSON naming it."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(client, extra_body=extra)
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


async def test_fields_at_their_neutral_value_are_accepted(client: openai.AsyncOpenAI) -> None:
    """n = 1, logprobs false and a text response format ask for nothing unserved."""
    completion = await _ask(
        client, n=1, logprobs=False, response_format={"type": "text"}, presence_penalty=0
    )
    assert completion.choices[0].message.content


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "function", "name": "f", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": "x", "name": "ann"}, "messages[0].name"),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "messages[0].content[0].type",
        ),
        ({"role": "user", "content": 7}, "messages[0].content"),
    ],
)
async def test_a_message_not_served_is_400_naming_its_part(
    client: openai.AsyncOpenAI, message: dict[str, Any], param: str
) -> None:
    """A message role, field or content part tierroute does not serve is named by its path."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(client, messages=[message])
    assert _error(caught.value)["param"] == param


async def test_a_limit_of_the_shared_conversion_names_the_chat_field(
    client: openai.AsyncOpenAI,
) -> None:
    """Past the stop-sequence limit the refusal's param is `stop`, the field this door took."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(client, stop=[f"s{i}" for i in range(40)])
    assert _error(caught.value)["param"] == "stop"


async def test_a_strict_function_is_400(client: openai.AsyncOpenAI) -> None:
    """Strict function schemas are not served: refused, named."""
    tool: Any = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
    }
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(client, tools=[tool])
    assert _error(caught.value)["param"] == "tools[0].function.strict"


async def test_an_unknown_token_is_401(guarded_served: Running) -> None:
    """A token the tokens file does not hold is the SDK's AuthenticationError."""
    sdk = openai.AsyncOpenAI(
        base_url=f"{guarded_served.http_url}/v1", api_key="wrong", max_retries=0
    )
    async with sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await _ask(sdk)
    assert _error(caught.value)["code"] == "invalid_api_key"


async def test_another_tenants_id_is_403(client: openai.AsyncOpenAI) -> None:
    """A tenant's token used for another tenant is the SDK's PermissionDeniedError."""
    with pytest.raises(openai.PermissionDeniedError):
        await _ask(client, extra_headers={"x-tierroute-tenant": "globex"})


async def test_an_unknown_model_is_404_model_not_found(client: openai.AsyncOpenAI) -> None:
    """A model tierroute does not serve is 404 with code model_not_found, naming the ids."""
    with pytest.raises(openai.NotFoundError) as caught:
        await _ask(client, model="gpt-4o")
    error = _error(caught.value)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "tierroute" in error["message"]


async def test_an_unknown_operating_point_is_400_on_model(client: openai.AsyncOpenAI) -> None:
    """`tierroute@NAME` with a name the served model lacks is refused on `model`."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _ask(client, model="tierroute@nowhere")
    assert _error(caught.value)["param"] == "model"


async def test_a_body_over_the_limit_is_413(client: openai.AsyncOpenAI) -> None:
    """A body over http.max_body_bytes is refused before it is parsed."""
    with pytest.raises(openai.APIStatusError) as caught:
        await _ask(client, messages=[{"role": "user", "content": "x" * 8000}])
    assert caught.value.status_code == 413
    assert _error(caught.value)["code"] == "request_too_large"


def _post_raw(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"Bearer {ACME_TOKEN}"}
    status, _, text = post_raw(url, "/v1/chat/completions", body, headers)
    return status, json.loads(text)


async def test_a_body_that_is_not_json_is_400(guarded_served: Running) -> None:
    """A body that does not decode is OpenAI's 400, not a server error."""
    status, body = await asyncio.to_thread(
        _post_raw, guarded_served.http_url, b'{"model": tierroute'
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_a_provider_rate_limit_is_429_with_retry_after(client: openai.AsyncOpenAI) -> None:
    """The answering tier's rate limit is the SDK's RateLimitError with its retry-after."""
    with pytest.raises(openai.RateLimitError) as caught:
        await _ask(client, model=CHEAP, extra_headers={"x-tierroute-fault": "429:7@cheap"})
    assert caught.value.response.headers["retry-after"] == "7"
    assert _error(caught.value)["code"] == "rate_limit_exceeded"


async def test_an_overloaded_provider_is_503(client: openai.AsyncOpenAI) -> None:
    """Anthropic's 529 is OpenAI's 503 on this door: an InternalServerError the SDK retries."""
    with pytest.raises(openai.InternalServerError) as caught:
        await _ask(client, model=CHEAP, extra_headers={"x-tierroute-fault": "529@cheap"})
    assert caught.value.status_code == 503
    assert _error(caught.value)["code"] == "overloaded"


async def test_a_stream_that_breaks_after_its_text_ends_with_an_error_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    """After the commit point a broken upstream stream is OpenAI's error chunk, no [DONE]."""
    stream = await _ask(
        client, model=CHEAP, stream=True, extra_headers={"x-tierroute-fault": "midstream"}
    )
    pieces: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        await _drain(stream, pieces)
    assert "".join(pieces)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"


async def _drain(stream: Any, pieces: list[str]) -> None:
    async for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")


async def test_a_stream_that_fails_before_its_text_is_an_http_error(
    client: openai.AsyncOpenAI,
) -> None:
    """Before the commit point nothing was sent, so the failure is an ordinary HTTP error."""
    with pytest.raises(openai.InternalServerError) as caught:
        await _ask(
            client, model=CHEAP, stream=True, extra_headers={"x-tierroute-fault": "529@cheap"}
        )
    assert caught.value.status_code == 503


async def test_the_door_answers_after_the_errors(client: openai.AsyncOpenAI) -> None:
    """A refused request leaves the door serving: the next request is answered."""
    with pytest.raises(openai.BadRequestError):
        await _ask(client, n=3)
    completion = await _ask(client)
    assert completion.choices[0].message.content
