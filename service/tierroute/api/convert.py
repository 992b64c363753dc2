"""Validation and conversion between protobuf messages and the core's domain objects.

Every input limit is enforced here, before any routing or provider work, so bad input is
rejected cheaply with INVALID_ARGUMENT and a message that names the limit.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tierroute.api import blocks
from tierroute.cascade import (
    CascadeEvent,
    CascadeQuery,
    CascadeResult,
    Hop,
    HopFinishedEvent,
    HopStartedEvent,
    JudgeMode,
    ResultEvent,
    RetractEvent,
    SpeculationMode,
    TextEvent,
    VerdictEvent,
)
from tierroute.errors import InvalidRequest, QueryTooLong
from tierroute.providers import Block, Message
from tierroute.routing import Decision, ReasonNote, RouteQuery
from tierroute.settings import LimitsConfig, Settings, TierConfig
from tierroute.v1 import tierroute_pb2 as pb

STRATEGY_NAMES: dict[pb.Strategy.ValueType, str | None] = {
    pb.STRATEGY_UNSPECIFIED: None,
    pb.STRATEGY_HEURISTIC: "heuristic",
    pb.STRATEGY_CLASSIFIER: "classifier",
    pb.STRATEGY_SELF_ROUTING: "self_routing",
}
STRATEGY_ENUMS = {name: value for value, name in STRATEGY_NAMES.items() if name}
RULE_NAMES: dict[pb.DecisionRule.ValueType, str | None] = {
    pb.DECISION_RULE_UNSPECIFIED: None,
    pb.DECISION_RULE_CALIBRATED: "calibrated",
    pb.DECISION_RULE_PUBLISHED: "published",
}
RULE_ENUMS = {name: value for value, name in RULE_NAMES.items() if name}
_ROLES: dict[pb.Role.ValueType, Literal["system", "user", "assistant"]] = {
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_SYSTEM: "system",
}


def engine_deadline(remaining: float | None) -> float | None:
    """The engine's share of the caller's remaining time (gRPC's deadline, or the timeout an
    HTTP client announces).

    A margin (5 %, at least 50 ms, at most 1 s) is held back so that an answer already in
    hand when the engine's deadline passes (returned degraded) still reaches the caller
    before the caller gives up at its own deadline.
    """
    if remaining is None:
        return None
    return max(0.0, remaining - min(1.0, max(0.05, 0.05 * remaining)))


def _check_id(value: str, field: str, limits: LimitsConfig) -> None:
    if len(value) > limits.max_id_chars:
        raise InvalidRequest(
            f"{field} has {len(value)} characters; the limit is {limits.max_id_chars}"
        )


def _check_point_name(name: str, limits: LimitsConfig) -> str:
    """policy.operating_point, bounded like an id (whether the model ships it, the router
    checks)."""
    _check_id(name, "policy.operating_point", limits)
    return name


def _check_metadata(metadata: Mapping[str, str], limits: LimitsConfig) -> dict[str, str]:
    if len(metadata) > limits.max_metadata_entries:
        raise InvalidRequest(
            f"metadata has {len(metadata)} entries; the limit is {limits.max_metadata_entries}"
        )
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars:
            raise InvalidRequest(
                f"a metadata key has {len(key)} characters; "
                f"the limit is {limits.max_metadata_key_chars}"
            )
        if len(value) > limits.max_metadata_value_chars:
            raise InvalidRequest(
                f"metadata value of {key[:40]!r} has {len(value)} characters; "
                f"the limit is {limits.max_metadata_value_chars}"
            )
    return dict(metadata)


@dataclass(frozen=True)
class Conversation:
    """A validated query-or-messages input.

    `text` is the question: the last user turn's text, or, when that turn only brings tool
    results, the text of the user turn that asked (what routing and the judge read).
    `turn` is the last user turn with its content blocks; `history` the earlier turns;
    `system` the system instruction as text and `system_blocks` as text blocks when any
    system turn came as blocks (cache_control).
    """

    text: str
    turn: Message
    history: tuple[Message, ...]
    system: str
    system_blocks: tuple[Block, ...] = ()
    tool_results: bool = False


def conversation(
    query: str,
    messages: Sequence[pb.ChatMessage],
    limits: LimitsConfig,
    breakpoints: blocks.Breakpoints | None = None,
) -> Conversation:
    """Validate the query-or-messages input into a Conversation."""
    if query and messages:
        raise InvalidRequest("set either query or messages, not both")
    if not messages:
        if not query.strip():
            raise InvalidRequest("query is empty")
        if len(query) > limits.max_query_chars:
            raise QueryTooLong(len(query), limits.max_query_chars)
        return Conversation(query, Message("user", query), (), "")
    if len(messages) > limits.max_messages:
        raise InvalidRequest(
            f"messages has {len(messages)} turns; the limit is {limits.max_messages}"
        )
    marks = breakpoints or blocks.Breakpoints(limits.max_cache_breakpoints)
    turns = [_turn(m, i, limits, marks) for i, m in enumerate(messages)]
    total = sum(len(t.text) + len(t.results_text) for t in turns)
    if total > limits.max_query_chars:
        raise QueryTooLong(total, limits.max_query_chars)
    system = [t for t in turns if t.role == "system"]
    chat = [t for t in turns if t.role != "system"]
    if not chat or chat[-1].role != "user":
        raise InvalidRequest("the last non-system message must be the user's")
    last = chat[-1]
    if not last.text.strip() and not last.blocks:
        raise InvalidRequest("the last user message is empty")
    system_blocks: tuple[Block, ...] = ()
    if any(t.blocks for t in system):
        system_blocks = tuple(
            b for t in system for b in (t.blocks or ({"type": "text", "text": t.text},))
        )
    asked = next((t for t in reversed(chat) if t.role == "user" and t.text.strip()), last)
    return Conversation(
        text=asked.text,
        turn=_message(last),
        history=tuple(_message(t) for t in chat[:-1]),
        system="\n".join(t.text for t in system),
        system_blocks=system_blocks,
        tool_results=last.tool_results,
    )


def _turn(
    message: pb.ChatMessage, i: int, limits: LimitsConfig, marks: blocks.Breakpoints
) -> blocks.Turn:
    if message.role not in _ROLES:
        raise InvalidRequest(f"messages[{i}].role {message.role} is not a known role")
    return blocks.turn(message, _ROLES[message.role], f"messages[{i}]", limits, marks)


def _message(turn: blocks.Turn) -> Message:
    assert turn.role != "system"  # system turns never reach the chat
    return Message(turn.role, turn.text, turn.blocks)


def _enum(value: Any, names: Mapping[Any, str | None], field: str) -> str | None:
    if value not in names:
        raise InvalidRequest(f"{field} {value} is not a known value")
    return names[value]


def route_query(request: pb.RouteRequest | pb.CascadeRequest, settings: Settings) -> RouteQuery:
    """Validate a Route or Cascade request into a RouteQuery (strategy may be self_routing)."""
    return _route_query(request, settings)[0]


def _route_query(
    request: pb.RouteRequest | pb.CascadeRequest,
    settings: Settings,
    breakpoints: blocks.Breakpoints | None = None,
) -> tuple[RouteQuery, Conversation]:
    """The RouteQuery and the conversation, from one pass over the input."""
    limits = settings.limits
    talk = conversation(request.query, request.messages, limits, breakpoints)
    for field in ("request_id", "tenant_id", "session_id"):
        _check_id(getattr(request, field), field, limits)
    strategy = _enum(request.strategy, STRATEGY_NAMES, "strategy")
    policy = request.policy
    rule = _enum(policy.rule, RULE_NAMES, "policy.rule")
    for field in ("quality_floor", "max_cost_usd"):
        value = getattr(policy, field)
        if not math.isfinite(value) or value < 0:
            raise InvalidRequest(f"policy.{field} must be a finite number >= 0")
    if policy.quality_floor > 1:
        raise InvalidRequest("policy.quality_floor must be within [0, 1]")
    query = RouteQuery(
        text=talk.text,
        history=talk.history,
        strategy=strategy,
        rule=rule,
        quality_floor=policy.quality_floor,
        max_cost_usd=policy.max_cost_usd,
        operating_point=_check_point_name(policy.operating_point, limits),
        tenant_id=request.tenant_id,
        session_id=request.session_id,
        request_id=request.request_id or uuid.uuid4().hex,
        metadata=_check_metadata(request.metadata, limits),
        continues_tool_use=talk.tool_results,
    )
    return query, talk


def tier_info(tier: TierConfig, index: int) -> pb.TierInfo:
    """A configured tier as the proto's TierInfo."""
    return pb.TierInfo(
        name=tier.name,
        model=tier.model,
        index=index,
        input_usd_per_mtok=tier.input_usd_per_mtok,
        output_usd_per_mtok=tier.output_usd_per_mtok,
        cache_write_multiplier=tier.cache_write_multiplier,
        cache_read_multiplier=tier.cache_read_multiplier,
        max_output_tokens=tier.max_output_tokens,
    )


