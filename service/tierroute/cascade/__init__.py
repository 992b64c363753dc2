"""The Cascade: answer a query by calling a tier, having the tier above judge, and escalating
with context when the judge fails it. `CascadeEngine` decides what happens next; circuit
breakers, judge sampling, retry budgets and deadlines keep each call safe.
"""

from tierroute.cascade.breaker import BreakerBoard, CircuitBreaker, Permit
from tierroute.cascade.calibrated import apply_cascade, cascade_overrides
from tierroute.cascade.engine import (
    JUDGE_MODES,
    CascadeEngine,
    CascadeQuery,
    CascadeResult,
    JudgeMode,
    SpeculationMode,
)
from tierroute.cascade.limits import AttemptBudget, Deadline, retry_delay
from tierroute.cascade.sampling import JudgeSampler, parse_rates, uniform_draw

__all__ = [
    "JUDGE_MODES",
    "AttemptBudget",
    "BreakerBoard",
    "CascadeEngine",
    "CascadeQuery",
    "CascadeResult",
    "CircuitBreaker",
    "Deadline",
    "JudgeMode",
    "JudgeSampler",
    "Permit",
    "SpeculationMode",
    "apply_cascade",
    "cascade_overrides",
    "parse_rates",
    "retry_delay",
    "uniform_draw",
]
