"""The replay backend's transport-free core: one Messages API request in, one reply out.

Requests are matched to recorded prompts through the question the cascade sends (alone,
or inside `<question>` tags), and answered with what the recorded model for the
requested tier said. Judge verdicts come from the judging model's own recorded answer;
the rules for verdicts, self-assessments and unknown prompts are in docs/replay.md.
The HTTP layer (`tierroute.providers.replay.http_server`) only moves bytes and waits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tierroute.errors import ConfigError
from tierroute.providers.answers import answers_agree, extract_answer
from tierroute.providers.base import estimate_tokens, prompt_text
from tierroute.providers.prompts import (
    JUDGE_TOOL,
    SELF_ROUTING_INSTRUCTION,
    extract_candidate,
    extract_question,
)
from tierroute.providers.replay.caching import PromptCache
from tierroute.providers.replay.faults import FaultPlan, FaultSpec
from tierroute.providers.replay.latency import LatencyModel
from tierroute.providers.replay.recorded import TRIOS, ReplayRecord, ReplayStore
from tierroute.providers.replay.sse import SseEvent, cut_midstream, stream_events
from tierroute.providers.replay.tools import chosen_tool, tool_use_block
from tierroute.settings import ProbeConfig, ReplayConfig, TierConfig

logger = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# Output tokens of the tool-call envelope around a verdict's JSON.
_TOOL_CALL_OVERHEAD_TOKENS = 12
# Self-assessment: phrases that make the replayed model sound less sure of itself.
_HEDGES = (
    "not sure",
    "unsure",
    "uncertain",
    "unclear",
    "i think",
    "perhaps",
    "possibly",
    "might be",
    "may be",
    "probably",
    "approximately",
    "cannot determine",
    "can't determine",
    "assume",
    "guess",
    "it seems",
)
_LONG_REASONING_TOKENS = 700
_STATUS_ERRORS: Mapping[str, tuple[int, str, str]] = {
    "429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit."),
    "spend_limit": (
        429,
        "rate_limit_error",
        "You have reached your specified workspace API usage limits (spend limit).",
    ),
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
    "400": (400, "invalid_request_error", "Invalid request (injected fault)."),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "403": (403, "permission_error", "Your API key does not have permission to use this."),
    "404": (404, "not_found_error", "Not found (injected fault)."),
    "413": (413, "request_too_large", "Request exceeds the maximum allowed size."),
}

Action = Literal["respond", "drop", "hold"]


@dataclass(frozen=True)
class Reply:
    """What the HTTP layer should do: wait `delay_s`, then respond, drop or hold."""

    status: int
    body: Mapping[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    action: Action = "respond"
    # For statistics and logs: answer, judge, self_routing, tool_use, count_tokens, error
    # or fault.
    kind: str = "answer"
    # A streamed reply: its server-sent events, each with its wait (`delay_s` unused).
    events: tuple[SseEvent, ...] = ()


class _BadRequest(ValueError):
    """A request the Messages API would refuse with 400."""


@dataclass(frozen=True)
class _Working:
    """A simulated judge's own solution, written before its verdict, and its tokens."""

    text: str
    tokens: int


@dataclass(frozen=True)
class _Request:
    model: str
    max_tokens: int
    system: str
    turns: tuple[_Turn, ...]
    tools: tuple[Mapping[str, Any], ...]
    stream: bool
    payload: Mapping[str, Any] = field(default_factory=dict)
    tool_choice: Mapping[str, Any] | None = None

    @property
    def last_user_text(self) -> str:
        """The question's turn: the last user turn with text of its own.

        A turn that only brings tool results answers the call of an earlier turn, whose
        question is still the one asked.
        """
        for turn in reversed(self.turns):
            if turn.role == "user" and (turn.own_text or not turn.tool_results):
                return turn.own_text
        return ""

    @property
    def answers_tool_call(self) -> bool:
        """Whether the last user turn brings tool results."""
        users = [t for t in self.turns if t.role == "user"]
        return bool(users) and users[-1].tool_results

    @property
    def prompt_text(self) -> str:
        """Everything the model reads, for token counting: system, turns, tool schemas."""
        return prompt_text(self.system, (turn.text for turn in self.turns), self.tools)

    @property
    def is_judge(self) -> bool:
        return any(tool.get("name") == JUDGE_TOOL.name for tool in self.tools)


