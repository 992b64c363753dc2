"""A value-planned Cascade asks the scorer once for scores and plan (`score_cascade`)."""

from __future__ import annotations

from tests.helpers import make_settings
from tests.routing.test_value_policy import plan
from tierroute.routing.plan import CascadePlan
from tierroute.routing.router import RouteQuery, Router
from tierroute.testing import StaticScorer


class OnePassScorer(StaticScorer):
    """A scorer whose classifier and value model share one feature pass."""

    def __init__(self, probs: tuple[float, ...], shared_plan: CascadePlan) -> None:
        super().__init__(probs, plan=shared_plan)
        self.shared_calls = 0

    def score_cascade(self, text: str) -> tuple[list[float], CascadePlan | None]:
        """Scores and plan from one pass (counted)."""
        self.shared_calls += 1
        return [0.2, 0.5, 0.3], plan(1, "none")


def test_a_planned_cascade_scores_and_plans_in_one_call() -> None:
    """Cascade: one score_cascade call gives the decision its scores and plan."""
    scorer = OnePassScorer((0.9, 0.06, 0.04), plan(0, "all"))
    router = Router(make_settings(), scorer)
    decision = router.decide(RouteQuery(text="What is 2 + 2?"), for_cascade=True)
    assert (scorer.shared_calls, scorer.calls, scorer.plan_calls) == (1, 0, 0)
    assert decision.plan == plan(1, "none")
    assert decision.scores == (0.2, 0.5, 0.3)


def test_route_and_quality_floors_keep_the_classifier_alone() -> None:
    """Route, and a Cascade with a quality floor (no plan), run only the classifier."""
    scorer = OnePassScorer((0.9, 0.06, 0.04), plan(0, "all"))
    router = Router(make_settings(), scorer)
    router.decide(RouteQuery(text="What is 2 + 2?"))
    router.decide(RouteQuery(text="What is 2 + 2?", quality_floor=0.5), for_cascade=True)
    assert (scorer.shared_calls, scorer.calls) == (0, 2)
