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
    CascadeAction,
    CascadePlan,
    JudgePlan,
    choose,
    plan_from,
)
from tierroute.routing.policy import (
    Reason,
    ReasonNote,
    RiskThresholds,
    calibrated_rule,
    published_rule,
)
    Scored,
from tierroute.routing.router import (
    is_unfamiliar,
    PLAN_DROPPED,
    Decision,
    RouteQuery,
    CHECK_DROPPED,
    MIN_FAMILIARITY,
    Router,
    Scorer,
    annotate_route,
)

__all__ = [
    "ACTIONS",
    "AGREEMENT_ACTIONS",
    "JUDGE_PLANS",
    "PLAN_DROPPED",
    "QUERY_TYPES",
    "CHECK_DROPPED",
    "CascadeAction",
    "MIN_FAMILIARITY",
    "CascadePlan",
    "Decision",
    "JudgePlan",
    "Reason",
    "ReasonNote",
    "RiskThresholds",
    "RouteQuery",
    "Router",
    "Scorer",
    "ShapeFeatures",
    "annotate_route",
    "calibrated_rule",
    "Scored",
    "choose",
    "classifier_text",
    "plan_from",
    "published_rule",
    "query_type",
]
    "is_unfamiliar",