def reason(note: ReasonNote) -> pb.Reason:
    """A domain reason note as the proto's Reason."""
    return pb.Reason(code=pb.ReasonCode.Value(f"REASON_CODE_{note.code.value}"), detail=note.detail)


def route_response(
    decision: Decision, request_id: str, tier_names: Sequence[str]
) -> pb.RouteResponse:
    """A routing decision as the proto's RouteResponse."""
    features = decision.features
    return pb.RouteResponse(
        request_id=request_id,
        tier=tier_info(decision.tier, decision.tier_index),
        strategy=STRATEGY_ENUMS[decision.strategy],
        scores=[
            pb.TierScore(tier=name, probability=p)
            for name, p in zip(tier_names, decision.scores, strict=True)
        ],
        thresholds=dict(decision.thresholds),
        reasons=[reason(n) for n in decision.reasons],
        model_version=decision.model_version,
        decision_time_us=decision.decision_time_us,
        rule=RULE_ENUMS.get(decision.rule, pb.DECISION_RULE_UNSPECIFIED),
        features=pb.QueryFeatures(
            estimated_tokens=features.estimated_tokens,
            has_code_block=features.has_code_block,
            multi_step=features.multi_step,
            query_type=features.query_type,
            familiarity=decision.familiarity,
        ),
        estimated_cost_usd=decision.estimated_cost_usd,
        confidence=decision.confidence,
    )


