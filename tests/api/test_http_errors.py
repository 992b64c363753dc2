"""Errors of the Messages API endpoint: each status Anthropic uses, raised as the official SDK's
own exception class from Anthropic's error JSON, and the one mapping behind them."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from tests.fixtures import cascade_records, labelled
from tests.helpers import ACME_TOKEN, Running, make_settings
from tierroute import errors
from tierroute.api.http import http_error, parse_request

RECORDS = cascade_records()
QUESTION = str(labelled(RECORDS, "cheap")["prompt"])
CHEAP = "claude-haiku-4-5"


@pytest.fixture
async def client(guarded_served: Running) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """acme's SDK client; no retries, so each error is seen as the server sent it."""
    sdk = anthropic.AsyncAnthropic(
        base_url=guarded_served.http_url, api_key=ACME_TOKEN, max_retries=0
    )
    try:
        yield sdk
    finally:
        await sdk.close()


async def _ask(client: anthropic.AsyncAnthropic, model: str = "tierroute", **kwargs: Any) -> Any:
    kwargs.setdefault("messages", [{"role": "user", "content": QUESTION}])
    return await client.messages.create(model=model, max_tokens=256, **kwargs)


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    return str(body["error"]["type"])


async def test_a_bad_request_is_400_invalid_request_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    """A value the limits refuse is a 400 whose message names the field."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _ask(client, stop_sequences=["   "])
    assert _error_type(caught.value) == "invalid_request_error"
    assert "stop_sequences" in caught.value.message


async def test_a_conversation_ending_with_the_assistant_is_400(
    client: anthropic.AsyncAnthropic,
) -> None:
    """The gRPC path's conversation rules hold: the last turn must be the user's."""
    with pytest.raises(anthropic.BadRequestError, match="last non-system message"):
        await _ask(
            client,
            messages=[
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": "an answer"},
            ],
        )


async def test_an_unknown_operating_point_is_400_naming_the_known_ones(
    client: anthropic.AsyncAnthropic,
) -> None:
    """`tierroute@NAME` names an operating point of the served model, or is refused."""
    with pytest.raises(anthropic.BadRequestError, match="known operating points") as caught:
        await _ask(client, model="tierroute@q95")
    assert _error_type(caught.value) == "invalid_request_error"


async def test_an_unknown_token_is_401_authentication_error(guarded_served: Running) -> None:
    """A token the tokens file does not hold is refused with 401."""
    sdk = anthropic.AsyncAnthropic(base_url=guarded_served.http_url, api_key="wrong", max_retries=0)
    async with sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await _ask(sdk)
    assert _error_type(caught.value) == "authentication_error"


async def test_a_bearer_token_is_accepted_as_well(guarded_served: Running) -> None:
    """`Authorization: Bearer` (the SDK's auth_token) authenticates like x-api-key."""
    sdk = anthropic.AsyncAnthropic(
        base_url=guarded_served.http_url, api_key=None, auth_token=ACME_TOKEN, max_retries=0
    )
    async with sdk:
        message = await _ask(sdk)
    assert message.model == CHEAP


async def test_another_tenants_id_is_403_permission_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    """A tenant's token used for another tenant is refused with 403."""
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        await _ask(client, extra_headers={"x-tierroute-tenant": "globex"})
    assert _error_type(caught.value) == "permission_error"


async def test_an_unknown_model_is_404_naming_the_served_ones(
    client: anthropic.AsyncAnthropic,
) -> None:
    """A model id no tier serves is 404, with the ids that may be sent."""
    with pytest.raises(anthropic.NotFoundError, match=CHEAP) as caught:
        await _ask(client, model="gpt-4o")
    assert _error_type(caught.value) == "not_found_error"


async def test_a_body_over_the_limit_is_413_request_too_large(
    client: anthropic.AsyncAnthropic,
) -> None:
    """A request body over http.max_body_bytes is refused with 413 before it is parsed."""
    with pytest.raises(anthropic.APIStatusError) as caught:
        await _ask(client, messages=[{"role": "user", "content": "long " * 2000}])
    assert caught.value.status_code == 413
    assert _error_type(caught.value) == "request_too_large"


@pytest.mark.parametrize(
    ("fault", "kind", "status", "error_type"),
    [
        ("429:7@cheap", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("500@cheap", anthropic.InternalServerError, 500, "api_error"),
        ("529@cheap", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
async def test_a_provider_failure_keeps_its_kind(
    client: anthropic.AsyncAnthropic,
    fault: str,
    kind: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
) -> None:
    """A concrete model's failure (429, 500, 529) is the caller's, with its status and type:
    no other tier answers instead."""
    with pytest.raises(kind) as caught:
        await _ask(client, model=CHEAP, extra_headers={"x-tierroute-fault": fault})
    assert caught.value.status_code == status
    assert _error_type(caught.value) == error_type


async def test_a_rate_limit_says_when_to_retry(client: anthropic.AsyncAnthropic) -> None:
    """A 429 carries the provider's retry-after, so the SDK waits as long as it is told."""
    with pytest.raises(anthropic.RateLimitError) as caught:
        await _ask(client, model=CHEAP, extra_headers={"x-tierroute-fault": "429:7@cheap"})
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-tierroute-request-id"]


async def test_the_cascade_fails_over_a_tier_a_concrete_model_does_not(
    client: anthropic.AsyncAnthropic,
) -> None:
    """The same fault on the cheap tier: the Cascade answers from the next tier."""
    message = await _ask(client, extra_headers={"x-tierroute-fault": "529@cheap"})
    assert message.model != CHEAP


async def test_a_stream_that_breaks_after_its_text_ends_with_an_error_event(
    client: anthropic.AsyncAnthropic,
) -> None:
    """Text already sent cannot be replaced: the stream ends with Anthropic's error event."""
    stream = await _ask(
        client, model=CHEAP, stream=True, extra_headers={"x-tierroute-fault": "midstream"}
    )
    kinds: list[str] = []

    async def read() -> None:
        async for event in stream:
            kinds.append(event.type)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await read()
    assert "content_block_delta" in kinds
    assert "message_stop" not in kinds
    assert _error_type(caught.value) == "api_error"


async def test_a_stream_that_fails_before_its_text_is_an_http_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    """Before the commit point nothing is sent, so a failure keeps its HTTP status."""
    with pytest.raises(anthropic.OverloadedError):
        await _ask(
            client, model=CHEAP, stream=True, extra_headers={"x-tierroute-fault": "529@cheap"}
        )


async def test_an_unknown_path_is_404_in_anthropics_error_json(guarded_served: Running) -> None:
    """Routes the endpoint does not serve still answer in Anthropic's error format."""
    sdk = anthropic.AsyncAnthropic(
        base_url=guarded_served.http_url, api_key=ACME_TOKEN, max_retries=0
    )
    async with sdk:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await sdk.get("/v1/complete", cast_to=object)
    assert _error_type(caught.value) == "not_found_error"


MAPPED: list[tuple[Exception, int, str]] = [
    (errors.InvalidRequest("bad"), 400, "invalid_request_error"),
    (errors.QueryTooLong(10, 5), 413, "request_too_large"),
    (errors.RequestTooLarge("big"), 413, "request_too_large"),
    (errors.NotFound("none"), 404, "not_found_error"),
    (errors.Unauthenticated("who"), 401, "authentication_error"),
    (errors.PermissionDenied("no"), 403, "permission_error"),
    (errors.Overloaded("full"), 529, "overloaded_error"),
    (errors.ShuttingDown("draining"), 529, "overloaded_error"),
    (errors.BudgetExhausted("spent"), 529, "overloaded_error"),
    (errors.TenantLimited("limit", tenant="a", retry_after_s=1), 429, "rate_limit_error"),
    (errors.TenantRateLimited("rpm", tenant="a", retry_after_s=1), 429, "rate_limit_error"),
    (errors.TenantBudgetExhausted("spent", tenant="a", retry_after_s=9), 429, "rate_limit_error"),
    (errors.CostCeilingReached("ceiling"), 400, "invalid_request_error"),
    (errors.RequestInProgress("again"), 409, "invalid_request_error"),
    (errors.TenancyUnavailable("db"), 529, "overloaded_error"),
    (errors.DeadlineExceeded("late"), 504, "timeout_error"),
    (errors.ConfigError("cfg"), 500, "api_error"),
    (errors.ModelLoadError("model"), 500, "api_error"),
    (errors.RateLimited("slow", retry_after=3), 429, "rate_limit_error"),
    (errors.ProviderOverloaded("busy"), 529, "overloaded_error"),
    (errors.ProviderError("upstream"), 500, "api_error"),
    (errors.ProviderServerError("boom"), 500, "api_error"),
    (errors.ProviderTimeout("slow"), 504, "timeout_error"),
    (errors.ProviderConnectionError("gone"), 500, "api_error"),
    (errors.TerminalProviderError("bad", status_code=400), 400, "invalid_request_error"),
    (errors.TerminalProviderError("key", status_code=401), 500, "api_error"),
    (errors.TerminalProviderError("big", status_code=413), 413, "request_too_large"),
    (errors.AnswerInterrupted("cut"), 500, "api_error"),
    (errors.AllTiersFailed("open"), 529, "overloaded_error"),
    (errors.TierrouteError("odd"), 500, "api_error"),
    (RuntimeError("bug"), 500, "api_error"),
]


def test_the_table_names_every_class_of_the_exception_tree() -> None:
    """Every class in tierroute.errors is mapped below, so none falls through to a 500."""
    classes = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.TierrouteError)
    }
    assert classes <= {type(exc) for exc, _, _ in MAPPED}


@pytest.mark.parametrize(("exc", "status", "error_type"), MAPPED)
def test_every_error_maps_to_one_status_and_type(
    exc: Exception, status: int, error_type: str
) -> None:
    """Each exception class has one Anthropic status and error type."""
    error = http_error(exc)
    assert (error.status, error.type) == (status, error_type)


def test_all_tiers_failed_takes_the_last_tiers_kind_and_retry_after() -> None:
    """A cascade that failed on a rate limit is a 429 with that rate limit's retry-after."""
    try:
        raise errors.AllTiersFailed("no tier could answer") from errors.RateLimited(
            "slow", retry_after=2.5
        )
    except errors.AllTiersFailed as exc:
        error = http_error(exc)
    assert (error.status, error.type, error.headers()) == (
        429,
        "rate_limit_error",
        {"retry-after": "3"},
    )


def test_an_unexpected_error_hides_its_message() -> None:
    """A bug's message never reaches the caller."""
    assert "secret" not in http_error(RuntimeError("secret detail")).message


def test_an_operating_point_suffix_goes_into_the_routing_policy() -> None:
    """`tierroute@q95` asks the Cascade for operating point q95, through policy.operating_point."""
    parsed = parse_request(
        {
            "model": "tierroute@q95",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "q"}],
        },
        make_settings(),
        operating_points=("q90", "q95"),
    )
    assert parsed.request.policy.operating_point == "q95"
    assert parsed.model.tier is None
