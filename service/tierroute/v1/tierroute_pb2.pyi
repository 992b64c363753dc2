from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_HEURISTIC: _ClassVar[Strategy]
    STRATEGY_CLASSIFIER: _ClassVar[Strategy]
    STRATEGY_SELF_ROUTING: _ClassVar[Strategy]

class DecisionRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_RULE_UNSPECIFIED: _ClassVar[DecisionRule]
    DECISION_RULE_CALIBRATED: _ClassVar[DecisionRule]
    DECISION_RULE_PUBLISHED: _ClassVar[DecisionRule]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]

class ReasonCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_CODE_UNSPECIFIED: _ClassVar[ReasonCode]
    REASON_CODE_LONG_INPUT: _ClassVar[ReasonCode]
    REASON_CODE_ANALYTICAL_MULTI_STEP: _ClassVar[ReasonCode]
    REASON_CODE_CODING_OR_ANALYTICAL: _ClassVar[ReasonCode]
    REASON_CODE_LARGE_CODE_BLOCK: _ClassVar[ReasonCode]
    REASON_CODE_SIMPLE_QUERY: _ClassVar[ReasonCode]
    REASON_CODE_RISK_ABOVE_THRESHOLD: _ClassVar[ReasonCode]
    REASON_CODE_RISK_WITHIN_THRESHOLD: _ClassVar[ReasonCode]
    REASON_CODE_QUALITY_FLOOR: _ClassVar[ReasonCode]
    REASON_CODE_COST_CEILING: _ClassVar[ReasonCode]
    REASON_CODE_SESSION_STICKY: _ClassVar[ReasonCode]
    REASON_CODE_TIER_OVERRIDE: _ClassVar[ReasonCode]
    REASON_CODE_JUDGE_FAILED: _ClassVar[ReasonCode]
    REASON_CODE_JUDGE_UNAVAILABLE: _ClassVar[ReasonCode]
    REASON_CODE_SELF_LOW_CONFIDENCE: _ClassVar[ReasonCode]
    REASON_CODE_PROVIDER_ERROR: _ClassVar[ReasonCode]
    REASON_CODE_CIRCUIT_OPEN: _ClassVar[ReasonCode]

class SpeculationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPECULATION_MODE_UNSPECIFIED: _ClassVar[SpeculationMode]
    SPECULATION_MODE_OFF: _ClassVar[SpeculationMode]
    SPECULATION_MODE_ON: _ClassVar[SpeculationMode]

class JudgeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_MODE_UNSPECIFIED: _ClassVar[JudgeMode]
    JUDGE_MODE_ALWAYS: _ClassVar[JudgeMode]
    JUDGE_MODE_NEVER: _ClassVar[JudgeMode]

class HopRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOP_ROLE_UNSPECIFIED: _ClassVar[HopRole]
    HOP_ROLE_ANSWER: _ClassVar[HopRole]
    HOP_ROLE_JUDGE: _ClassVar[HopRole]

class HopOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOP_OUTCOME_UNSPECIFIED: _ClassVar[HopOutcome]
    HOP_OUTCOME_OK: _ClassVar[HopOutcome]
    HOP_OUTCOME_ERROR: _ClassVar[HopOutcome]
    HOP_OUTCOME_CANCELLED: _ClassVar[HopOutcome]
    HOP_OUTCOME_SKIPPED: _ClassVar[HopOutcome]

class JudgeVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_VERDICT_UNSPECIFIED: _ClassVar[JudgeVerdict]
    JUDGE_VERDICT_PASS: _ClassVar[JudgeVerdict]
    JUDGE_VERDICT_FAIL: _ClassVar[JudgeVerdict]
    JUDGE_VERDICT_UNAVAILABLE: _ClassVar[JudgeVerdict]

class JudgeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_STATUS_UNSPECIFIED: _ClassVar[JudgeStatus]
    JUDGE_STATUS_PASSED: _ClassVar[JudgeStatus]
    JUDGE_STATUS_NOT_REQUIRED: _ClassVar[JudgeStatus]
    JUDGE_STATUS_SAMPLED_OUT: _ClassVar[JudgeStatus]
    JUDGE_STATUS_UNAVAILABLE: _ClassVar[JudgeStatus]
    JUDGE_STATUS_FAILED: _ClassVar[JudgeStatus]
    JUDGE_STATUS_SELF_ACCEPTED: _ClassVar[JudgeStatus]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_HEURISTIC: Strategy