@dataclass(frozen=True)
class _Turn:
    role: str
    # Everything the model reads of the turn (tool results included), for token counts.
    text: str
    # The turn's own text blocks: what a question is matched by.
    own_text: str
    tool_results: bool = False


def _content_text(content: Any, where: str) -> tuple[str, str, bool]:
    """(all readable text, the turn's own text, whether it brings tool results)."""
    if isinstance(content, str):
        return content, content, False
    if not isinstance(content, list):
        raise _BadRequest(f"{where}: content must be a string or a list of content blocks")
    own: list[str] = []
    results: list[str] = []
    for block in content:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _BadRequest(f"{where}: every content block needs a 'type'")
        # Only text is replayed; images and documents carry no prompt text here.
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise _BadRequest(f"{where}: a text block needs 'text'")
            own.append(block["text"])
        elif block["type"] == "tool_result":
            inner = block.get("content") or []
            results.append(inner if isinstance(inner, str) else _content_text(inner, where)[0])
    has_results = any(b.get("type") == "tool_result" for b in content)
    return "\n".join([*results, *own]), "\n".join(own), has_results


def _parse(payload: Any, *, need_max_tokens: bool) -> _Request:
    if not isinstance(payload, dict):
        raise _BadRequest("request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: Field required")
    max_tokens = payload.get("max_tokens", 1 if not need_max_tokens else None)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _BadRequest("max_tokens: must be an integer of at least 1")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: at least one message is required")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _BadRequest(f"messages.{i}.role: must be 'user' or 'assistant'")
        text, own, results = _content_text(message.get("content"), f"messages.{i}")
        turns.append(_Turn(str(message["role"]), text, own, results))
    system = payload.get("system")
    tools = payload.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools
    ):
        raise _BadRequest("tools: every tool needs a 'name'")
    tool_choice = payload.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, dict):
        raise _BadRequest("tool_choice: must be an object")
    return _Request(
        model=model,
        max_tokens=max_tokens,
        system="" if system is None else _content_text(system, "system")[0],
        turns=tuple(turns),
        tools=tuple(tools),
        stream=payload.get("stream") is True,
        payload=payload,
        tool_choice=tool_choice,
    )


def _presented_keys(headers: Mapping[str, str]) -> set[str]:
    # SDKs send the key as x-api-key or, in newer versions, as a bearer token.
    keys = {headers.get("x-api-key", "")}
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        keys.add(token.strip())
    return keys - {""}


def _digest(*parts: str) -> int:
    # hashlib, not hash(): Python salts str hashes per process, and replies must be stable.
    joined = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(joined).digest()[:8], "big")


def synthetic_answer(question: str, model: str) -> str:
    """The deterministic stand-in answer of `model` to a prompt the data does not hold."""
    h = _digest("answer", question, model)
    letter = "ABCDEFGHIJ"[h % 10]
    return (
        f"This prompt is not in the replay data, so {model} gives a synthetic answer "
        f"(replay reference {h % 16**8:08x}). The answer is ({letter})."
    )


def self_assessment(
    response: str, pred: str | None, output_tokens: int, question: str, model: str
) -> dict[str, Any]:
    """The confidence block a replayed model appends under self-routing.

    Decided from the response alone, never from ground truth: start at 0.9; no final
    answer -0.35; -0.1 per hedging phrase (at most -0.3); over 700 output tokens -0.1;
    then a deterministic jitter in [-0.06, +0.06] from a hash of question and model;
    clamped to [0.05, 0.99]. It asks for escalation when it reached no final answer or its
    confidence is under 0.5. Like real models, it is overconfident: most answers,
    right or wrong, land above 0.75.
    """
    lowered = response.lower()
    hedges = sum(lowered.count(h) for h in _HEDGES)
    confidence = 0.9
    reasons = []
    if not pred:
        confidence -= 0.35
        reasons.append("no clear final answer")
    if hedges:
        confidence -= min(0.3, 0.1 * hedges)
        reasons.append("some steps are uncertain")
    if output_tokens > _LONG_REASONING_TOKENS:
        confidence -= 0.1
        reasons.append("long derivation")
    jitter = (_digest("confidence", question, model) % 121 - 60) / 1000
    confidence = round(min(0.99, max(0.05, confidence + jitter)), 2)
    needs = not pred or confidence < 0.5
    reason = "; ".join(reasons) or "worked the problem directly"
    return {"confidence": confidence, "needs_escalation": needs, "reason": reason}


