"""The replay backend, driven by the real Anthropic SDK over loopback (AnthropicProvider)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.fixtures import CLAUDE, TRIO, make_records, write_dataset
from tierroute.errors import (
    ConfigError,
    ProviderConnectionError,
    RateLimited,
    TerminalProviderError,
)
from tierroute.outcomes import iter_records
from tierroute.providers import prompts
from tierroute.providers.answers import answers_agree, extract_answer
from tierroute.providers.anthropic import AnthropicProvider
from tierroute.providers.base import Completion, Message, estimate_tokens
from tierroute.providers.replay import ReplayEngine, ReplayServer, ReplayStore, synthetic_answer
from tierroute.settings import ReplayConfig, Secret, Settings, TierConfig

# Model ids of our own: the SDK warns (an error under pytest) on deprecated Claude ids.
TIERS = (
    TierConfig("cheap", "replay-cheap", 1.0, 5.0),
    TierConfig("mid", "replay-mid", 3.0, 15.0),
    TierConfig("top", "replay-top", 15.0, 75.0),
)
CHEAP, MID, TOP = (t.model for t in TIERS)
RECORDS = make_records(40, claude=True)
FAST = ReplayConfig(time_scale=0.0)
REPLAY_PACKAGE = (
    Path(__file__).resolve().parents[2] / "service" / "tierroute" / "providers" / "replay"
)


def record_where(predicate: Any) -> dict[str, Any]:
    """The first fixture record for which `predicate(models)` holds."""
    return next(r for r in RECORDS if predicate(r["models"]))


def pred(record: dict[str, Any], model_key: str) -> Any:
    return record["models"][model_key]["pred"]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    """A replay server on port 0 answering at once from the fixture records."""
    with ReplayServer(ReplayStore(RECORDS), TIERS, FAST) as running:
        yield running


@pytest.fixture
async def provider(server: ReplayServer) -> AsyncIterator[AnthropicProvider]:
    """The real SDK, through AnthropicProvider, pointed at the module's replay server."""
    client = AnthropicProvider(api_key="test-key", base_url=server.base_url)
    yield client
    await client.aclose()


async def ask(provider: AnthropicProvider, model: str, text: str, **kwargs: Any) -> Completion:
    return await provider.complete(
        model=model,
        messages=[Message("user", text)],
        max_tokens=kwargs.pop("max_tokens", 1024),
        timeout_s=kwargs.pop("timeout_s", 10.0),
        **kwargs,
    )


async def judge(
    provider: AnthropicProvider, model: str, question: str, candidate: str, **kwargs: Any
) -> Completion:
    return await provider.complete(
        model=model,
        messages=prompts.judge_messages(question, candidate),
        system=prompts.JUDGE_SYSTEM,
        tool=prompts.JUDGE_TOOL,
        max_tokens=kwargs.pop("max_tokens", 4096),
        timeout_s=10.0,
        **kwargs,
    )


async def test_known_prompt_returns_recorded_answer_and_usage(
    provider: AnthropicProvider,
) -> None:
    """A known prompt gets the cheap model's recorded response with its recorded usage."""
    record = RECORDS[0]
    recorded = record["models"][TRIO["cheap"]]
    completion = await ask(provider, CHEAP, record["prompt"])
    assert completion.text == recorded["response"]
    assert (completion.input_tokens, completion.output_tokens) == (
        recorded["input_tokens"],
        recorded["output_tokens"],
    )
    assert completion.stop_reason == "end_turn"
    assert completion.model == CHEAP


@pytest.mark.parametrize(("tier", "trio_key"), [(0, "cheap"), (1, "mid"), (2, "expensive")])
async def test_each_tier_maps_to_its_recorded_model(
    provider: AnthropicProvider, tier: int, trio_key: str
) -> None:
    """Tier i answers with the record's default-trio model for the same position."""
    record = RECORDS[1]
    completion = await ask(provider, TIERS[tier].model, record["prompt"])
    assert completion.text == record["models"][TRIO[trio_key]]["response"]


