"""Live labelling (`[shadow] label_rate`): a sampled share of served calls is run through
every tier in the background and labelled the way `tierroute label` labels
(`cascade.labelling`), into the query log's `tier_labels`.

- Sampling: an unfamiliar call (its decision below the model's familiarity threshold, reason
  UNFAMILIAR_QUERY) is always offered; any other call with probability `label_rate`. The
  gRPC servicer and the HTTP doors (`CallLog`) both offer their calls. Offered calls wait
  in a bounded queue, unfamiliar ones first; when it is full a new unfamiliar call drops
  the oldest familiar one, and a new familiar call is dropped.
- Nothing on the request path waits: `offer` only appends to the queue. One background task
  labels a question at a time, and the server cancels it at shutdown (a question cut short
  stores nothing, and nothing it paid for is lost from the budget's view: it is counted
  before each call).
- Money: before a question starts, its worst case (`Labeller.worst_case_usd`) is reserved
  against `label_budget_usd`; the first question that does not fit stops live labelling for
  the life of the process, so it never spends past the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass

from tierroute.cascade.labelling import LabelBudget, Labeller, parse_method
from tierroute.providers import Provider
from tierroute.querylog import QueryLogError, Store, open_store
from tierroute.querylog.records import SHADOW_PREFIX, SHADOW_TIER
from tierroute.routing import Decision
from tierroute.settings import Settings

logger = logging.getLogger(__name__)


def is_unfamiliar(decision: Decision | None) -> bool:
    """Whether a call's routing decision found its query unfamiliar."""
    return decision is not None and decision.unfamiliar


def decision_metadata(decision: Decision) -> dict[str, str]:
    """A shadow sample's metadata: the tier, strategy, rule, model and scores of `decision`."""
    return {
        SHADOW_TIER: decision.tier.name,
        f"{SHADOW_PREFIX}strategy": decision.strategy,
        f"{SHADOW_PREFIX}rule": decision.rule,
        f"{SHADOW_PREFIX}model_version": decision.model_version,
        f"{SHADOW_PREFIX}scores": ",".join(f"{s:.6f}" for s in decision.scores),
    }


@dataclass
class LiveLabelStats:
    """What live labelling has done since the server started."""

    offered: int = 0
    dropped: int = 0
    labelled: int = 0
    failed: int = 0
    spent_usd: float = 0.0
    stopped_by_budget: bool = False


@dataclass(frozen=True)
class _Pending:
    request_id: str
    text: str


class LiveLabeller:
    """Labels sampled live calls in one background task, within a budget."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        *,
        store: Store | None = None,
        rng: random.Random | None = None,
    ) -> None:
        config = settings.shadow
        self._settings = settings
        self._rate = config.label_rate
        self._rng = rng or random.Random()
        self._labeller = Labeller(
            provider,
            settings,
            method=parse_method(config.label_method),
            max_output_tokens=settings.cascade.max_output_tokens,
            rng=random.Random(self._rng.random()),
        )
        self.budget = LabelBudget(config.label_budget_usd)
        self._max_pending = config.label_max_pending
        self._unfamiliar: deque[_Pending] = deque()
        self._familiar: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        # Set while nothing is queued or being labelled (shutdown and tests wait on it).
        self._idle = asyncio.Event()
        self._idle.set()
        self._store = store
        self._own_store = store is None
        self._task: asyncio.Task[None] | None = None
        self.stats = LiveLabelStats()

    def wants(self, *, unfamiliar: bool) -> bool:
        """Whether to label this call: always when unfamiliar, else with `label_rate`."""
        if self.stats.stopped_by_budget:
            return False
        return unfamiliar or self._rng.random() < self._rate

    def offer(self, request_id: str, text: str, *, unfamiliar: bool) -> bool:
        """Queue a call for labelling without waiting; False when it was not queued."""
        if self.stats.stopped_by_budget or not text.strip():
            return False
        item = _Pending(request_id, text)
        if len(self._unfamiliar) + len(self._familiar) >= self._max_pending:
            if not unfamiliar or not self._familiar:
                self.stats.dropped += 1
                return False
            self._familiar.popleft()
            self.stats.dropped += 1
        (self._unfamiliar if unfamiliar else self._familiar).append(item)
        self.stats.offered += 1
        self._idle.clear()
        self._wake.set()
        return True

    async def wait_idle(self) -> None:
        """Return once every queued call is labelled or dropped."""
        await self._idle.wait()

    @property
    def pending(self) -> int:
        """Calls waiting to be labelled."""
        return len(self._unfamiliar) + len(self._familiar)

    async def start(self) -> None:
        """Start the background task (the store opens on the first label to write)."""
        self._task = asyncio.create_task(self._run(), name="live-labelling")

    async def aclose(self) -> None:
        """Cancel the background task and close the store this labeller opened."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        if self._store is not None and self._own_store:
            await self._store.aclose()
            self._store = None

    def _next(self) -> _Pending | None:
        if self._unfamiliar:
            return self._unfamiliar.popleft()
        if self._familiar:
            return self._familiar.popleft()
        return None

    async def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if not await self._label(item):
                    self._idle.set()
                    return
            except Exception:
                # A bug must not end live labelling silently, nor reach a caller.
                logger.exception("live labelling of a call failed")

    async def _label(self, item: _Pending) -> bool:
        """Label one question; False once the budget stops live labelling."""
        worst = self._labeller.worst_case_usd(item.text, self._settings.tiers)
        if not self.budget.reserve(worst):
            self.stats.stopped_by_budget = True
            self.stats.dropped += self.pending
            self._unfamiliar.clear()
            self._familiar.clear()
            logger.info(
                "live labelling stopped: the next question could pass shadow.label_budget_usd "
                "(spent %.6f of %.6f)",
                self.budget.spent,
                self.budget.limit or 0.0,
            )
            return False
        try:
            done = await self._labeller.label(item.request_id, item.text)
        except BaseException:
            # Cut short (shutdown): what its calls cost is unknown, so count all it could.
            self.budget.settle(worst, worst)
            raise
        self.budget.settle(worst, done.paid_usd)
        self.stats.spent_usd += done.paid_usd
        self.stats.failed += len(done.failed)
        if done.labels:
            try:
                await self._opened().write_tier_labels(done.labels)
            except QueryLogError as exc:
                logger.warning("live labels for a call were not stored: %s", exc)
                return True
            self.stats.labelled += 1
        return True

    def _opened(self) -> Store:
        if self._store is None:
            self._store = open_store(self._settings.querylog.url.get())
        return self._store


async def close_quietly(labeller: LiveLabeller | None) -> None:
    """Close `labeller` when there is one (shutdown and failed start-up)."""
    if labeller is not None:
        with contextlib.suppress(QueryLogError):
            await labeller.aclose()
