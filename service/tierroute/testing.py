"""Real test doubles shipped with the package, for injection instead of patching."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tierroute.policy import RiskThresholds


class StaticScorer:
    """A router classifier that answers fixed probabilities, or computes them from the text.

    `probs` may be a sequence (the same for every query) or a function of the routed text.
    """

    def __init__(
        self,
        probs: Sequence[float] | Callable[[str], Sequence[float]],
        risk: Sequence[float] = (0.3, 0.15),
        version: str = "static-test",
    ) -> None:
        self._probs = probs
        self._thresholds = RiskThresholds(tuple(risk))
        self._version = version
        self.calls = 0

    @property
    def version(self) -> str:
        """The model version reported in responses."""
        return self._version

    @property
    def thresholds(self) -> RiskThresholds:
        """The calibrated risk thresholds."""
        return self._thresholds

    def predict_proba(self, text: str) -> list[float]:
        """Fixed or computed probabilities for `text`."""
        self.calls += 1
        probs = self._probs(text) if callable(self._probs) else self._probs
        return [float(p) for p in probs]


class FailingScorer(StaticScorer):
    """A classifier that raises an unexpected error, to test that callers never see it."""

    def __init__(self) -> None:
        super().__init__((1.0, 0.0, 0.0))

    def warm_up(self) -> None:
        """Warm-up succeeds, so the failure shows on the first real call."""

    def predict_proba(self, text: str) -> list[float]:
        """Fail the way a broken model would."""
        raise RuntimeError("simulated classifier failure with secret internals")