async def test_claude_trio_serves_claude_models() -> None:
    """With trio = "claude" the tiers answer with claude-3 haiku, sonnet and opus."""
    record = RECORDS[2]
    config = ReplayConfig(time_scale=0.0, trio="claude")
    with ReplayServer(ReplayStore(RECORDS), TIERS, config) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            texts = [(await ask(client, t.model, record["prompt"])).text for t in TIERS]
        finally:
            await client.aclose()
    assert texts == [record["models"][CLAUDE[k]]["response"] for k in ("cheap", "mid", "expensive")]


async def test_claude_trio_falls_back_to_default_trio() -> None:
    """Records without the Claude models are served by the default trio under trio = "claude"."""
    records = make_records(3, claude=False)
    config = ReplayConfig(time_scale=0.0, trio="claude")
    with ReplayServer(ReplayStore(records), TIERS, config) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            completion = await ask(client, MID, records[0]["prompt"])
        finally:
            await client.aclose()
    assert completion.text == records[0]["models"][TRIO["mid"]]["response"]


async def test_question_tags_match_and_extra_context_is_counted(
    provider: AnthropicProvider,
) -> None:
    """An escalation message finds the record by its <question> and pays for the extra text."""
    record = RECORDS[3]
    recorded = record["models"][TRIO["mid"]]
    messages = prompts.escalation_messages(
        record["prompt"], "a failed attempt " * 40, ["wrong final answer"]
    )
    completion = await provider.complete(
        model=MID, messages=messages, max_tokens=1024, timeout_s=10.0
    )
    assert completion.text == recorded["response"]
    assert completion.input_tokens > recorded["input_tokens"]


async def test_max_tokens_cuts_the_answer(provider: AnthropicProvider) -> None:
    """An answer longer than max_tokens is cut, billed at max_tokens and says so."""
    record = RECORDS[4]
    completion = await ask(provider, CHEAP, record["prompt"], max_tokens=5)
    assert completion.stop_reason == "max_tokens"
    assert completion.output_tokens == 5
    assert record["models"][TRIO["cheap"]]["response"].startswith(completion.text)


async def test_judge_passes_when_its_own_answer_agrees(provider: AnthropicProvider) -> None:
    """The mid judge passes the cheap answer when mid's own recorded pred is the same."""
    record = record_where(lambda m: m[TRIO["cheap"]]["pred"] == m[TRIO["mid"]]["pred"])
    candidate = record["models"][TRIO["cheap"]]["response"]
    completion = await judge(provider, MID, record["prompt"], candidate)
    verdict = prompts.parse_verdict(completion.tool_input)
    assert verdict.passes is True
    assert verdict.issues == ()
    assert completion.stop_reason == "tool_use"


async def test_judge_fails_when_its_own_answer_disagrees(provider: AnthropicProvider) -> None:
    """The mid judge fails the cheap answer when mid's own recorded pred differs."""
    record = record_where(lambda m: m[TRIO["cheap"]]["pred"] != m[TRIO["mid"]]["pred"])
    candidate = record["models"][TRIO["cheap"]]["response"]
    completion = await judge(provider, MID, record["prompt"], candidate)
    verdict = prompts.parse_verdict(completion.tool_input)
    assert verdict.passes is False
    assert verdict.issues


async def test_judge_extracts_the_answer_of_unrecorded_text(provider: AnthropicProvider) -> None:
    """A candidate that is no recorded response is graded by its extracted final answer."""
    record = RECORDS[5]
    mid_pred = pred(record, TRIO["mid"])
    agreeing = await judge(provider, MID, record["prompt"], f"So the answer is ({mid_pred}).")
    other = "J" if mid_pred != "J" else "I"
    differing = await judge(provider, MID, record["prompt"], f"So the answer is ({other}).")
    assert prompts.parse_verdict(agreeing.tool_input).passes is True
    assert prompts.parse_verdict(differing.tool_input).passes is False


async def test_judge_usage_grows_with_prompt_length(provider: AnthropicProvider) -> None:
    """A longer judge prompt is billed more input tokens than a shorter one."""
    record = RECORDS[6]
    candidate = record["models"][TRIO["cheap"]]["response"]
    short = await judge(provider, MID, record["prompt"], candidate)
    long = await judge(provider, MID, "Five worked examples. " * 200 + record["prompt"], candidate)
    assert long.input_tokens > short.input_tokens