def _message(
    model: str, content: list[dict[str, Any]], stop_reason: str, usage: tuple[int, int]
) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    """Anthropic's error body."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


class ReplayEngine:
    """Answers Messages API requests from a ReplayStore. Thread-safe."""

    def __init__(
        self,
        store: ReplayStore,
        tiers: Sequence[TierConfig],
        config: ReplayConfig,
        probes: Sequence[ProbeConfig] = (),
    ) -> None:
        if not tiers:
            raise ConfigError("the replay backend needs at least one tier")
        if config.trio not in TRIOS:
            raise ConfigError(f"replay.trio must be one of {TRIOS}")
        if not config.synthetic_pass_rates or not all(
            0.0 <= r <= 1.0 for r in config.synthetic_pass_rates
        ):
            raise ConfigError("replay.synthetic_pass_rates needs values within [0, 1]")
        self._store = store
        self._tiers = tuple(tiers)
        self._config = config
        self._tier_by_model = {t.model: i for i, t in enumerate(self._tiers)}
        # Probes answer as recorded by their replay models; a tier's model id wins a clash.
        self._probe_by_model = {p.model: p for p in probes if p.model not in self._tier_by_model}
        self._latency = LatencyModel(config.ttft_s, config.tokens_per_s, config.time_scale)
        self._faults = FaultPlan(
            config.faults, config.fault_seed, allow_headers=config.allow_fault_headers
        )
        self._cache = PromptCache()

    def handle(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Answer one HTTP request (header names in any case)."""
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        lowered = {name.lower(): value for name, value in headers.items()}
        reply = self._handle(path.split("?", 1)[0], body, lowered, request_id)
        return dataclasses.replace(reply, headers={"request-id": request_id, **reply.headers})

    def _error(self, status: int, error_type: str, message: str, request_id: str) -> Reply:
        return Reply(status, error_body(error_type, message, request_id), kind="error")

    # One early error reply per check, in the order the Messages API applies them.
    def _handle(  # noqa: PLR0911
        self, path: str, body: bytes, headers: dict[str, str], request_id: str
    ) -> Reply:
        key = self._config.api_key.get()
        if key and key not in _presented_keys(headers):
            return self._error(401, "authentication_error", "invalid x-api-key", request_id)
        if path not in (MESSAGES_PATH, COUNT_TOKENS_PATH):
            return self._error(404, "not_found_error", f"Not found: {path}", request_id)
        try:
            payload = json.loads(body or b"null")
            request = _parse(payload, need_max_tokens=path == MESSAGES_PATH)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(
                400, "invalid_request_error", "request body is not valid JSON", request_id
            )
        except _BadRequest as exc:
            return self._error(400, "invalid_request_error", str(exc), request_id)
        served = self._served_by(request, request_id)
        if isinstance(served, Reply):
            return served
        position, probe = served
        if path == COUNT_TOKENS_PATH:
            count = {"input_tokens": estimate_tokens(request.prompt_text)}
            return Reply(200, count, kind="count_tokens")
        try:
            fault = self._faults.choose(
                headers,
                tier_index=position if probe is None else -1,
                tier_name=probe.label if probe is not None else self._tiers[position].name,
                model=request.model,
                is_judge=request.is_judge,
            )
        except ValueError as exc:
            return self._error(
                400, "invalid_request_error", f"x-tierroute-fault: {exc}", request_id
            )
        midstream = fault is not None and fault.kind == "midstream"
        if fault is not None and fault.kind not in ("malformed_judge", "midstream"):
            return self._fault_reply(fault, request_id)
        if midstream and not request.stream:
            # Unary calls meet the error a stream would carry, before any bytes.
            return self._fault_reply(FaultSpec("529"), request_id)
        if request.is_judge:
            reply = self._judge(request, position, fault)
        else:
            reply = self._answer(request, position, probe)
        reply = self._cached(request, reply)
        if request.stream:
            return self._streamed(reply, position, midstream=midstream)
        return reply

    def _served_by(
        self, request: _Request, request_id: str
    ) -> tuple[int, ProbeConfig | None] | Reply:
        """The tier position (and probe, if it is one) the requested model plays, else the
        error reply. A probe answers at the cheapest tier's latency; it never judges."""
        tier = self._tier_by_model.get(request.model)
        if tier is not None:
            return tier, None
        probe = self._probe_by_model.get(request.model)
        if probe is None:
            return self._error(404, "not_found_error", f"model: {request.model}", request_id)
        if request.is_judge:
            return self._error(
                400,
                "invalid_request_error",
                f"model: {request.model} is a probe here; probes answer, they do not judge",
                request_id,
            )
        return 0, probe

    def _cached(self, request: _Request, reply: Reply) -> Reply:
        """The reply with its input tokens split by the request's cache breakpoints."""
        body = dict(reply.body or {})
        usage = dict(body.get("usage") or {})
        split = self._cache.usage(request.payload, request.model, int(usage["input_tokens"]))
        usage.update(
            input_tokens=split.input_tokens,
            cache_creation_input_tokens=split.cache_creation_input_tokens,
            cache_read_input_tokens=split.cache_read_input_tokens,
        )
        body["usage"] = usage
        return dataclasses.replace(reply, body=body)

    def _streamed(self, reply: Reply, tier: int, *, midstream: bool) -> Reply:
        """The reply as server-sent events at the tier's latency model."""
        events = stream_events(
            reply.body or {}, self._latency.first_token_s(tier), self._latency.per_token_s(tier)
        )
        if midstream:
            events = cut_midstream(events, "overloaded_error", "Overloaded")
        return dataclasses.replace(reply, delay_s=0.0, events=tuple(events))

    def _fault_reply(self, fault: FaultSpec, request_id: str) -> Reply:
        logger.debug("replay injects fault %s", fault.text)
        if fault.kind == "timeout":
            return Reply(0, None, action="hold", kind="fault")
        if fault.kind == "drop":
            return Reply(0, None, action="drop", kind="fault")
        status, error_type, message = _STATUS_ERRORS[fault.kind]
        body = error_body(error_type, message, request_id)
        headers: dict[str, str] = {}
        if fault.kind == "spend_limit":
            body["error"]["details"] = {"error_code": "enforced_spend_limit_reached"}
        elif fault.kind == "429":
            seconds = float(fault.arg) if fault.arg else self._config.retry_after_s
            headers["retry-after"] = (
                str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
            )
        return Reply(status, body, headers, kind="fault")

    def _recorded_key(
        self, record: ReplayRecord, tier: int, probe: ProbeConfig | None
    ) -> str | None:
        """The recorded model answering: the tier's, or the probe's first replay model the
        record holds (None: the record holds none, and the answer is synthetic)."""
        if probe is None:
            return record.model_key(tier, len(self._tiers), self._config.trio)
        for key in probe.replay_models or (probe.model,):
            if key in record.answers:
                return key
        return None

    def _answer(self, request: _Request, tier: int, probe: ProbeConfig | None = None) -> Reply:
        user_text = request.last_user_text
        question = extract_question(user_text).strip()
        tool = chosen_tool(request.tools, request.tool_choice)
        if tool is not None and not request.answers_tool_call:
            return self._tool_call(request, tier, tool, question)
        record, matched = self._match(question, user_text)
        self_routing = SELF_ROUTING_INSTRUCTION in user_text
        prompt_tokens = estimate_tokens(request.prompt_text)
        recorded_key = None if record is None else self._recorded_key(record, tier, probe)
        if record is not None and recorded_key is not None:
            model_key = recorded_key
            recorded = record.answers[model_key]
            text, pred = recorded.response, recorded.pred
            output_tokens = recorded.output_tokens
            # The recorded count covers the recorded prompt; anything the cascade wrapped
            # around it (tags, a failed attempt, history, a system prompt) is added on top.
            input_tokens = recorded.input_tokens + max(0, prompt_tokens - estimate_tokens(matched))
            source = "recorded"
        else:
            model_key = request.model
            text = synthetic_answer(question, request.model)
            pred = extract_answer(text)
            output_tokens = estimate_tokens(text)
            input_tokens = prompt_tokens
            source = "synthetic"
        kind = "answer"
        if self_routing:
            block = json.dumps(self_assessment(text, pred, output_tokens, question, request.model))
            text = f"{text.rstrip()}\n{block}"
            output_tokens += estimate_tokens(block)
            kind = "self_routing"
        stop_reason = "end_turn"
        if output_tokens > request.max_tokens:
            # Cut the text in proportion, as a model stopped at max_tokens would be.
            text = text[: len(text) * request.max_tokens // output_tokens]
            output_tokens = request.max_tokens
            stop_reason = "max_tokens"
        body = _message(
            request.model,
            [{"type": "text", "text": text}],
            stop_reason,
            (input_tokens, output_tokens),
        )
        headers = {"x-tierroute-replay": source, "x-tierroute-recorded-model": model_key}
        return Reply(200, body, headers, self._latency.seconds(tier, output_tokens), kind=kind)

    def _tool_call(
        self, request: _Request, tier: int, tool: Mapping[str, Any], question: str
    ) -> Reply:
        """A replayed model calling `tool` (docs/replay.md, "Tool calls")."""
        block = tool_use_block(tool, question, request.model)
        content: list[dict[str, Any]] = [block]
        if (request.tool_choice or {}).get("type", "auto") == "auto":
            content.insert(0, {"type": "text", "text": f"I will use {block['name']} for this."})
        rendered = " ".join(json.dumps(b) for b in content)
        output_tokens = estimate_tokens(rendered) + _TOOL_CALL_OVERHEAD_TOKENS
        usage = (estimate_tokens(request.prompt_text), output_tokens)
        body = _message(request.model, content, "tool_use", usage)
        delay = self._latency.seconds(tier, output_tokens)
        return Reply(200, body, {"x-tierroute-replay": "tool_use"}, delay, kind="tool_use")

    def _match(self, question: str, user_text: str) -> tuple[ReplayRecord | None, str]:
        record = self._store.lookup(question)
        if record is not None:
            return record, question
        record = self._store.lookup(user_text)
        return record, user_text

    def _judge(self, request: _Request, tier: int, fault: FaultSpec | None) -> Reply:
        user_text = request.last_user_text
        question = extract_question(user_text).strip()
        candidate = extract_candidate(user_text)
        input_tokens = estimate_tokens(request.prompt_text)
        record = self._store.lookup(question)
        if fault is not None:
            if fault.arg == "text":
                return self._judge_text(request, tier, input_tokens, "malformed")
            return self._verdict(request, tier, input_tokens, {"passes": "maybe", "issues": "?"})
        if candidate is None:
            return self._judge_text(request, tier, input_tokens, "unavailable")
        if record is None:
            passes = self._synthetic_verdict(question, candidate, tier)
            found = [] if passes else ["The grader's own solution disagrees with this answer."]
            working = self._working(synthetic_answer(question, request.model), None)
            return self._verdict(
                request, tier, input_tokens, {"passes": passes, "issues": found}, working
            )
        own = record.answer(tier, len(self._tiers), self._config.trio)
        working = self._working(own.response, own.output_tokens)
        judge_pred = own.pred
        if not judge_pred:
            # The judging model reached no answer of its own: it cannot grade.
            return self._judge_text(request, tier, input_tokens, "unavailable", working)
        candidate_pred = self._candidate_pred(record, candidate)
        passes = answers_agree(candidate_pred, judge_pred)
        issues: list[str]
        if passes:
            issues = []
        elif not candidate_pred:
            issues = ["The candidate answer states no final answer."]
        else:
            issues = [
                f"The final answer ({candidate_pred}) disagrees with the grader's own "
                f"solution ({judge_pred})."
            ]
        return self._verdict(
            request, tier, input_tokens, {"passes": passes, "issues": issues}, working
        )

    def _working(self, text: str, tokens: int | None) -> _Working | None:
        """The judge's own solution, written before its verdict: what reaching the verdict
        takes, billed under `judge_billing = "reasoning"` (None under "verdict_only")."""
        if self._config.judge_billing != "reasoning":
            return None
        return _Working(text, estimate_tokens(text) if tokens is None else tokens)

    @staticmethod
    def _candidate_pred(record: ReplayRecord, candidate: str) -> str | None:
        stripped = candidate.strip()
        for recorded in record.answers.values():
            if recorded.response.strip() == stripped:
                return recorded.pred
        return extract_answer(candidate)

    def _synthetic_verdict(self, question: str, candidate: str, judge_tier: int) -> bool:
        # The candidate's tier: the tier whose synthetic answer it is, else one below the judge.
        candidate_tier = max(0, judge_tier - 1)
        for i, tier in enumerate(self._tiers):
            if candidate.strip() == synthetic_answer(question, tier.model).strip():
                candidate_tier = i
                break
        rates = self._config.synthetic_pass_rates
        rate = rates[min(candidate_tier, len(rates) - 1)]
        return _digest("verdict", question, str(judge_tier)) % 100 < round(rate * 100)

    def _verdict(
        self,
        request: _Request,
        tier: int,
        input_tokens: int,
        tool_input: dict[str, Any],
        working: _Working | None = None,
    ) -> Reply:
        verdict_tokens = estimate_tokens(json.dumps(tool_input)) + _TOOL_CALL_OVERHEAD_TOKENS
        blocks: list[dict[str, Any]] = []
        output_tokens = verdict_tokens
        if working is not None:
            if working.tokens + verdict_tokens > request.max_tokens:
                # Out of room before the verdict: the working is cut and no tool call comes,
                # as a model stopped at max_tokens would end.
                return self._cut_judge(request, tier, input_tokens, working)
            blocks.append({"type": "text", "text": working.text})
            output_tokens += working.tokens
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": JUDGE_TOOL.name,
                "input": tool_input,
            }
        )
        body = _message(request.model, blocks, "tool_use", (input_tokens, output_tokens))
        delay = self._latency.seconds(tier, output_tokens)
        return Reply(200, body, delay_s=delay, kind="judge")

    def _cut_judge(
        self, request: _Request, tier: int, input_tokens: int, working: _Working
    ) -> Reply:
        cut = working.text[: len(working.text) * request.max_tokens // max(1, working.tokens)]
        body = _message(
            request.model,
            [{"type": "text", "text": cut}],
            "max_tokens",
            (input_tokens, request.max_tokens),
        )
        delay = self._latency.seconds(tier, request.max_tokens)
        return Reply(200, body, delay_s=delay, kind="judge")

    def _judge_text(
        self,
        request: _Request,
        tier: int,
        input_tokens: int,
        why: str,
        working: _Working | None = None,
    ) -> Reply:
        text = (
            "The answer looks mostly fine to me, I think."
            if why == "malformed"
            else "I cannot grade this answer: I could not reach a final answer of my own."
        )
        output_tokens = estimate_tokens(text)
        if working is not None:
            if working.tokens + output_tokens > request.max_tokens:
                return self._cut_judge(request, tier, input_tokens, working)
            text = f"{working.text.rstrip()}\n\n{text}"
            output_tokens += working.tokens
        body = _message(
            request.model,
            [{"type": "text", "text": text}],
            "end_turn",
            (input_tokens, output_tokens),
        )
        delay = self._latency.seconds(tier, output_tokens)
        return Reply(200, body, delay_s=delay, kind="judge")
