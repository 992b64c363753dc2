"""The Cascade: answer a query by calling a tier, having the tier above judge, and escalating
with context when the judge fails it. `CascadeEngine` decides what happens next; `TierCaller`
makes each call safely, within the circuit breakers, judge sampling, attempt budget and
deadline of its request; `EventStream` carries a streamed run's events, text past its commit
point included.
"""

from tierroute.cascade.breaker import BreakerBoard, CircuitBreaker, Permit
from tierroute.cascade.calibrated import apply_cascade, cascade_overrides
from tierroute.cascade.caller import TierCaller
from tierroute.cascade.engine import CascadeEngine
from tierroute.cascade.limits import AttemptBudget, Deadline, retry_delay
from tierroute.cascade.sampling import JudgeSampler, parse_rates, uniform_draw
from tierroute.cascade.streaming import (
    AnswerText,
    CascadeEvent,
    EventStream,
    HopFinishedEvent,
    HopStartedEvent,
    ResultEvent,
    RetractEvent,
    TextEvent,
    VerdictEvent,
)
from tierroute.cascade.telemetry import CascadeTelemetry
from tierroute.cascade.types import (
    AGREEMENT_MODES,
    JUDGE_MODES,
    CascadeQuery,
    CascadeResult,
    Hop,
    JudgeMode,
    JudgeStatus,
    SpeculationMode,
)

__all__ = [
    "AGREEMENT_MODES",
    "JUDGE_MODES",
    "AnswerText",
    "AttemptBudget",
    "BreakerBoard",
    "CascadeEngine",
    "CascadeEvent",
    "CascadeQuery",
    "CascadeResult",
    "CascadeTelemetry",
    "CircuitBreaker",
    "Deadline",
    "EventStream",
    "Hop",
    "HopFinishedEvent",
    "HopStartedEvent",
    "JudgeMode",
    "JudgeSampler",
    "JudgeStatus",
    "Permit",
    "ResultEvent",
    "RetractEvent",
    "SpeculationMode",
    "TextEvent",
    "TierCaller",
    "VerdictEvent",
    "apply_cascade",
    "cascade_overrides",
    "parse_rates",
    "retry_delay",
    "uniform_draw",
]