async def test_a_judge_is_billed_its_own_solution_before_its_verdict(
    provider: AnthropicProvider,
) -> None:
    """Under `judge_billing = "reasoning"` (the default) the judge first writes the judging
    model's recorded answer, then calls the tool; it is billed both."""
    assert FAST.judge_billing == "reasoning"
    record = RECORDS[6]
    own = record["models"][TRIO["mid"]]
    verdict = await judge(
        provider, MID, record["prompt"], record["models"][TRIO["cheap"]]["response"]
    )
    assert verdict.text == own["response"]
    assert verdict.tool_input is not None
    assert 10 <= verdict.output_tokens - own["output_tokens"] <= 60
    assert verdict.stop_reason == "tool_use"


async def test_verdict_only_billing_bills_the_verdict_alone() -> None:
    """`judge_billing = "verdict_only"` (the optimistic bound) bills only the verdict's tokens."""
    record = RECORDS[6]
    config = dataclasses.replace(FAST, judge_billing="verdict_only")
    with ReplayServer(ReplayStore(RECORDS), TIERS, config) as running:
        client = AnthropicProvider(api_key="test-key", base_url=running.base_url)
        try:
            verdict = await judge(
                client, MID, record["prompt"], record["models"][TRIO["cheap"]]["response"]
            )
        finally:
            await client.aclose()
    assert verdict.text == ""
    assert verdict.tool_input is not None
    assert 10 <= verdict.output_tokens <= 60


async def test_a_judge_out_of_room_for_its_working_gives_no_verdict(
    provider: AnthropicProvider,
) -> None:
    """A judge whose own solution does not fit max_tokens stops there: no tool call, so the
    cascade reads it as unavailable, and it is billed the tokens it wrote."""
    record = RECORDS[6]
    room = record["models"][TRIO["mid"]]["output_tokens"] // 2
    assert room > 0
    cut = await judge(
        provider,
        MID,
        record["prompt"],
        record["models"][TRIO["cheap"]]["response"],
        max_tokens=room,
    )
    assert cut.tool_input is None
    assert prompts.parse_verdict(cut.tool_input).passes is None
    assert (cut.output_tokens, cut.stop_reason) == (room, "max_tokens")


async def test_judge_without_its_own_answer_calls_no_tool() -> None:
    """When the judging model recorded no answer, the judge replies in text: unavailable."""
    record = copy.deepcopy(RECORDS[7])
    record["models"][TRIO["mid"]]["pred"] = None
    with ReplayServer(ReplayStore([record]), TIERS, FAST) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            candidate = record["models"][TRIO["cheap"]]["response"]
            completion = await judge(client, MID, record["prompt"], candidate)
        finally:
            await client.aclose()
    assert completion.tool_input is None
    assert prompts.parse_verdict(completion.tool_input).passes is None
    assert completion.text


@pytest.mark.parametrize("variant", ["malformed_judge", "malformed_judge:text"])
async def test_malformed_judge_fault_gives_no_usable_verdict(
    provider: AnthropicProvider, variant: str
) -> None:
    """The malformed_judge fault returns a verdict that strict parsing rejects."""
    record = RECORDS[8]
    candidate = record["models"][TRIO["cheap"]]["response"]
    completion = await judge(
        provider, MID, record["prompt"], candidate, headers={"x-tierroute-fault": variant}
    )
    assert prompts.parse_verdict(completion.tool_input).passes is None


async def test_malformed_judge_fault_leaves_answers_alone(provider: AnthropicProvider) -> None:
    """The malformed_judge fault does not touch answer calls sent with the same header."""
    record = RECORDS[8]
    completion = await ask(
        provider, CHEAP, record["prompt"], headers={"x-tierroute-fault": "malformed_judge"}
    )
    assert completion.text == record["models"][TRIO["cheap"]]["response"]


async def test_self_routing_block_parses(provider: AnthropicProvider) -> None:
    """A self-routing call returns the recorded answer and a parseable confidence block."""
    record = RECORDS[9]
    completion = await provider.complete(
        model=CHEAP,
        messages=prompts.self_routing_messages(record["prompt"]),
        max_tokens=1024,
        timeout_s=10.0,
    )
    answer, assessment = prompts.parse_self_assessment(completion.text)
    assert answer == record["models"][TRIO["cheap"]]["response"]
    assert assessment.confidence is not None
    assert 0.0 <= assessment.confidence <= 1.0
    assert assessment.needs_escalation is False


