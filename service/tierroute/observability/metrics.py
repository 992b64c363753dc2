"""tierroute's OpenTelemetry metrics and the Prometheus endpoint that serves them.

`Metrics` holds every instrument and is what the router, the cascade engine and (later) the
circuit breaker record into; built without a meter provider it records nothing, so callers
never check. `start_prometheus` serves a registry of its own over HTTP for scraping.

Labels are low-cardinality by construction: tier names come from configuration, reasons,
verdicts and error kinds from closed sets; no label ever carries query or answer text.
Prometheus names (dots become underscores, counters gain `_total`, units a suffix):

    tierroute_requests_total{rpc,tier,strategy,outcome}
    tierroute_escalations_total{reason,from_tier}
    tierroute_cascade_plans_total{action}
    tierroute_judge_verdicts_total{tier,verdict}
    tierroute_judge_parse_failures_total{tier}
    tierroute_cost_usd_total{tier,role}
    tierroute_routing_decision_duration_seconds{rpc,strategy,tier}   (histogram)
    tierroute_routing_familiarity{rpc}   (histogram, 0-1, classifier decisions with the signal)
    tierroute_unfamiliar_queries_total{rpc,handling}   (handling: routing.on_unfamiliar)
    tierroute_provider_errors_total{tier,role,kind}
    tierroute_circuit_breaker_state{tier}   0 closed, 1 half-open, 2 open
    gen_ai_client_operation_duration_seconds{...}   (histogram, GenAI conventions)
    gen_ai_client_token_usage{...}                  (histogram, GenAI conventions)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from tierroute import __version__

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

BreakerState = Literal["closed", "half_open", "open"]
BREAKER_STATES: tuple[BreakerState, ...] = get_args(BreakerState)
# Gauge values: higher is worse, so `> 0` alerts on any tier that is not closed.
BREAKER_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}

REQUESTS = "tierroute.requests"
ESCALATIONS = "tierroute.escalations"
CASCADE_PLANS = "tierroute.cascade.plans"
JUDGE_VERDICTS = "tierroute.judge.verdicts"
JUDGE_PARSE_FAILURES = "tierroute.judge.parse_failures"
COST = "tierroute.cost.usd"
DECISION_DURATION = "tierroute.routing.decision.duration"
PROVIDER_ERRORS = "tierroute.provider.errors"
FAMILIARITY = "tierroute.routing.familiarity"
UNFAMILIAR = "tierroute.unfamiliar_queries"
_FAMILIARITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
BREAKER_STATE = "tierroute.circuit_breaker.state"

# Routing takes tens of microseconds (the classifier) to a few milliseconds (cold paths).
_DECISION_BUCKETS_S = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
)
# The GenAI conventions' advised boundaries for operation duration and token usage.
_CALL_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))


class Metrics:
    """Every tierroute instrument, recorded through small intention-named methods."""

    def __init__(
        self, meter_provider: metrics.MeterProvider | None = None, *, provider_name: str = ""
    ) -> None:
        provider = meter_provider if meter_provider is not None else metrics.NoOpMeterProvider()
        meter = provider.get_meter("tierroute", __version__)
        self._provider_name = provider_name
        self._requests = meter.create_counter(
            REQUESTS, unit="{request}", description="Requests by RPC, final tier and strategy"
        )
        self._escalations = meter.create_counter(
            ESCALATIONS, unit="{escalation}", description="Escalations to a higher tier, by reason"
        )
        self._plans = meter.create_counter(
            CASCADE_PLANS,
            unit="{plan}",
            description="Cascades started on the value policy's plan, by action",
        )
        self._verdicts = meter.create_counter(
            JUDGE_VERDICTS, unit="{verdict}", description="Judge verdicts by judging tier"
        )
        self._parse_failures = meter.create_counter(
            JUDGE_PARSE_FAILURES,
            unit="{failure}",
            description="Judge replies whose verdict did not validate",
        )
        self._cost = meter.create_counter(
            COST, unit="{USD}", description="Money spent on provider calls, in US dollars"
        )
        self._decision = meter.create_histogram(
            DECISION_DURATION,
            unit="s",
            description="Time to make a routing decision",
            explicit_bucket_boundaries_advisory=_DECISION_BUCKETS_S,
        )
        self._errors = meter.create_counter(
            PROVIDER_ERRORS, unit="{error}", description="Failed provider calls, by kind"
        )
        self._familiarity = meter.create_histogram(
            FAMILIARITY,
            unit="1",
            description="How much routed queries look like the model's training prompts (0-1)",
            explicit_bucket_boundaries_advisory=_FAMILIARITY_BUCKETS,
        )
        self._unfamiliar = meter.create_counter(
            UNFAMILIAR,
            unit="{query}",
            description="Queries below the model's familiarity threshold, by how they were served",
        )
        self._call_duration = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of provider calls",
            explicit_bucket_boundaries_advisory=_CALL_BUCKETS_S,
        )
        self._tokens = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Tokens used per provider call",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._breakers: dict[str, BreakerState] = {}
        # The gauge callback runs on the scraping thread; the breaker sets from the loop.
        self._breakers_lock = threading.Lock()
        meter.create_observable_gauge(
            BREAKER_STATE,
            callbacks=[self._observe_breakers],
            unit="1",
            description="Circuit breaker state per tier: 0 closed, 1 half-open, 2 open",
        )

    def request(self, *, rpc: str, tier: str, strategy: str, outcome: str) -> None:
        """Count one finished request (`tier` is "none" when no answer was produced)."""
        self._requests.add(1, {"rpc": rpc, "tier": tier, "strategy": strategy, "outcome": outcome})

    def decision(self, *, rpc: str, strategy: str, tier: str, seconds: float) -> None:
        """Record how long one routing decision took."""
        self._decision.record(seconds, {"rpc": rpc, "strategy": strategy, "tier": tier})

    def familiarity(self, *, rpc: str, value: float, unfamiliar: bool, handling: str) -> None:
        """Record one query's familiarity, and count it when it is unfamiliar (`handling`:
        what routing.on_unfamiliar gave it)."""
        self._familiarity.record(value, {"rpc": rpc})
        if unfamiliar:
            self._unfamiliar.add(1, {"rpc": rpc, "handling": handling})

    def escalation(self, *, reason: str, from_tier: str) -> None:
        """Count one escalation away from `from_tier`."""
        self._escalations.add(1, {"reason": reason, "from_tier": from_tier})

    def cascade_plan(self, *, action: str) -> None:
        """Count one Cascade started on the value policy's plan (`cheap+judge`, ...)."""
        self._plans.add(1, {"action": action})

    def judge_verdict(self, *, tier: str, verdict: str) -> None:
        """Count one verdict (pass, fail or unavailable) given by the judging `tier`."""
        self._verdicts.add(1, {"tier": tier, "verdict": verdict})

    def judge_parse_failure(self, *, tier: str) -> None:
        """Count one judge reply that came back but did not hold a valid verdict."""
        self._parse_failures.add(1, {"tier": tier})

    def cost(self, *, tier: str, role: str, usd: float) -> None:
        """Add the price of one call on `tier`."""
        if usd > 0:
            self._cost.add(usd, {"tier": tier, "role": role})

    def provider_error(self, *, tier: str, role: str, kind: str) -> None:
        """Count one failed provider call by error kind."""
        self._errors.add(1, {"tier": tier, "role": role, "kind": kind})

    def provider_call(
        self,
        *,
        model: str,
        tier: str,
        role: str,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        error_kind: str = "",
    ) -> None:
        """Record one provider call's duration and token usage (GenAI client metrics)."""
        attributes: dict[str, str] = {
            gen_ai.GEN_AI_OPERATION_NAME: "chat",
            gen_ai.GEN_AI_PROVIDER_NAME: self._provider_name,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            "tier": tier,
            "role": role,
        }
        if error_kind:
            attributes[ERROR_TYPE] = error_kind
        self._call_duration.record(seconds, attributes)
        if not error_kind:
            for token_type, count in (("input", input_tokens), ("output", output_tokens)):
                self._tokens.record(count, {**attributes, gen_ai.GEN_AI_TOKEN_TYPE: token_type})

    def set_breaker_state(self, tier: str, state: BreakerState) -> None:
        """Publish the circuit breaker state of `tier`; ValueError for an unknown state."""
        if state not in BREAKER_VALUES:
            raise ValueError(f"breaker state {state!r} is not one of {BREAKER_STATES}")
        with self._breakers_lock:
            self._breakers[tier] = state

    def breaker_state(self, tier: str) -> BreakerState:
        """The last published state of `tier`'s breaker; closed when none was published."""
        with self._breakers_lock:
            return self._breakers.get(tier, "closed")

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._breakers_lock:
            states = dict(self._breakers)
        return [Observation(BREAKER_VALUES[s], {"tier": t}) for t, s in states.items()]


@dataclass
class PrometheusEndpoint:
    """A metric reader and the HTTP server that serves what it collects at /metrics."""

    reader: PrometheusMetricReader
    registry: CollectorRegistry
    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_prometheus(host: str, port: int) -> PrometheusEndpoint:
    """Serve a fresh registry on `host:port` (0 picks a free port; see `.port`).

    Pass `endpoint.reader` to the MeterProvider. A registry of its own, not prometheus_client's
    global one, so that two endpoints (or tests) never see each other's metrics.
    """
    # Deferred: only a process that serves metrics pays for the exporter's imports.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return PrometheusEndpoint(
        reader=reader,
        registry=registry,
        host=host,
        port=server.server_port,
        _server=server,
        _thread=thread,
    )
