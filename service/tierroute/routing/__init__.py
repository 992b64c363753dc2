"""Routing: which tier should answer. The router (heuristic or scored), the risk-threshold
policy and the published rule, the shape features and query types, and the value policy's
plans (start tier and judging) for the Cascade. A scorer is any `Scorer`; the ONNX models
that implement it live in `tierroute.model`.
"""

from tierroute.routing.features import QUERY_TYPES, ShapeFeatures, classifier_text, query_type
from tierroute.routing.plan import (
    ACTIONS,
    AGREEMENT_ACTIONS,
    JUDGE_PLANS,
    VALUE_ACTIONS,
    CascadeAction,
    CascadePlan,
    JudgePlan,
    agreement_applies,
    allowed_actions,
    choose,
    plan_from,
)
from tierroute.routing.policy import (
    Reason,
    ReasonNote,
    RiskThresholds,
    Scored,
    calibrated_rule,
    is_unfamiliar,
    published_rule,
)
from tierroute.routing.router import (
    CHECK_DROPPED,
    MIN_FAMILIARITY,
    PLAN_DROPPED,
    Decision,
    RouteQuery,
    Router,
    Scorer,
    annotate_route,
)

__all__ = [
    "ACTIONS",
    "AGREEMENT_ACTIONS",
    "CHECK_DROPPED",
    "JUDGE_PLANS",
    "MIN_FAMILIARITY",
    "PLAN_DROPPED",
    "QUERY_TYPES",
    "VALUE_ACTIONS",
    "CascadeAction",
    "CascadePlan",
    "Decision",
    "JudgePlan",
    "Reason",
    "ReasonNote",
    "RiskThresholds",
    "RouteQuery",
    "Router",
    "Scored",
    "Scorer",
    "ShapeFeatures",
    "agreement_applies",
    "allowed_actions",
    "annotate_route",
    "calibrated_rule",
    "choose",
    "classifier_text",
    "is_unfamiliar",
    "plan_from",
    "published_rule",
    "query_type",
]