async def test_self_routing_without_a_final_answer_asks_to_escalate() -> None:
    """A recorded response with no extracted answer states low confidence and escalates."""
    record = copy.deepcopy(RECORDS[10])
    record["models"][TRIO["cheap"]]["pred"] = None
    with ReplayServer(ReplayStore([record]), TIERS, FAST) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            completion = await client.complete(
                model=CHEAP,
                messages=prompts.self_routing_messages(record["prompt"]),
                max_tokens=1024,
                timeout_s=10.0,
            )
        finally:
            await client.aclose()
    _, assessment = prompts.parse_self_assessment(completion.text)
    assert assessment.needs_escalation is True
    assert assessment.confidence is not None
    assert assessment.confidence < 0.75


async def test_unknown_prompt_gets_a_deterministic_synthetic_answer(
    provider: AnthropicProvider,
) -> None:
    """An unknown prompt gets the same synthetic answer and usage every time."""
    text = "What is the airspeed of an unladen swallow?"
    first = await ask(provider, CHEAP, text)
    second = await ask(provider, CHEAP, text)
    assert first.text == second.text == synthetic_answer(text, CHEAP)
    assert (first.input_tokens, first.output_tokens) == (second.input_tokens, second.output_tokens)
    assert first.output_tokens == estimate_tokens(first.text)


@pytest.mark.parametrize(("rates", "expected"), [((1.0,), True), ((0.0,), False)])
async def test_unknown_prompt_verdict_follows_the_pass_rate(
    rates: tuple[float, ...], expected: bool
) -> None:
    """Judge verdicts on unknown prompts follow the configured per-tier pass rate."""
    config = ReplayConfig(time_scale=0.0, synthetic_pass_rates=rates)
    question = "Name a prime between 90 and 100."
    with ReplayServer(ReplayStore(), TIERS, config) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            answer = await ask(client, CHEAP, question)
            verdict = await judge(client, MID, question, answer.text)
        finally:
            await client.aclose()
    assert prompts.parse_verdict(verdict.tool_input).passes is expected


def test_unknown_prompt_verdict_is_the_same_on_every_server() -> None:
    """Two servers give the same verdicts on the same unknown prompts."""
    bodies = [
        json.dumps(
            {
                "model": MID,
                "max_tokens": 100,
                "messages": [
                    {"role": "user", "content": prompts.judge_messages(f"q{i}", "a")[0].content}
                ],
                "tools": [{"name": prompts.JUDGE_TOOL.name, "input_schema": {}}],
            }
        ).encode()
        for i in range(20)
    ]
    runs = []
    for _ in range(2):
        engine = ReplayEngine(ReplayStore(), TIERS, FAST)
        runs.append(
            [engine.handle("/v1/messages", b, {}).body["content"][-1]["input"] for b in bodies]
        )
    assert runs[0] == runs[1]
    assert {v["passes"] for v in runs[0]} == {True, False}


async def test_fail_first_n_then_succeed(provider: AnthropicProvider) -> None:
    """`429*1` fails the first call for its fault key only, then lets calls through."""
    record = RECORDS[11]
    headers = {"x-tierroute-fault": "429*1", "x-tierroute-fault-key": "first-n"}
    with pytest.raises(RateLimited):
        await ask(provider, CHEAP, record["prompt"], headers=headers)
    second = await ask(provider, CHEAP, record["prompt"], headers=headers)
    assert second.text == record["models"][TRIO["cheap"]]["response"]
    with pytest.raises(RateLimited):
        await ask(
            provider, CHEAP, record["prompt"], headers={**headers, "x-tierroute-fault-key": "other"}
        )


async def test_fault_scoped_to_a_tier_spares_the_others(provider: AnthropicProvider) -> None:
    """`529@cheap` fails cheap-tier calls and lets the mid tier answer."""
    record = RECORDS[12]
    headers = {"x-tierroute-fault": "529@cheap"}
    with pytest.raises(Exception, match="529"):
        await ask(provider, CHEAP, record["prompt"], headers=headers)
    completion = await ask(provider, MID, record["prompt"], headers=headers)
    assert completion.text == record["models"][TRIO["mid"]]["response"]


