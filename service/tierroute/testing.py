"""Real test doubles shipped with the package, for injection instead of patching."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from tierroute.api import MethodHandler, ServerInterceptor
from tierroute.routing import CascadePlan, RiskThresholds, Scored


class StaticScorer:
    """A router classifier that answers fixed probabilities, or computes them from the text.

    `probs` may be a sequence (the same for every query) or a function of the routed text.
    `plan` is the value policy's answer for a Cascade (`cascade_plan`): a fixed
    `CascadePlan`, a function of the routed text, or None for a bundle without the policy.
    `familiarity` (fixed or a function of the text) and `familiarity_threshold` play the
    bundle's familiarity signal; None (the default) is a bundle without it.
    """

    def __init__(
        self,
        probs: Sequence[float] | Callable[[str], Sequence[float]],
        risk: Sequence[float] = (0.3, 0.15),
        version: str = "static-test",
        cascade_risk: Sequence[float] | None = None,
        plan: CascadePlan | Callable[[str], CascadePlan | None] | None = None,
        *,
        familiarity: float | Callable[[str], float] | None = None,
        familiarity_threshold: float | None = None,
    ) -> None:
        self._probs = probs
        self._plan = plan
        self._familiarity = familiarity
        self.familiarity_threshold = familiarity_threshold
        self.plan_calls = 0
        self._thresholds = RiskThresholds(tuple(risk))
        # Where Cascade starts, when it differs from Route's thresholds (as calibrated models do).
        self.cascade_thresholds = RiskThresholds(tuple(cascade_risk)) if cascade_risk else None
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

    def score(self, text: str, point: str | None = None, *, plan: bool = False) -> Scored:
        """Probabilities, familiarity and (with `plan`) the plan, as one scorer run."""
        fam = self._familiarity
        familiarity = fam(text) if callable(fam) else fam
        # A subclass that scores and plans in one call (`score_cascade`) is asked that way.
        both = getattr(self, "score_cascade", None)
        if plan and callable(both):
            probs, early = both(text, point) if point else both(text)
            return Scored(list(probs), familiarity, early)
        return Scored(
            self.predict_proba(text), familiarity, self.cascade_plan(text) if plan else None
        )

    def cascade_plan(self, text: str) -> CascadePlan | None:
        """The fixed or computed value-policy plan for `text` (None: no value policy)."""
        self.plan_calls += 1
        if callable(self._plan):
            return self._plan(text)
        return self._plan


class FailingScorer(StaticScorer):
    """A classifier that raises an unexpected error, to test that callers never see it."""

    def __init__(self) -> None:
        super().__init__((1.0, 0.0, 0.0))

    def warm_up(self) -> None:
        """Warm-up succeeds, so the failure shows on the first real call."""

    def predict_proba(self, text: str) -> list[float]:
        """Fail the way a broken model would."""
        raise RuntimeError("simulated classifier failure with secret internals")


class CallGate(ServerInterceptor):
    """Holds unary calls open until released, so tests can fill the server without sleeps.

    Inject it with `TierRouteServer(..., interceptors=[gate])`; it sits inside admission
    control and authentication, so the calls it holds count as in flight. Use it on the
    event loop that runs the server.
    """

    def __init__(self, methods: Sequence[str] = ("/tierroute.v1.TierRouter/Route",)) -> None:
        self._methods = frozenset(methods)
        self._open = asyncio.Event()
        self._changed = asyncio.Condition()
        self.held = 0

    def release(self) -> None:
        """Let every held call, and every later one, through."""
        self._open.set()

    async def wait_held(self, count: int) -> None:
        """Return once at least `count` calls are being held."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        if handler_call_details.method not in self._methods:
            return handler
        behaviour = handler.unary_unary

        async def held(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with self._changed:
                self.held += 1
                self._changed.notify_all()
            try:
                await self._open.wait()
            finally:
                async with self._changed:
                    self.held -= 1
                    self._changed.notify_all()
            return await behaviour(request, context)  # type: ignore[arg-type]

        return grpc.unary_unary_rpc_method_handler(
            held,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class HeldLoader:
    """A model loader (`tierroute.model.reload.Loader`) that waits for a release before loading.

    Inject it with `TierRouteServer(..., model_loader=loader)`. The wait is a
    `threading.Event`, so it holds the reload's worker thread, never the event loop: while
    it holds, the server must keep answering on the old model.
    """

    def __init__(self, inner: Callable[[Path, int], Any]) -> None:
        self._inner = inner
        self._release = threading.Event()
        self.started = threading.Event()
        self.loads: list[Path] = []

    def release(self) -> None:
        """Let the held load, and every later one, proceed."""
        self._release.set()

    def __call__(self, bundle: Path, n_tiers: int) -> Any:
        self.loads.append(bundle)
        self.started.set()
        self._release.wait()
        return self._inner(bundle, n_tiers)
