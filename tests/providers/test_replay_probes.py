"""The replay backend serving a probe's recorded answers through the real Anthropic SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fixtures import make_records
from tierroute.errors import TerminalProviderError
from tierroute.providers import Message, prompts
from tierroute.providers.anthropic import AnthropicProvider
from tierroute.providers.replay import ReplayServer, ReplayStore, synthetic_answer
from tierroute.settings import ProbeConfig, ReplayConfig, TierConfig

TIERS = (
    TierConfig("cheap", "replay-cheap", 1.0, 5.0),
    TierConfig("mid", "replay-mid", 3.0, 15.0),
    TierConfig("top", "replay-top", 15.0, 75.0),
)
# The first replay model is absent from every record: the second one answers.
PROBE = ProbeConfig(
    model="older-claude",
    input_usd_per_mtok=0.25,
    output_usd_per_mtok=1.25,
    name="probe",
    replay_models=("not-recorded", "claude-3-haiku-20240307"),
)
ABSENT = ProbeConfig("absent-probe", 0.1, 0.1, replay_models=("not-recorded",))
RECORDS = make_records(6, claude=True)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    """A replay server on port 0 that knows two probes."""
    config = ReplayConfig(time_scale=0.0)
    with ReplayServer(ReplayStore(RECORDS), TIERS, config, (PROBE, ABSENT)) as running:
        yield running


@pytest.fixture
async def provider(server: ReplayServer) -> AsyncIterator[AnthropicProvider]:
    """The real SDK pointed at the module's replay server."""
    client = AnthropicProvider(api_key="test-key", base_url=server.base_url)
    yield client
    await client.aclose()


async def test_probe_gets_its_replay_models_recorded_answer(provider: AnthropicProvider) -> None:
    """A probe's call is answered with the first of its replay models the record holds."""
    record = RECORDS[2]
    completion = await provider.complete(
        model=PROBE.model,
        messages=[Message("user", record["prompt"])],
        max_tokens=512,
        timeout_s=10.0,
    )
    recorded = record["models"]["claude-3-haiku-20240307"]
    assert completion.text == recorded["response"]
    assert completion.output_tokens == recorded["output_tokens"]
    assert completion.input_tokens == recorded["input_tokens"]
    assert completion.model == PROBE.model


async def test_probe_without_a_recorded_model_answers_synthetically(
    provider: AnthropicProvider,
) -> None:
    """A record holding none of the probe's replay models gets the synthetic answer."""
    question = RECORDS[0]["prompt"]
    completion = await provider.complete(
        model=ABSENT.model,
        messages=[Message("user", question)],
        max_tokens=512,
        timeout_s=10.0,
    )
    assert completion.text == synthetic_answer(question, ABSENT.model)


async def test_probe_does_not_judge(provider: AnthropicProvider) -> None:
    """A judge call to a probe model is refused (HTTP 400): probes answer, they do not judge."""
    with pytest.raises(TerminalProviderError, match="400"):
        await provider.complete(
            model=PROBE.model,
            messages=prompts.judge_messages(RECORDS[0]["prompt"], "The answer is (A)."),
            max_tokens=512,
            timeout_s=10.0,
            tool=prompts.JUDGE_TOOL,
        )
