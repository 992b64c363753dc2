"""The routing core: from a query to a tier, with every reason on record.

Transport-free: the gRPC servicer converts protobuf to `RouteQuery` and `Decision` back.
Routing is synchronous and fast (tens of microseconds for the classifier), so it runs
inline on the event loop; onnxruntime via a thread was measured slower.

A Cascade's start tier comes from the model's value policy when it has one
(`tierroute.model.value`): the decision then carries the `CascadePlan`, which also says which
answers the cascade engine judges. Everything else routes on risk thresholds.

A query unlike the model's training prompts (its familiarity below the bundle's threshold)
is not left to the text model: `routing.on_unfamiliar` decides (`_unfamiliar`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace

from tierroute.errors import InvalidRequest, ModelLoadError, TierrouteError
from tierroute.observability import Metrics
from tierroute.observability.names import (
    ATTR_CONFIDENCE,
    ATTR_DECISION_TIME_US,
    ATTR_ESTIMATED_COST_USD,
    ATTR_ESTIMATED_TOKENS,
    ATTR_FAMILIARITY,
    ATTR_MODEL_VERSION,
    ATTR_PLAN,
    ATTR_PLAN_COST_USD,
    ATTR_PLAN_P_CORRECT,
    ATTR_QUERY_TYPE,
    ATTR_REASONS,
    ATTR_RULE,
    ATTR_SCORE_PREFIX,
    ATTR_STRATEGY,
    ATTR_THRESHOLD_PREFIX,
    ATTR_TIER,
    ATTR_TIER_INDEX,
    ATTR_UNFAMILIAR,
    SPAN_ROUTE,
)
from tierroute.providers import Message
from tierroute.routing.features import ShapeFeatures, shape_features
from tierroute.routing.plan import CascadePlan
from tierroute.routing.policy import (
    PUBLISHED_THRESHOLDS,
    Reason,
    ReasonNote,
    RiskThresholds,
    Scored,
    calibrated_rule,
    is_unfamiliar,
    published_rule,
)
from tierroute.settings import HeuristicConfig, Settings, TierConfig

STRATEGIES = ("heuristic", "classifier")
RULES = ("calibrated", "published")
# Appended to the reason that moved a Cascade off the value policy's start tier.
PLAN_DROPPED = "; value plan dropped, judge sampling decides"
# ... and off an unfamiliar query's checked start (routing.on_unfamiliar = "check").
CHECK_DROPPED = "; unfamiliar check dropped, judge sampling decides"
# The decision's `thresholds` entry holding the model's familiarity threshold.
MIN_FAMILIARITY = "min_familiarity"


class Scorer(Protocol):
    """What the router needs of a classifier: probabilities per tier, and its identity.

    Six members are optional and looked up when present: `cascade_thresholds` (where a
    Cascade starts, calibrated apart from Route's), `cascade_plan(text, point)` (the value
    policy's `CascadePlan` for a Cascade at an operating point, or None),
    `score_cascade(text, point)` (both the probabilities and that plan, from one feature
    pass), `operating_points` (the names a request may pick), `score(text, point, plan=)`
    (a `Scored`: probabilities, familiarity and, with `plan`, the plan, from one pass) and
    `familiarity_threshold` (below it a query is unfamiliar; None: no signal).
    """

    @property
    def version(self) -> str: ...

    @property
    def thresholds(self) -> RiskThresholds: ...

    def predict_proba(self, text: str) -> list[float]: ...


@dataclass(frozen=True)
class RouteQuery:
    """A query to route, already validated against the input limits."""

    text: str
    history: tuple[Message, ...] = ()
    strategy: str | None = None
    rule: str | None = None
    quality_floor: float = 0.0
    max_cost_usd: float = 0.0
    tenant_id: str = ""
    session_id: str = ""
    request_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The last user turn carries tool results: the turn continues an agent loop.
    continues_tool_use: bool = False
    # The value policy's operating point for a Cascade ("" = the model's default).
    operating_point: str = ""
    # The session's state, read by the caller from the tenant state before routing: the
    # highest tier that answered in it so far, and the tier of its open agent loop (whose
    # last answer called a tool). Only answered calls raise them; routing never does.
    session_floor: int = 0
    session_loop_tier: int | None = None


@dataclass(frozen=True)
class Decision:
    """A routing decision and everything that explains it."""

    tier_index: int
    tier: TierConfig
    strategy: str
    scores: tuple[float, ...]
    thresholds: Mapping[str, float]
    reasons: tuple[ReasonNote, ...]
    model_version: str
    decision_time_us: int
    rule: str
    features: ShapeFeatures
    estimated_cost_usd: float
    confidence: float
    # The value policy's plan (start tier and which answers to judge), Cascade only; None
    # when the risk thresholds decided or stickiness or a cost ceiling moved the tier.
    plan: CascadePlan | None = None
    # How much the query looks like the model's training prompts (0-1); None without a
    # classifier that has the signal.
    familiarity: float | None = None
    # Below the model's familiarity threshold (reason UNFAMILIAR_QUERY).
    unfamiliar: bool = False
    # Cascade, routing.on_unfamiliar = "check": the start answer is checked and, on doubt,
    # the cascade goes to this tier (the reference tier); None otherwise.
    check_to: int | None = None


def routing_text(text: str, history: Sequence[Message], turns: int, chars: int) -> str:
    """The last user turn plus a bounded window of earlier context, context first."""
    if not history or turns <= 0 or chars <= 0:
        return text
    context = "\n".join(m.content for m in history[-turns:])
    return f"{context[-chars:]}\n{text}"


def heuristic_decision(
    features: ShapeFeatures, config: HeuristicConfig, n_tiers: int
) -> tuple[int, list[ReasonNote]]:
    """The published shape rules; 'top' is the last tier and 'mid' the one below it."""
    top, mid = n_tiers - 1, max(n_tiers - 2, 0)
    tokens = features.estimated_tokens
    if tokens > config.long_input_tokens:
        return top, [
            ReasonNote(Reason.LONG_INPUT, f"~{tokens} tokens > {config.long_input_tokens}")
        ]
    if features.query_type == "analytical" and features.multi_step:
        return top, [ReasonNote(Reason.ANALYTICAL_MULTI_STEP, "analytical, multi-step")]
    if features.query_type in ("coding", "analytical"):
        return mid, [ReasonNote(Reason.CODING_OR_ANALYTICAL, f"query type {features.query_type}")]
    if features.has_code_block and tokens > config.code_block_tokens:
        return mid, [
            ReasonNote(
                Reason.LARGE_CODE_BLOCK,
                f"code block, ~{tokens} tokens > {config.code_block_tokens}",
            )
        ]
    return 0, [ReasonNote(Reason.SIMPLE_QUERY, f"query type {features.query_type}, no rule fired")]


def _risk_thresholds(scorer: Scorer, *, for_cascade: bool) -> RiskThresholds:
    """The model's cascade thresholds for a Cascade when it has them, else Route's."""
    cascade_risk = getattr(scorer, "cascade_thresholds", None) if for_cascade else None
    return cascade_risk if isinstance(cascade_risk, RiskThresholds) else scorer.thresholds


def _check(query: RouteQuery, strategy: str, rule: str) -> None:
    """InvalidRequest naming what is wrong with the request's strategy or policy."""
    if strategy not in STRATEGIES:
        raise InvalidRequest(f"strategy {strategy!r} cannot route; use one of {STRATEGIES}")
    if rule not in RULES:
        raise InvalidRequest(f"decision rule {rule!r} is unknown; use one of {RULES}")
    if not 0.0 <= query.quality_floor <= 1.0:
        raise InvalidRequest("policy.quality_floor must be within [0, 1]")
    if query.max_cost_usd < 0:
        raise InvalidRequest("policy.max_cost_usd must not be negative")


@dataclass
class _Pick:
    """A decision while it is being made: the strategy's tier, then the policy's limits."""

    index: int
    notes: list[ReasonNote]
    scores: tuple[float, ...]
    thresholds: dict[str, float]
    confidence: float
    version: str
    rule: str
    plan: CascadePlan | None = None
    familiarity: float | None = None
    unfamiliar: bool = False
    check_to: int | None = None

    def dropped(self) -> str:
        """What moving the tier drops, for the reason's detail (and drops it)."""
        text = PLAN_DROPPED if self.plan is not None else ""
        text += CHECK_DROPPED if self.check_to is not None else ""
        self.plan, self.check_to = None, None
        return text


class Router:
    """Chooses a tier for a query by the heuristic or the classifier strategy."""

    def __init__(
        self,
        settings: Settings,
        scorer: Scorer | None,
        *,
        tracer: trace.Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._tracer = tracer if tracer is not None else trace.NoOpTracer()
        self._metrics = metrics if metrics is not None else Metrics()
        self._tiers = settings.tiers
        self._names = tuple(t.name for t in settings.tiers)
        self._scorer = scorer
        self._check(scorer)

    @property
    def scorer(self) -> Scorer | None:
        """The classifier in use (swapped whole by a hot reload), or None."""
        return self._scorer

    @property
    def model_version(self) -> str:
        """Version of the classifier in use, or "" when there is none."""
        return self._scorer.version if self._scorer is not None else ""

    def _check(self, scorer: Scorer | None) -> None:
        if scorer is not None and len(scorer.thresholds.risk) != len(self._tiers) - 1:
            raise ModelLoadError(
                f"the model's thresholds cover {len(scorer.thresholds.risk) + 1} tiers; "
                f"{len(self._tiers)} are configured"
            )

    def swap_scorer(self, scorer: Scorer) -> None:
        """Replace the classifier (hot reload); a call in flight keeps the one it started with."""
        self._check(scorer)
        self._scorer = scorer

    def route(self, query: RouteQuery, *, unchecked: bool = False) -> Decision:
        """Decide the tier for `query` (the Route RPC) in a `tierroute.route` span, counted.

        InvalidRequest for an unusable strategy or rule. The cascade calls `decide` inside
        its own route span instead, so a request never has two. `unchecked`: the decision
        is acted on with no answer checked and no caller to read its reasons (Envoy's
        processor), so an unfamiliar query's `check` gets the reference tier.
        """
        with self._tracer.start_as_current_span(SPAN_ROUTE) as span:
            try:
                decision = self.decide(query, unchecked=unchecked)
            except TierrouteError:
                strategy = query.strategy or self._settings.routing.default_strategy
                self._metrics.request(rpc="route", tier="none", strategy=strategy, outcome="error")
                raise
            annotate_route(span, decision, self._names)
        self._metrics.decision(
            rpc="route",
            strategy=decision.strategy,
            tier=decision.tier.name,
            seconds=decision.decision_time_us / 1e6,
        )
        self.record_familiarity("route", decision)
        self._metrics.request(
            rpc="route", tier=decision.tier.name, strategy=decision.strategy, outcome="ok"
        )
        return decision

    def record_familiarity(self, rpc: str, decision: Decision) -> None:
        """The decision's familiarity in the metrics, when the classifier has the signal."""
        if decision.familiarity is not None:
            self._metrics.familiarity(
                rpc=rpc,
                value=decision.familiarity,
                unfamiliar=decision.unfamiliar,
                handling=self._settings.routing.on_unfamiliar,
            )

    def decide(
        self, query: RouteQuery, *, for_cascade: bool = False, unchecked: bool = False
    ) -> Decision:
        """Decide the tier for `query` without a span; InvalidRequest for a bad strategy or rule.

        `for_cascade` picks the tier a Cascade starts on: by the model's value policy when
        it has one and the request sets no quality floor (the decision then carries the
        plan), else with the model's cascade thresholds when it has them (calibrated
        knowing a judge and escalation follow), else the same thresholds as Route, whose
        callers get no judge behind the chosen tier. The classifier's probabilities are
        computed either way: they are the decision's scores and confidence.

        `unchecked`: a Cascade that will check no answer (JUDGE_MODE_NEVER); an unfamiliar
        query's `check` then starts on the reference tier, never on the cheapest unchecked.
        """
        start = time.perf_counter_ns()
        settings = self._settings
        strategy = query.strategy or settings.routing.default_strategy
        rule = query.rule or settings.routing.default_rule
        _check(query, strategy, rule)
        if query.operating_point:
            self._check_point(query.operating_point)
        text = routing_text(
            query.text,
            query.history,
            settings.routing.context_turns,
            settings.routing.context_chars,
        )
        features = shape_features(text, settings.heuristic)
        if strategy == "heuristic":
            pick = self._heuristic_pick(features)
        else:
            pick = self._scored_pick(
                text, rule, query, for_cascade=for_cascade, unchecked=unchecked
            )
        sticky = bool(query.session_id) and settings.routing.session_sticky
        if sticky and not (query.continues_tool_use and self._agent_loop(pick, query)):
            self._session_floor(pick, query)
        input_tokens = features.estimated_tokens
        output_tokens = settings.routing.expected_output_tokens
        if query.max_cost_usd > 0:
            self._cost_ceiling(pick, query.max_cost_usd, input_tokens, output_tokens)
        tier = self._tiers[pick.index]
        return Decision(
            tier_index=pick.index,
            tier=tier,
            strategy=strategy,
            scores=pick.scores,
            thresholds=pick.thresholds,
            reasons=tuple(pick.notes),
            model_version=pick.version,
            decision_time_us=(time.perf_counter_ns() - start) // 1000,
            rule=pick.rule,
            features=features,
            estimated_cost_usd=tier.cost_usd(input_tokens, output_tokens),
            confidence=pick.confidence,
            plan=pick.plan,
            familiarity=pick.familiarity,
            unfamiliar=pick.unfamiliar,
            check_to=pick.check_to,
        )

    def _heuristic_pick(self, features: ShapeFeatures) -> _Pick:
        heuristic = self._settings.heuristic
        index, notes = heuristic_decision(features, heuristic, len(self._tiers))
        return _Pick(
            index=index,
            notes=notes,
            scores=tuple(1.0 if i == index else 0.0 for i in range(len(self._tiers))),
            thresholds={
                "long_input_tokens": float(heuristic.long_input_tokens),
                "code_block_tokens": float(heuristic.code_block_tokens),
            },
            confidence=1.0,
            version="",
            rule="",
        )

    def _scored_pick(
        self, text: str, rule: str, query: RouteQuery, *, for_cascade: bool, unchecked: bool
    ) -> _Pick:
        scorer = self._scorer
        if scorer is None:
            raise InvalidRequest("the classifier strategy is not available: no model loaded")
        # A Cascade the value policy plans: one call for scores and plan when the scorer
        # shares one feature pass between its classifier and its value model.
        wants_plan = (
            for_cascade
            and query.quality_floor == 0
            and rule != "published"
            and self._settings.cascade.use_model_calibration
        )
        scored = self._score(scorer, text, query.operating_point, wants_plan)
        probs = scored.probs
        planned = (scored.plan,) if wants_plan else None
        pick = _Pick(
            index=0,
            notes=[],
            scores=tuple(probs),
            thresholds={},
            confidence=max(probs),
            version=scorer.version,
            rule=rule,
            familiarity=scored.familiarity,
        )
        found = getattr(scorer, "familiarity_threshold", None)
        threshold = float(found) if isinstance(found, int | float) else None
        pick.unfamiliar = is_unfamiliar(scored.familiarity, threshold)
        mode = self._settings.routing.on_unfamiliar
        if (
            threshold is not None
            and pick.unfamiliar
            and mode != "classifier"
            and rule != "published"
        ):
            mode = "reference" if unchecked and mode == "check" else mode
            return self._unfamiliar(pick, mode, threshold, for_cascade=for_cascade)
        self._decide_scored(pick, scorer, text, query, planned, for_cascade=for_cascade)
        if threshold is not None:
            if pick.unfamiliar:
                note = self._unfamiliar_note(pick, threshold, f"the {rule} rule decides")
                pick.notes.insert(0, note)
            pick.thresholds[MIN_FAMILIARITY] = threshold
        return pick

    @staticmethod
    def _score(scorer: Scorer, text: str, point: str, wants_plan: bool) -> Scored:
        """One run of the scorer: `score` when it has it, else its older members."""
        score = getattr(scorer, "score", None)
        if callable(score):
            scored = score(text, point or None, plan=wants_plan)
            assert isinstance(scored, Scored)  # the Scorer protocol's `score`
            return scored
        both = getattr(scorer, "score_cascade", None) if wants_plan else None
        if callable(both):
            probs, early = both(text, point) if point else both(text)
            return Scored(list(probs), None, early)
        # A scorer that plans apart from scoring (the evaluation's fold scorers) is asked
        # for its plan too: `planned` is final, nothing asks `cascade_plan` after this.
        planner = getattr(scorer, "cascade_plan", None) if wants_plan else None
        if callable(planner):
            plan = planner(text, point) if point else planner(text)
            return Scored(scorer.predict_proba(text), None, plan)
        return Scored(scorer.predict_proba(text))

    @staticmethod
    def _unfamiliar_note(pick: _Pick, threshold: float, outcome: str) -> ReasonNote:
        return ReasonNote(
            Reason.UNFAMILIAR_QUERY,
            f"familiarity {pick.familiarity or 0.0:.3f} < {threshold:.3f}: {outcome}",
        )

    def _reference(self) -> int:
        """The reference tier's index (routing.reference_tier; empty: the top tier)."""
        name = self._settings.routing.reference_tier
        return self._names.index(name) if name in self._names else len(self._tiers) - 1

    def _unfamiliar(self, pick: _Pick, mode: str, threshold: float, *, for_cascade: bool) -> _Pick:
        """An unfamiliar query, decided by routing.on_unfamiliar instead of the text model.

        "reference": the reference tier. "check": the cheapest tier; a Cascade checks its
        answer and goes to the reference tier on doubt (`Decision.check_to`), and Route,
        which has no check to run, names the same start with the reason code.
        """
        reference = self._reference()
        pick.thresholds = {MIN_FAMILIARITY: threshold}
        if mode == "reference":
            pick.index = reference
            outcome = f"the reference tier {self._names[reference]} answers"
        else:
            pick.index = 0
            target = max(reference, 1) if len(self._tiers) > 1 else None
            if for_cascade and target is not None:
                pick.check_to = target
                outcome = f"{self._names[0]} answers, checked; {self._names[target]} on doubt"
            else:
                outcome = f"{self._names[0]}, as a Cascade starts; check its answer"
        pick.notes = [self._unfamiliar_note(pick, threshold, outcome)]
        return pick

    def _decide_scored(
        self,
        pick: _Pick,
        scorer: Scorer,
        text: str,
        query: RouteQuery,
        planned: tuple[CascadePlan | None] | None,
        *,
        for_cascade: bool,
    ) -> None:
        """The tier by the rule, the value plan or the risk thresholds, into `pick`."""
        rule, probs = pick.rule, pick.scores
        if rule == "published":
            pick.index, pick.notes = published_rule(probs, self._names)
            pick.thresholds = dict(PUBLISHED_THRESHOLDS)
            return
        # A quality floor is a promise about the start tier itself, which the value policy
        # does not make: those requests keep the risk thresholds.
        plan = (
            self._plan(scorer, text, query.operating_point, planned)
            if for_cascade and query.quality_floor == 0
            else None
        )
        if plan is not None:
            pick.index, pick.notes, pick.plan = plan.start, [self._plan_note(plan)], plan
            pick.thresholds = {"price_per_correct_usd": plan.price_per_correct_usd}
            return
        risk = _risk_thresholds(scorer, for_cascade=for_cascade)
        pick.index, pick.notes = calibrated_rule(probs, risk, self._names, query.quality_floor)
        pick.thresholds = risk.as_dict(self._names)
        if query.quality_floor > 0:
            pick.thresholds["quality_floor"] = query.quality_floor

    def _agent_loop(self, pick: _Pick, query: RouteQuery) -> bool:
        """Keep a turn that answers a tool call on the tier that made the call.

        Switching models mid-loop would hand one model's tool call to another and lose the
        prompt cache the loop has built on that tier.
        """
        loop = query.session_loop_tier
        if loop is None or not 0 <= loop < len(self._tiers):
            return False
        if loop != pick.index:
            pick.notes.append(
                ReasonNote(
                    Reason.AGENT_LOOP,
                    f"the session's tool call was made on {self._names[loop]}; the agent loop "
                    "stays there" + pick.dropped(),
                )
            )
            pick.index = loop
        return True

    def _session_floor(self, pick: _Pick, query: RouteQuery) -> None:
        """Never route a session below a tier that already answered in it."""
        floor = min(query.session_floor, len(self._tiers) - 1)
        if floor > pick.index:
            pick.notes.append(
                ReasonNote(
                    Reason.SESSION_STICKY,
                    f"session already used {self._names[floor]}; not routing down" + pick.dropped(),
                )
            )
            pick.index = floor

    def _cost_ceiling(
        self, pick: _Pick, max_cost_usd: float, input_tokens: int, output_tokens: int
    ) -> None:
        """Step down to the highest tier whose estimated cost is within the ceiling."""
        pick.thresholds["max_cost_usd"] = max_cost_usd
        capped = pick.index
        while capped > 0 and (
            self._tiers[capped].cost_usd(input_tokens, output_tokens) > max_cost_usd
        ):
            capped -= 1
        if capped != pick.index:
            pick.notes.append(
                ReasonNote(
                    Reason.COST_CEILING,
                    f"{self._names[pick.index]} estimated above ${max_cost_usd:g}; "
                    f"using {self._names[capped]}" + pick.dropped(),
                )
            )
            pick.index = capped

    def _check_point(self, point: str) -> None:
        """InvalidRequest unless the served model ships operating point `point`."""
        known = tuple(getattr(self._scorer, "operating_points", None) or ())
        if not known:
            raise InvalidRequest(
                f"policy.operating_point {point!r}: the served model ships no operating "
                "points (its Cascade has no value policy)"
            )
        if point not in known:
            raise InvalidRequest(
                f"policy.operating_point {point!r} is not one of the served model's "
                f"operating points: {', '.join(known)}"
            )

    def _plan(
        self,
        scorer: Scorer,
        text: str,
        point: str = "",
        planned: tuple[CascadePlan | None] | None = None,
    ) -> CascadePlan | None:
        """The value policy's plan for a Cascade, or None when there is no policy to ask.

        `cascade.use_model_calibration = false` turns the policy off along with the rest
        of the model's cascade calibration. `planned` holds a plan already computed with
        the scores (`score_cascade`).
        """
        if not self._settings.cascade.use_model_calibration:
            return None
        if planned is not None:
            plan: object = planned[0]
        else:
            planner = getattr(scorer, "cascade_plan", None)
            if not callable(planner):
                return None
            plan = planner(text, point) if point else planner(text)
        if not isinstance(plan, CascadePlan):
            return None
        if not 0 <= plan.start < len(self._tiers):
            raise ModelLoadError(
                f"the value policy chose start tier {plan.start}; "
                f"{len(self._tiers)} tiers are configured"
            )
        return plan

    def _plan_note(self, plan: CascadePlan) -> ReasonNote:
        p, cost = plan.p_correct[plan.index], plan.cost_usd[plan.index]
        return ReasonNote(
            Reason.EXPECTED_VALUE,
            f"{plan.action.name(self._names)}: P(correct) {p:.2f} at ~${cost:.2g}; "
            f"price of a correct answer ${plan.price_per_correct_usd:.2g}"
            + (f" (operating point {plan.operating_point})" if plan.operating_point else ""),
        )


def annotate_route(span: trace.Span, decision: Decision, tier_names: Sequence[str]) -> None:
    """Describe a routing decision on `span`: tier, strategy, scores, thresholds, reasons,
    and the value policy's plan when a Cascade has one.

    Scores are keyed by tier name (`tier_names`, cheapest first); reason codes, never their
    details, are recorded.
    """
    if not span.is_recording():
        return
    span.set_attribute(ATTR_TIER, decision.tier.name)
    span.set_attribute(ATTR_TIER_INDEX, decision.tier_index)
    span.set_attribute(ATTR_STRATEGY, decision.strategy)
    span.set_attribute(ATTR_CONFIDENCE, decision.confidence)
    span.set_attribute(ATTR_RULE, decision.rule)
    span.set_attribute(ATTR_MODEL_VERSION, decision.model_version)
    span.set_attribute(ATTR_REASONS, [note.code.value for note in decision.reasons])
    span.set_attribute(ATTR_DECISION_TIME_US, decision.decision_time_us)
    span.set_attribute(ATTR_ESTIMATED_COST_USD, decision.estimated_cost_usd)
    span.set_attribute(ATTR_QUERY_TYPE, decision.features.query_type)
    span.set_attribute(ATTR_ESTIMATED_TOKENS, decision.features.estimated_tokens)
    if decision.familiarity is not None:
        span.set_attribute(ATTR_FAMILIARITY, decision.familiarity)
        span.set_attribute(ATTR_UNFAMILIAR, decision.unfamiliar)
    for name, score in zip(tier_names, decision.scores, strict=False):
        span.set_attribute(f"{ATTR_SCORE_PREFIX}{name}", score)
    for name, value in decision.thresholds.items():
        span.set_attribute(f"{ATTR_THRESHOLD_PREFIX}{name}", value)
    plan = decision.plan
    if plan is not None:
        span.set_attribute(ATTR_PLAN, plan.action.name(tier_names))
        span.set_attribute(ATTR_PLAN_P_CORRECT, plan.p_correct[plan.index])
        span.set_attribute(ATTR_PLAN_COST_USD, plan.cost_usd[plan.index])