STRATEGY_CLASSIFIER: Strategy
STRATEGY_SELF_ROUTING: Strategy
DECISION_RULE_UNSPECIFIED: DecisionRule
DECISION_RULE_CALIBRATED: DecisionRule
DECISION_RULE_PUBLISHED: DecisionRule
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
REASON_CODE_UNSPECIFIED: ReasonCode
REASON_CODE_LONG_INPUT: ReasonCode
REASON_CODE_ANALYTICAL_MULTI_STEP: ReasonCode
REASON_CODE_CODING_OR_ANALYTICAL: ReasonCode
REASON_CODE_LARGE_CODE_BLOCK: ReasonCode
REASON_CODE_SIMPLE_QUERY: ReasonCode
REASON_CODE_RISK_ABOVE_THRESHOLD: ReasonCode
REASON_CODE_RISK_WITHIN_THRESHOLD: ReasonCode
REASON_CODE_QUALITY_FLOOR: ReasonCode
REASON_CODE_COST_CEILING: ReasonCode
REASON_CODE_SESSION_STICKY: ReasonCode
REASON_CODE_TIER_OVERRIDE: ReasonCode
REASON_CODE_JUDGE_FAILED: ReasonCode
REASON_CODE_JUDGE_UNAVAILABLE: ReasonCode
REASON_CODE_SELF_LOW_CONFIDENCE: ReasonCode
REASON_CODE_PROVIDER_ERROR: ReasonCode
REASON_CODE_CIRCUIT_OPEN: ReasonCode
SPECULATION_MODE_UNSPECIFIED: SpeculationMode
SPECULATION_MODE_OFF: SpeculationMode
SPECULATION_MODE_ON: SpeculationMode
JUDGE_MODE_UNSPECIFIED: JudgeMode
JUDGE_MODE_ALWAYS: JudgeMode
JUDGE_MODE_NEVER: JudgeMode
HOP_ROLE_UNSPECIFIED: HopRole
HOP_ROLE_ANSWER: HopRole
HOP_ROLE_JUDGE: HopRole
HOP_OUTCOME_UNSPECIFIED: HopOutcome
HOP_OUTCOME_OK: HopOutcome
HOP_OUTCOME_ERROR: HopOutcome
HOP_OUTCOME_CANCELLED: HopOutcome
HOP_OUTCOME_SKIPPED: HopOutcome
JUDGE_VERDICT_UNSPECIFIED: JudgeVerdict
JUDGE_VERDICT_PASS: JudgeVerdict
JUDGE_VERDICT_FAIL: JudgeVerdict
JUDGE_VERDICT_UNAVAILABLE: JudgeVerdict
JUDGE_STATUS_UNSPECIFIED: JudgeStatus
JUDGE_STATUS_PASSED: JudgeStatus
JUDGE_STATUS_NOT_REQUIRED: JudgeStatus
JUDGE_STATUS_SAMPLED_OUT: JudgeStatus
JUDGE_STATUS_UNAVAILABLE: JudgeStatus
JUDGE_STATUS_FAILED: JudgeStatus
JUDGE_STATUS_SELF_ACCEPTED: JudgeStatus

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ...) -> None: ...