def test_configured_fault_rates_are_seeded() -> None:
    """Configured fault rates draw from a seeded RNG: the same seed, the same faults."""
    config = ReplayConfig(time_scale=0.0, faults="500@cheap=0.5", fault_seed=3)
    body = json.dumps(
        {"model": CHEAP, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    runs = []
    for _ in range(2):
        engine = ReplayEngine(ReplayStore(), TIERS, config)
        runs.append([engine.handle("/v1/messages", body, {}).status for _ in range(30)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


@pytest.mark.parametrize("faults", ["bogus=0.1", "429=2", "timeout:5=0.1", "500*2=0.1"])
def test_bad_fault_configuration_is_refused(faults: str) -> None:
    """An unreadable replay.faults setting is a ConfigError at construction."""
    with pytest.raises(ConfigError):
        ReplayServer(ReplayStore(), TIERS, ReplayConfig(faults=faults))


async def test_unreadable_fault_header_is_a_bad_request(provider: AnthropicProvider) -> None:
    """An unknown fault kind in the header is answered 400 invalid_request_error."""
    with pytest.raises(Exception, match="400"):
        await ask(provider, CHEAP, "hi", headers={"x-tierroute-fault": "explode"})


async def test_cancelled_call_leaves_the_server_healthy() -> None:
    """Cancelling a call mid-latency disconnects it; the server then answers normally."""
    # Cheap answers take an hour, mid answers are instant: no test waits on the clock.
    config = ReplayConfig(time_scale=1.0, ttft_s=(3600.0, 0.0), tokens_per_s=(1.0, 1e9))
    record = RECORDS[13]
    with ReplayServer(ReplayStore(RECORDS), TIERS, config) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            call = asyncio.create_task(ask(client, CHEAP, record["prompt"], timeout_s=7200.0))
            assert await asyncio.to_thread(server.wait_for, lambda s: s.in_flight == 1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await asyncio.to_thread(
                server.wait_for, lambda s: s.in_flight == 0 and s.disconnected == 1
            )
            after = await ask(client, MID, record["prompt"])
        finally:
            await client.aclose()
    assert after.text == record["models"][TRIO["mid"]]["response"]


async def test_a_slow_call_does_not_block_others() -> None:
    """While one call waits out its latency, other calls are answered concurrently."""
    config = ReplayConfig(time_scale=1.0, ttft_s=(3600.0, 0.0), tokens_per_s=(1.0, 1e9))
    record = RECORDS[15]
    with ReplayServer(ReplayStore(RECORDS), TIERS, config) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            slow = asyncio.create_task(ask(client, CHEAP, record["prompt"], timeout_s=7200.0))
            assert await asyncio.to_thread(server.wait_for, lambda s: s.in_flight == 1)
            fast = await asyncio.gather(*(ask(client, MID, r["prompt"]) for r in RECORDS[:8]))
            assert not slow.done()
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
        finally:
            await client.aclose()
    assert [c.text for c in fast] == [r["models"][TRIO["mid"]]["response"] for r in RECORDS[:8]]


async def test_stop_releases_a_held_connection() -> None:
    """Stopping the server ends a connection held by a timeout fault; the client sees a drop."""
    with ReplayServer(ReplayStore(), TIERS, FAST) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            call = asyncio.create_task(
                ask(client, CHEAP, "hi", timeout_s=600.0, headers={"x-tierroute-fault": "timeout"})
            )
            assert await asyncio.to_thread(server.wait_for, lambda s: s.in_flight == 1)
            await asyncio.to_thread(server.stop)
            with pytest.raises(ProviderConnectionError):
                await call
        finally:
            await client.aclose()


async def test_count_tokens_answers(server: ReplayServer) -> None:
    """count_tokens answers with the replay's token estimate of the prompt."""
    client = anthropic.AsyncAnthropic(api_key="k", base_url=server.base_url, max_retries=0)
    try:
        counted = await client.messages.count_tokens(
            model=CHEAP, messages=[{"role": "user", "content": "one two three four"}]
        )
    finally:
        await client.close()
    assert counted.input_tokens == estimate_tokens("one two three four")


async def test_content_blocks_and_system_blocks_are_read(server: ReplayServer) -> None:
    """A prompt sent as text content blocks, with a block system prompt, is still matched."""
    record = RECORDS[14]
    client = anthropic.AsyncAnthropic(api_key="k", base_url=server.base_url, max_retries=0)
    try:
        message = await client.messages.create(
            model=CHEAP,
            max_tokens=1024,
            system=[{"type": "text", "text": "Be brief."}],
            messages=[{"role": "user", "content": [{"type": "text", "text": record["prompt"]}]}],
            metadata={"user_id": "u1"},
            stop_sequences=["\n\nHuman:"],
        )
    finally:
        await client.close()
    assert message.content[0].type == "text"
    assert message.content[0].text == record["models"][TRIO["cheap"]]["response"]


async def test_configured_api_key_is_required() -> None:
    """With replay.api_key set, a request with another key is refused as terminal (401)."""
    config = ReplayConfig(time_scale=0.0, api_key=Secret("right"))
    with ReplayServer(ReplayStore(), TIERS, config) as server:
        wrong = AnthropicProvider(api_key="wrong", base_url=server.base_url)
        right = AnthropicProvider(api_key="right", base_url=server.base_url)
        try:
            with pytest.raises(TerminalProviderError) as caught:
                await ask(wrong, CHEAP, "hi")
            completion = await ask(right, CHEAP, "hi")
        finally:
            await wrong.aclose()
            await right.aclose()
    assert caught.value.status_code == 401
    assert completion.text


def test_from_settings_without_data_serves_synthetic_answers(tmp_path: Path) -> None:
    """With no data file anywhere, from_settings builds an empty store (synthetic only)."""
    settings = Settings.from_mapping({"tiers": [t.__dict__ for t in TIERS]})
    server = ReplayServer.from_settings(settings, {"TIERROUTE_DATA": str(tmp_path / "none.gz")})
    assert len(server.store) == 0


def test_from_settings_loads_the_configured_file(tmp_path: Path) -> None:
    """from_settings loads replay.data when it is set."""
    path = write_dataset(tmp_path / "d.jsonl.gz", RECORDS[:5])
    settings = Settings.from_mapping(
        {"tiers": [t.__dict__ for t in TIERS], "replay": {"data": str(path)}}
    )
    server = ReplayServer.from_settings(settings, {})
    assert len(server.store) == 5
    assert server.store.lookup(RECORDS[0]["prompt"]) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step by step... The answer is (C).", "C"),
        ('```json\n{"reasoning": "r", "answer": "18"}\n```', "18"),
        ("so $x = \\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("Working.\nFinal answer: 42", "42"),
        ("", None),
    ],
)
def test_extract_answer_reads_the_data_formats(text: str, expected: str | None) -> None:
    """The extractor reads option letters, JSON answer fields, boxed values and last lines."""
    assert extract_answer(text) == expected


def test_answers_agree_normalises_numbers() -> None:
    """Equal numbers in different spellings agree; a missing answer never agrees."""
    assert answers_agree("18.00", "$18")
    assert answers_agree("1,000", "1000")
    assert not answers_agree("18", "19")
    assert not answers_agree(None, None)


def test_replay_package_never_mentions_ground_truth_fields() -> None:
    """No replay source file names the ground-truth fields, so none can read them."""
    sources = sorted(REPLAY_PACKAGE.glob("*.py"))
    assert sources
    forbidden = re.compile(r"correct|reference_answer", re.IGNORECASE)
    offenders = [p.name for p in sources if forbidden.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.realdata
async def test_real_data_serves_a_recorded_claude_answer(real_data: Path) -> None:
    """On the real data, a GSM8K prompt is answered by the recorded claude-3-haiku response."""
    store = ReplayStore.load(real_data)
    # Reading the raw file here is the test's business: it knows the expected response.
    raw = next(r for r in iter_records(real_data) if r["task"] == "gsm8k")
    config = ReplayConfig(time_scale=0.0, trio="claude")
    with ReplayServer(store, TIERS, config) as server:
        client = AnthropicProvider(api_key="k", base_url=server.base_url)
        try:
            completion = await ask(client, CHEAP, raw["prompt_sent"])
        finally:
            await client.aclose()
    assert completion.text == raw["models"][CLAUDE["cheap"]]["response"]