_SPECULATION: dict[pb.SpeculationMode.ValueType, SpeculationMode] = {
    pb.SPECULATION_MODE_UNSPECIFIED: "default",
    pb.SPECULATION_MODE_OFF: "off",
    pb.SPECULATION_MODE_ON: "on",
}
_JUDGE_MODE: dict[pb.JudgeMode.ValueType, JudgeMode] = {
    pb.JUDGE_MODE_UNSPECIFIED: "default",
    pb.JUDGE_MODE_ALWAYS: "always",
    pb.JUDGE_MODE_NEVER: "never",
    pb.JUDGE_MODE_START_ONLY: "start_only",
    pb.JUDGE_MODE_AGREEMENT: "agreement",
    pb.JUDGE_MODE_AGREEMENT_MID: "agreement_mid",
}
_HOP_ROLE = {
    "answer": pb.HOP_ROLE_ANSWER,
    "judge": pb.HOP_ROLE_JUDGE,
    "probe": pb.HOP_ROLE_PROBE,
}
_HOP_OUTCOME = {
    "ok": pb.HOP_OUTCOME_OK,
    "error": pb.HOP_OUTCOME_ERROR,
    "cancelled": pb.HOP_OUTCOME_CANCELLED,
    "skipped": pb.HOP_OUTCOME_SKIPPED,
}
_VERDICT = {
    None: pb.JUDGE_VERDICT_UNSPECIFIED,
    "pass": pb.JUDGE_VERDICT_PASS,
    "fail": pb.JUDGE_VERDICT_FAIL,
    "unavailable": pb.JUDGE_VERDICT_UNAVAILABLE,
}
_JUDGE_STATUS = {
    "passed": pb.JUDGE_STATUS_PASSED,
    "not_required": pb.JUDGE_STATUS_NOT_REQUIRED,
    "sampled_out": pb.JUDGE_STATUS_SAMPLED_OUT,
    "unavailable": pb.JUDGE_STATUS_UNAVAILABLE,
    "failed": pb.JUDGE_STATUS_FAILED,
    "self_accepted": pb.JUDGE_STATUS_SELF_ACCEPTED,
    "skipped": pb.JUDGE_STATUS_SKIPPED,
    "tool_use": pb.JUDGE_STATUS_TOOL_USE,
    "agreed": pb.JUDGE_STATUS_AGREED,
}


