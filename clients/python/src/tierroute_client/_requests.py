"""The keyword options of `route` and `cascade`, and the protobuf requests built from them.

The server validates every value (limits, tier names, ranges); the client only maps Python
values onto the contract, so one set of rules lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, TypeVar

from tierroute_client._blocks import Block, content_to_pb, tool_choice_to_pb, tool_to_pb
from tierroute_client.v1 import tierroute_pb2 as pb

Role = Literal["system", "user", "assistant"]
Strategy = Literal["heuristic", "classifier", "self_routing"]
Rule = Literal["calibrated", "published"]
JudgeMode = Literal["always", "never", "start_only"]
_V = TypeVar("_V")

_ROLES: dict[str, pb.Role.ValueType] = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
}
_STRATEGIES: dict[str, pb.Strategy.ValueType] = {
    "heuristic": pb.STRATEGY_HEURISTIC,
    "classifier": pb.STRATEGY_CLASSIFIER,
    "self_routing": pb.STRATEGY_SELF_ROUTING,
}
_RULES: dict[str, pb.DecisionRule.ValueType] = {
    "calibrated": pb.DECISION_RULE_CALIBRATED,
    "published": pb.DECISION_RULE_PUBLISHED,
}
_JUDGE: dict[str, pb.JudgeMode.ValueType] = {
    "always": pb.JUDGE_MODE_ALWAYS,
    "never": pb.JUDGE_MODE_NEVER,
    "start_only": pb.JUDGE_MODE_START_ONLY,
    "agreement": pb.JUDGE_MODE_AGREEMENT,
    "agreement_mid": pb.JUDGE_MODE_AGREEMENT_MID,
}


class RouteOptions(TypedDict, total=False):
    """Keyword options of `route`; every one may be left out.

    `messages` are (role, content) pairs; content is a string or a list of Messages API
    content blocks as dicts (text, image, document, tool_use, tool_result).
    """

    messages: Sequence[tuple[Role, str | Sequence[Block]]]
    strategy: Strategy
    rule: Rule
    quality_floor: float
    max_cost_usd: float
    # The Cascade value policy's operating point ("parity", "q95", "third_cost"; the
    # server's model lists them): which quality-cost trade-off it is planned for.
    operating_point: str
    tenant_id: str
    session_id: str
    metadata: Mapping[str, str]
    request_id: str
    timeout: float | None


class FeedbackOptions(TypedDict, total=False):
    """Keyword options of `feedback`."""

    tenant_id: str
    timeout: float | None


class CascadeOptions(RouteOptions, total=False):
    """Keyword options of `cascade` and `cascade_stream`: those of `route` plus the
    cascade's own, and the Messages API's (`tools` as Messages API tool dicts,
    `tool_choice` as "auto", "any", "none", a tool's name or the API's dict).
    `stream_drafts` is for `cascade_stream` only."""

    start_tier: str
    speculation: bool
    judge: JudgeMode
    max_output_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop_sequences: Sequence[str]
    user_id: str
    tools: Sequence[Mapping[str, Any]]
    tool_choice: str | Mapping[str, Any]
    stream_drafts: bool


def _lookup(table: Mapping[str, _V], name: str, what: str) -> _V:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}") from None


def _messages(options: RouteOptions) -> list[pb.ChatMessage]:
    messages = []
    for role, content in options.get("messages", ()):
        text, blocks = content_to_pb(content)
        messages.append(
            pb.ChatMessage(role=_lookup(_ROLES, role, "role"), content=text, blocks=blocks)
        )
    return messages


def _policy(options: RouteOptions) -> pb.RoutingPolicy | None:
    if not {"rule", "quality_floor", "max_cost_usd", "operating_point"} & options.keys():
        return None
    rule = options.get("rule")
    return pb.RoutingPolicy(
        rule=_lookup(_RULES, rule, "rule") if rule else pb.DECISION_RULE_UNSPECIFIED,
        quality_floor=options.get("quality_floor", 0.0),
        max_cost_usd=options.get("max_cost_usd", 0.0),
        operating_point=options.get("operating_point", ""),
    )


def _strategy(options: RouteOptions) -> pb.Strategy.ValueType:
    name = options.get("strategy")
    return _lookup(_STRATEGIES, name, "strategy") if name else pb.STRATEGY_UNSPECIFIED


def route_request(text: str | None, options: RouteOptions) -> pb.RouteRequest:
    """The RouteRequest for `route(text, **options)`."""
    return pb.RouteRequest(
        query=text or "",
        messages=_messages(options),
        strategy=_strategy(options),
        tenant_id=options.get("tenant_id", ""),
        session_id=options.get("session_id", ""),
        policy=_policy(options),
        metadata=dict(options.get("metadata", {})),
        request_id=options.get("request_id", ""),
    )


def cascade_request(text: str | None, options: CascadeOptions) -> pb.CascadeRequest:
    """The CascadeRequest for `cascade(text, **options)`."""
    speculation = options.get("speculation")
    judge = options.get("judge")
    request = pb.CascadeRequest(
        query=text or "",
        messages=_messages(options),
        strategy=_strategy(options),
        start_tier=options.get("start_tier", ""),
        tenant_id=options.get("tenant_id", ""),
        session_id=options.get("session_id", ""),
        policy=_policy(options),
        metadata=dict(options.get("metadata", {})),
        request_id=options.get("request_id", ""),
        max_output_tokens=options.get("max_output_tokens", 0),
        speculation=(
            pb.SPECULATION_MODE_UNSPECIFIED
            if speculation is None
            else pb.SPECULATION_MODE_ON
            if speculation
            else pb.SPECULATION_MODE_OFF
        ),
        judge_mode=_lookup(_JUDGE, judge, "judge mode") if judge else pb.JUDGE_MODE_UNSPECIFIED,
        stop_sequences=list(options.get("stop_sequences", ())),
        metadata_user_id=options.get("user_id", ""),
        tools=[tool_to_pb(t) for t in options.get("tools", ())],
        stream_drafts=options.get("stream_drafts", False),
    )
    # Optional fields: left unset (the provider's default) unless given.
    for name in ("temperature", "top_p", "top_k"):
        if name in options:
            setattr(request, name, options[name])
    if "tool_choice" in options:
        request.tool_choice.CopyFrom(tool_choice_to_pb(options["tool_choice"]))
    return request


def feedback_request(
    request_id: str, rating: int | None, correct: bool | None, tenant_id: str
) -> pb.FeedbackRequest:
    """The FeedbackRequest; `correct` stays unset (not False) when not given."""
    request = pb.FeedbackRequest(request_id=request_id, rating=rating or 0, tenant_id=tenant_id)
    if correct is not None:
        request.correct = correct
    return request