class RoutingPolicy(_message.Message):
    __slots__ = ("rule", "quality_floor", "max_cost_usd")
    RULE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FLOOR_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    rule: DecisionRule
    quality_floor: float
    max_cost_usd: float
    def __init__(self, rule: _Optional[_Union[DecisionRule, str]] = ..., quality_floor: _Optional[float] = ..., max_cost_usd: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("query", "messages", "strategy", "tenant_id", "session_id", "policy", "metadata", "request_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    strategy: Strategy
    tenant_id: str
    session_id: str
    policy: RoutingPolicy
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, query: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., tenant_id: _Optional[str] = ..., session_id: _Optional[str] = ..., policy: _Optional[_Union[RoutingPolicy, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class TierInfo(_message.Message):
    __slots__ = ("name", "model", "index", "input_usd_per_mtok", "output_usd_per_mtok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    index: int
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., index: _Optional[int] = ..., input_usd_per_mtok: _Optional[float] = ..., output_usd_per_mtok: _Optional[float] = ...) -> None: ...

class TierScore(_message.Message):
    __slots__ = ("tier", "probability")
    TIER_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    tier: str
    probability: float
    def __init__(self, tier: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "detail")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    code: ReasonCode
    detail: str
    def __init__(self, code: _Optional[_Union[ReasonCode, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class QueryFeatures(_message.Message):
    __slots__ = ("estimated_tokens", "has_code_block", "multi_step", "query_type")
    ESTIMATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HAS_CODE_BLOCK_FIELD_NUMBER: _ClassVar[int]
    MULTI_STEP_FIELD_NUMBER: _ClassVar[int]
    QUERY_TYPE_FIELD_NUMBER: _ClassVar[int]
    estimated_tokens: int
    has_code_block: bool
    multi_step: bool
    query_type: str
    def __init__(self, estimated_tokens: _Optional[int] = ..., has_code_block: _Optional[bool] = ..., multi_step: _Optional[bool] = ..., query_type: _Optional[str] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("request_id", "tier", "strategy", "scores", "thresholds", "reasons", "model_version", "decision_time_us", "rule", "features", "estimated_cost_usd", "confidence")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIME_US_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tier: TierInfo
    strategy: Strategy
    scores: _containers.RepeatedCompositeFieldContainer[TierScore]
    thresholds: _containers.ScalarMap[str, float]
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    model_version: str
    decision_time_us: int
    rule: DecisionRule
    features: QueryFeatures
    estimated_cost_usd: float
    confidence: float
    def __init__(self, request_id: _Optional[str] = ..., tier: _Optional[_Union[TierInfo, _Mapping]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., scores: _Optional[_Iterable[_Union[TierScore, _Mapping]]] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., model_version: _Optional[str] = ..., decision_time_us: _Optional[int] = ..., rule: _Optional[_Union[DecisionRule, str]] = ..., features: _Optional[_Union[QueryFeatures, _Mapping]] = ..., estimated_cost_usd: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class CascadeRequest(_message.Message):
    __slots__ = ("query", "messages", "strategy", "start_tier", "tenant_id", "session_id", "policy", "metadata", "request_id", "max_output_tokens", "speculation", "judge_mode")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    START_TIER_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SPECULATION_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODE_FIELD_NUMBER: _ClassVar[int]
    query: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    strategy: Strategy
    start_tier: str
    tenant_id: str
    session_id: str
    policy: RoutingPolicy
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    max_output_tokens: int
    speculation: SpeculationMode
    judge_mode: JudgeMode
    def __init__(self, query: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., start_tier: _Optional[str] = ..., tenant_id: _Optional[str] = ..., session_id: _Optional[str] = ..., policy: _Optional[_Union[RoutingPolicy, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., speculation: _Optional[_Union[SpeculationMode, str]] = ..., judge_mode: _Optional[_Union[JudgeMode, str]] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("tier", "model", "role", "outcome", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "verdict", "issues", "attempt", "speculative", "error_kind", "stop_reason")
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    tier: str
    model: str
    role: HopRole
    outcome: HopOutcome
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    verdict: JudgeVerdict
    issues: _containers.RepeatedScalarFieldContainer[str]
    attempt: int
    speculative: bool
    error_kind: str
    stop_reason: str
    def __init__(self, tier: _Optional[str] = ..., model: _Optional[str] = ..., role: _Optional[_Union[HopRole, str]] = ..., outcome: _Optional[_Union[HopOutcome, str]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., latency_ms: _Optional[float] = ..., verdict: _Optional[_Union[JudgeVerdict, str]] = ..., issues: _Optional[_Iterable[str]] = ..., attempt: _Optional[int] = ..., speculative: _Optional[bool] = ..., error_kind: _Optional[str] = ..., stop_reason: _Optional[str] = ...) -> None: ...

class CascadeResponse(_message.Message):
    __slots__ = ("request_id", "answer", "tier", "hops", "total_cost_usd", "total_latency_ms", "escalated", "escalation_reasons", "judge_status", "degraded", "degraded_reasons", "route")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_REASONS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_STATUS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    answer: str
    tier: TierInfo
    hops: _containers.RepeatedCompositeFieldContainer[Hop]
    total_cost_usd: float
    total_latency_ms: float
    escalated: bool
    escalation_reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    judge_status: JudgeStatus
    degraded: bool
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    route: RouteResponse
    def __init__(self, request_id: _Optional[str] = ..., answer: _Optional[str] = ..., tier: _Optional[_Union[TierInfo, _Mapping]] = ..., hops: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., total_cost_usd: _Optional[float] = ..., total_latency_ms: _Optional[float] = ..., escalated: _Optional[bool] = ..., escalation_reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., judge_status: _Optional[_Union[JudgeStatus, str]] = ..., degraded: _Optional[bool] = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., route: _Optional[_Union[RouteResponse, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "rating", "correct", "tenant_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    rating: int
    correct: bool
    tenant_id: str
    def __init__(self, request_id: _Optional[str] = ..., rating: _Optional[int] = ..., correct: _Optional[bool] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...