def cascade_query(
    request: pb.CascadeRequest, settings: Settings, headers: Mapping[str, str]
) -> CascadeQuery:
    """Validate a CascadeRequest into the cascade engine's query."""
    marks = blocks.Breakpoints(settings.limits.max_cache_breakpoints)
    # Tools come first in the prompt, so their cache marks count first.
    tools = blocks.tools_json(request.tools, settings.limits, marks)
    route, talk = _route_query(request, settings, marks)
    if request.start_tier and all(t.name != request.start_tier for t in settings.tiers):
        _unknown_tier(request.start_tier, settings)
    if request.max_output_tokens < 0:
        raise InvalidRequest("max_output_tokens must not be negative")
    largest = max(t.max_output_tokens for t in settings.tiers)
    if request.max_output_tokens > largest:
        raise InvalidRequest(
            f"max_output_tokens {request.max_output_tokens} is above the largest tier limit "
            f"of {largest} (tiers[].max_output_tokens)"
        )
    params = blocks.answer_params(request, settings.limits, talk.system_blocks, tools)
    speculation = _SPECULATION.get(request.speculation)
    judge_mode = _JUDGE_MODE.get(request.judge_mode)
    if speculation is None:
        raise InvalidRequest(f"speculation {request.speculation} is not a known value")
    if judge_mode is None:
        raise InvalidRequest(f"judge_mode {request.judge_mode} is not a known value")
    self_routing = route.strategy == "self_routing"
    if self_routing and request.start_tier:
        raise InvalidRequest("self-routing starts on the cheapest tier; drop start_tier")
    return CascadeQuery(
        route=dataclasses.replace(route, strategy=None) if self_routing else route,
        start_tier=request.start_tier or None,
        self_routing=self_routing,
        max_output_tokens=request.max_output_tokens or None,
        speculation=speculation,
        judge_mode=judge_mode,
        system=talk.system,
        headers=dict(headers),
        turn=talk.turn if talk.turn.blocks else None,
        params=params,
        stream_drafts=request.stream_drafts,
    )


def _unknown_tier(name: str, settings: Settings) -> None:
    raise InvalidRequest(
        f"start_tier {name[:64]!r} is not a configured tier; "
        f"use one of {[t.name for t in settings.tiers]}"
    )


def hop(h: Hop) -> pb.Hop:
    """A cascade hop as the proto's Hop."""
    return pb.Hop(
        tier=h.tier,
        model=h.model,
        role=_HOP_ROLE[h.role],
        outcome=_HOP_OUTCOME[h.outcome],
        input_tokens=h.input_tokens,
        output_tokens=h.output_tokens,
        cost_usd=h.cost_usd,
        latency_ms=h.latency_ms,
        verdict=_VERDICT[h.verdict],
        issues=list(h.issues),
        attempt=h.attempt,
        speculative=h.speculative,
        error_kind=h.error_kind,
        stop_reason=h.stop_reason,
        cache_creation_input_tokens=h.cache_creation_input_tokens,
        cache_read_input_tokens=h.cache_read_input_tokens,
        skip_reason=h.skip_reason,
    )


def cascade_response(result: CascadeResult, tier_names: Sequence[str]) -> pb.CascadeResponse:
    """A cascade result as the proto's CascadeResponse."""
    response = pb.CascadeResponse(
        request_id=result.request_id,
        answer=result.answer,
        tier=tier_info(result.tier, result.tier_index),
        hops=[hop(h) for h in result.hops],
        total_cost_usd=result.total_cost_usd,
        total_latency_ms=result.total_latency_ms,
        escalated=result.escalated,
        escalation_reasons=[reason(n) for n in result.escalation_reasons],
        judge_status=_JUDGE_STATUS[result.judge_status],
        degraded=result.degraded,
        degraded_reasons=list(result.degraded_reasons),
        content=[blocks.block_pb(b) for b in result.content if blocks.is_answer_block(b)],
        stop_reason=result.stop_reason,
        tenant_over_budget=result.tenant_over_budget,
    )
    if result.decision is not None:
        response.route.CopyFrom(route_response(result.decision, result.request_id, tier_names))
    return response


def cascade_event(event: CascadeEvent, tier_names: Sequence[str]) -> pb.CascadeEvent:
    """One event of a streamed Cascade as the proto's CascadeEvent."""
    if isinstance(event, TextEvent):
        return pb.CascadeEvent(text=event.text)
    if isinstance(event, HopStartedEvent):
        return pb.CascadeEvent(
            hop_started=pb.HopStarted(
                index=event.index,
                tier=event.tier,
                model=event.model,
                role=_HOP_ROLE[event.role],
                attempt=event.attempt,
                speculative=event.speculative,
            )
        )
    if isinstance(event, HopFinishedEvent):
        return pb.CascadeEvent(hop_finished=pb.HopFinished(index=event.index, hop=hop(event.hop)))
    if isinstance(event, VerdictEvent):
        return pb.CascadeEvent(
            verdict=pb.VerdictEvent(
                answer_tier=event.answer_tier,
                judge_tier=event.judge_tier,
                verdict=_VERDICT[event.verdict],
                issues=list(event.issues),
            )
        )
    if isinstance(event, RetractEvent):
        return pb.CascadeEvent(retract=pb.Retract(tier=event.tier, reason=event.reason))
    assert isinstance(event, ResultEvent)  # the union's last member
    return pb.CascadeEvent(response=cascade_response(event.result, tier_names))
