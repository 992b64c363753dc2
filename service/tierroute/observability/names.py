"""Span, attribute and event names: one vocabulary for every span tierroute writes.

Names follow the OpenTelemetry GenAI semantic conventions where one exists (`gen_ai.*`,
taken from opentelemetry-semantic-conventions) and are `tierroute.*` otherwise."""

from __future__ import annotations

# The instrumentation scope of every tierroute span and instrument.
INSTRUMENTATION_NAME = "tierroute"


# Span names: one per hop of a request (the RPC span itself comes from the gRPC instrumentation).
SPAN_ROUTE = "tierroute.route"


SPAN_ANSWER = "tierroute.answer"


SPAN_JUDGE = "tierroute.judge"


# Attributes of tierroute's own spans (GenAI ones use the semantic-convention constants).
ATTR_TIER = "tierroute.tier"


ATTR_TIER_INDEX = "tierroute.tier_index"


ATTR_ROLE = "tierroute.role"


ATTR_ATTEMPT = "tierroute.attempt"


ATTR_SPECULATIVE = "tierroute.speculative"


ATTR_OUTCOME = "tierroute.outcome"


ATTR_ERROR_KIND = "tierroute.error_kind"


ATTR_VERDICT = "tierroute.verdict"


ATTR_JUDGE_ISSUES = "tierroute.judge.issue_count"


ATTR_JUDGE_PARSE_FAILED = "tierroute.judge.parse_failed"


ATTR_COST_USD = "tierroute.cost_usd"


ATTR_STRATEGY = "tierroute.strategy"


ATTR_CONFIDENCE = "tierroute.confidence"


ATTR_RULE = "tierroute.route.rule"


ATTR_MODEL_VERSION = "tierroute.route.model_version"


ATTR_REASONS = "tierroute.route.reasons"


ATTR_SCORE_PREFIX = "tierroute.route.score."


ATTR_THRESHOLD_PREFIX = "tierroute.route.threshold."


ATTR_DECISION_TIME_US = "tierroute.route.decision_time_us"


ATTR_ESTIMATED_COST_USD = "tierroute.route.estimated_cost_usd"


ATTR_QUERY_TYPE = "tierroute.route.query_type"


ATTR_ESTIMATED_TOKENS = "tierroute.route.estimated_tokens"


# How much the query looks like the model's training prompts (0-1), and whether it is below
# the model's threshold (reason UNFAMILIAR_QUERY); set when the classifier has the signal.
ATTR_FAMILIARITY = "tierroute.route.familiarity"


ATTR_UNFAMILIAR = "tierroute.route.unfamiliar"


# The value policy's plan for a Cascade: its action, and what it expected of that action.
ATTR_PLAN = "tierroute.route.plan"


ATTR_PLAN_P_CORRECT = "tierroute.route.plan.p_correct"


ATTR_PLAN_COST_USD = "tierroute.route.plan.cost_usd"


# On the request (RPC) span, set when a cascade ends.
ATTR_REQUEST_ID = "tierroute.request_id"


ATTR_START_TIER = "tierroute.start_tier"


ATTR_JUDGE_STATUS = "tierroute.judge_status"


ATTR_ESCALATED = "tierroute.escalated"


ATTR_DEGRADED = "tierroute.degraded"


ATTR_DEGRADED_REASONS = "tierroute.degraded_reasons"


ATTR_TOTAL_COST_USD = "tierroute.total_cost_usd"


ATTR_HOPS = "tierroute.hops"


# Event attributes.
ATTR_REASON = "tierroute.reason"


ATTR_DETAIL = "tierroute.detail"


ATTR_FROM_TIER = "tierroute.from_tier"


ATTR_TO_TIER = "tierroute.to_tier"


ATTR_RETRY_CAUSE = "tierroute.retry.cause"


ATTR_RETRY_DELAY_S = "tierroute.retry.delay_s"


ATTR_CANCEL_REASON = "tierroute.cancel_reason"


# Events: escalations and retries on the request span, cancellation on the cancelled call's.
EVENT_ESCALATION = "tierroute.escalation"


EVENT_RETRY = "tierroute.retry"


EVENT_RETRY_ABANDONED = "tierroute.retry_abandoned"


EVENT_CANCELLED = "tierroute.cancelled"


# The GenAI semantic conventions' event for captured content (opt-in only).
EVENT_CONTENT = "gen_ai.client.inference.operation.details"


# Why a call was cancelled, carried as the CancelledError's message.
CANCEL_NOT_NEEDED = "speculation_not_needed"


CANCEL_REQUEST_ENDED = "request_ended"


CANCEL_CALLER = "caller_cancelled"
