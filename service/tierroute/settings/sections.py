"""The settings sections: one frozen dataclass per TOML table, with their checks.

`tierroute.settings` re-exports every public name; import them from there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierroute.errors import ConfigError
from tierroute.settings.parsing import Secret, build

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _default_model_dir() -> Path:
    # In a source checkout the bundle sits in model_export/; images set TIERROUTE_MODEL_DIR.
    return _PACKAGE_DIR.parent.parent / "model_export" / "bundle"


@dataclass(frozen=True)
class TierConfig:
    """One model tier: its name, provider model id, prices, context window and output limit."""

    name: str
    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    context_window: int = 200_000
    # The most output tokens one answer call on this tier may ask for.
    max_output_tokens: int = 8192
    # Prompt caching, as multiples of the input price: writing a cache entry, reading one.
    cache_write_multiplier: float = 1.25
    cache_read_multiplier: float = 0.1

    def cost_usd(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_creation_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> float:
        """Price a call on this tier; cache tokens are billed apart from `input_tokens`."""
        cached = (
            cache_creation_tokens * self.cache_write_multiplier
            + cache_read_tokens * self.cache_read_multiplier
        )
        return (
            (input_tokens + cached) * self.input_usd_per_mtok
            + output_tokens * self.output_usd_per_mtok
        ) / 1e6


@dataclass(frozen=True)
class ProbeConfig:
    """A probe: a model outside the answer ladder, asked the same question so that its final
    answer can cross-check a tier's (the Cascade's agreement modes, docs/cascade.md).

    Its calls are billed at its own prices and counted in the Cascade's cost like any call.
    `replay_models` names the recorded models (keys of the data's `models`) whose answers
    the replay backend serves for it, the first a record holds; empty: the model id itself.
    """

    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    # Shown in hops, spans and the query log; empty: the model id.
    name: str = ""
    max_output_tokens: int = 8192
    context_window: int = 200_000
    replay_models: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The probe's name, or its model id when it has none."""
        return self.name or self.model

    def as_tier(self) -> TierConfig:
        """The probe priced and limited as a tier is, for its calls' hops."""
        return TierConfig(
            name=self.label,
            model=self.model,
            input_usd_per_mtok=self.input_usd_per_mtok,
            output_usd_per_mtok=self.output_usd_per_mtok,
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
        )


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the gRPC server listens."""

    host: str = "127.0.0.1"
    port: int = 50051
    grace_period_s: float = 10.0
    # After SIGTERM: keep serving this long while reporting NOT_SERVING, so clients and load
    # balancers stop sending new calls here before the server stops accepting them.
    drain_delay_s: float = 1.0
    max_receive_message_bytes: int = 4 * 1024 * 1024
    max_send_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 512
    # Admission control: calls in flight beyond this are refused at once with
    # RESOURCE_EXHAUSTED (health and reflection exempt); 0 = no bound. Keep it below
    # max_concurrent_rpcs, whose refusal is gRPC's own and does not spare health probes.
    max_in_flight: int = 256
    # Server processes `tierroute serve` runs on one port (SO_REUSEPORT); 0 = one per core.
    workers: int = 0


@dataclass(frozen=True)
class HttpConfig:
    """The Anthropic Messages API endpoint, served beside gRPC in the same process."""

    # "" = the gRPC server's address (server.host, or `serve --host`).
    host: str = ""
    # 0 turns the endpoint off.
    port: int = 8080
    # Request bodies larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = 32 * 1024 * 1024
    # A started stream sends a `ping` event after this many seconds without another event.
    ping_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.ping_interval_s <= 0 or self.max_body_bytes < 1:
            raise ConfigError("http.ping_interval_s and http.max_body_bytes must be positive")


@dataclass(frozen=True)
class LimitsConfig:
    """Input limits, enforced before any work."""

    max_query_chars: int = 200_000
    max_messages: int = 256
    max_metadata_entries: int = 64
    max_metadata_key_chars: int = 128
    max_metadata_value_chars: int = 1024
    max_id_chars: int = 128
    # The Messages API surface of a Cascade request.
    max_blocks_per_message: int = 64
    max_tools: int = 64
    max_tool_schema_chars: int = 32_768
    max_stop_sequences: int = 16
    max_stop_sequence_chars: int = 256
    # cache_control marks per request, tools included (Anthropic accepts four).
    max_cache_breakpoints: int = 4


# The values routing.on_unfamiliar may take (tierroute.routing.policy says what each does).
ON_UNFAMILIAR_CHOICES = ("check", "reference", "classifier")


@dataclass(frozen=True)
class RoutingConfig:
    """Strategy defaults and the classifier's serving knobs."""

    default_strategy: str = "classifier"
    default_rule: str = "calibrated"
    model_dir: Path = field(default_factory=_default_model_dir)
    # The classifier featurises a bounded prefix so its cost per query is fixed.
    featurize_prefix_chars: int = 4096
    # Earlier chat turns included as routing context, and their character budget.
    context_turns: int = 2
    context_chars: int = 1000
    # Calls in one session never route below the session's highest tier so far.
    # Sessions are kept with the tenant state (tenancy.state_url), for tenancy.session_ttl_s.
    session_sticky: bool = True
    # Output tokens assumed when estimating the cost of a tier before calling it.
    expected_output_tokens: int = 400
    # The versioned model registry (tierroute.model.registry, docs/operations.md), e.g. "models";
    # unset = serve model_dir only. An empty registry takes model_dir as its first version;
    # after that the registry's promoted version is served and model_dir is not read.
    registry_dir: Path | None = None
    # Seconds between checks of the registry's promoted version, for hot reload; 0 = off.
    registry_poll_s: float = 0.0
    # The tier the team uses today (a tier name); empty = the top tier. Savings are stated
    # against it as well as against the top tier, operating points can be defined against it
    # (docs/CALIBRATION.md), and unfamiliar queries escalate to it (docs/own-traffic.md).
    reference_tier: str = ""
    # What a query unlike the model's training prompts gets (docs/operations.md): "check"
    # (the cheapest tier, its answer checked, the reference tier on doubt), "reference" (the
    # reference tier) or "classifier" (decided as any other query).
    on_unfamiliar: str = "check"


@dataclass(frozen=True)
class HeuristicConfig:
    """The published shape rules, every threshold configurable."""

    tokens_per_word: float = 1.3
    long_input_tokens: int = 4000
    code_block_tokens: int = 500
    # Keyword signals (query type, multi-step wording) scan at most this many characters.
    scan_chars: int = 8192


@dataclass(frozen=True)
class CascadeConfig:
    """How Cascade calls, judges, escalates, speculates and retries."""

    # Fraction of non-top answers that are judged, stratified by query type.
    # Use the judge sampling rates and speculative bound that `tierroute calibrate` wrote
    # into the model bundle's thresholds.json (when it has them) over the values below.
    use_model_calibration: bool = True
    judge_sample_rate: float = 0.2
    # Per-query-type rates as "type=rate" entries (e.g. "coding=0.5"); unlisted types use
    # judge_sample_rate.
    judge_sample_rates: tuple[str, ...] = ()
    # Start the next tier in parallel when classifier confidence is below this.
    speculative_bound: float = 0.6
    # Self-routing: escalate below this stated confidence.
    self_confidence_threshold: float = 0.75
    # One deadline for the whole request: the caller's, capped here; this when none is sent.
    default_deadline_s: float = 60.0
    max_deadline_s: float = 300.0
    # One attempt budget shared by every provider call of a request (answers and judges).
    max_attempts: int = 8
    # Retries of one tier after a retryable error, when no other tier can serve instead.
    max_retries_per_tier: int = 2
    retry_base_delay_s: float = 0.2
    retry_max_delay_s: float = 5.0
    # Output tokens of an answer call when the request names none; each tier's own
    # `max_output_tokens` caps this and what a request asks for.
    max_output_tokens: int = 1024
    # Room for the judge's own working before its verdict (prompts.JUDGE_SYSTEM).
    judge_max_output_tokens: int = 4096
    # What the judge sees besides the question and the answer: the last turns of the
    # conversation (at most this many, within this many characters) and the system prompt
    # (cut to its last judge_system_chars), all fenced as untrusted data.
    judge_context_turns: int = 6
    judge_context_chars: int = 6000
    judge_system_chars: int = 2000
    per_call_timeout_s: float = 60.0
    # The probe the agreement modes call (a `[[probes]]` name); empty: the first probe.
    probe: str = ""


@dataclass(frozen=True)
class AnthropicConfig:
    """The Anthropic backend; `backend = "auto"` uses it when an API key is set."""

    backend: str = "auto"  # auto | anthropic | replay
    api_key: Secret = field(default_factory=lambda: Secret(""))
    base_url: str = ""
    connect_timeout_s: float = 5.0


JUDGE_BILLING_MODES = ("reasoning", "verdict_only")


@dataclass(frozen=True)
class ReplayConfig:
    """The replay backend: a local Anthropic Messages API serving recorded answers."""

    data: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    # Which recorded trio answers for the configured tiers: "default" or "claude".
    trio: str = "default"
    # Multiplies every simulated latency; 0 answers at once (tests), 1 is real time.
    time_scale: float = 1.0
    # Whether ANTHROPIC-style fault headers (x-tierroute-fault) are honoured.
    allow_fault_headers: bool = True
    # When set, requests must carry this x-api-key (401 otherwise); empty accepts any key.
    api_key: Secret = field(default_factory=lambda: Secret(""))
    # Simulated latency per tier, cheapest first (tiers past the end use the last value):
    # time to first token plus output tokens over tokens per second, from public figures.
    ttft_s: tuple[float, ...] = (0.4, 0.8, 1.5)
    tokens_per_s: tuple[float, ...] = (150.0, 80.0, 40.0)
    # Injected faults by rate, e.g. "429@cheap=0.05,529=0.01" (syntax in docs/replay.md),
    # drawn from a RNG seeded with fault_seed.
    faults: str = ""
    fault_seed: int = 0
    # retry-after seconds sent with an injected 429 that names none.
    retry_after_s: float = 1.0
    # Real seconds a `timeout` fault holds the connection unless the client leaves first.
    timeout_hold_s: float = 300.0
    # Unknown prompts: chance that a judge passes an answer from tier i, cheapest first.
    synthetic_pass_rates: tuple[float, ...] = (0.6, 0.8, 0.95)
    # What a simulated judge call is billed. "reasoning": the judging model's own recorded
    # answer to the question (the working its verdict rests on, written before the verdict)
    # plus the verdict; "verdict_only": the verdict's tokens alone, an optimistic bound.
    judge_billing: str = "reasoning"


QUERYLOG_WRITERS = ("process", "thread")


# Longer would hold a serving process's unacknowledged window (and its memory) for nothing.
_MAX_COMMIT_DELAY_S = 1.0
# Longer would widen what a serving process killed outright loses (records not yet sent).
_MAX_SEND_DELAY_S = 0.1


@dataclass(frozen=True)
class QueryLogConfig:
    """The query log: where it is stored and how the writer batches, spools and retries."""

    enabled: bool = True
    # sqlite:///relative.sqlite3, sqlite:////absolute/path.sqlite3 or postgresql://...;
    # a Secret because PostgreSQL URLs can carry a password.
    url: Secret = field(default_factory=lambda: Secret("sqlite:///tierroute-querylog.sqlite3"))
    # Query text is stored only when opted in; the SHA-256 of the query always is.
    store_text: bool = False
    # Fraction of answered Cascade calls whose question AND answer are stored, for audits
    # and retraining (docs/operations.md); 0 = none, so privacy holds by default.
    audit_sample_rate: float = 0.0
    # Fraction of classifier-routed calls whose vocabulary coverage (a number, never text)
    # is logged for drift checks; chosen by query hash, so the cost stays off most calls.
    coverage_sample_rate: float = 0.2
    queue_size: int = 10_000
    batch_size: int = 200
    flush_interval_s: float = 0.5
    # Group commit in the writer process: after a record arrives it waits up to this long
    # (or until batch_size records have come) so that one durable write stores them all.
    # Acknowledgements wait for it; requests never do. 0 = one write per read.
    commit_delay_s: float = 0.02
    # The serving process's side: after a record is submitted it lets more join for up to
    # this long, then sends them to the writer process in one write (one wake-up of the
    # writer for several records). What a process killed outright loses is what it had not
    # sent yet. 0 = at the end of each event-loop turn.
    send_delay_s: float = 0.005
    # Local append-only file that holds records while the database is unreachable.
    spool_path: Path = Path("tierroute-querylog.spool.jsonl")
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    connect_timeout_s: float = 5.0
    # How long shutdown waits to drain the queue to the database before spooling the rest.
    close_timeout_s: float = 10.0
    # "process": the writer runs in a process of its own (one per `serve`, shared by its
    # --workers), out of the serving GIL; "thread": inside the serving process.
    writer: str = "process"

    def __post_init__(self) -> None:
        if self.writer not in QUERYLOG_WRITERS:
            raise ConfigError(
                f"querylog.writer must be one of {list(QUERYLOG_WRITERS)}, not {self.writer!r}"
            )
        if self.queue_size < 1 or self.batch_size < 1:
            raise ConfigError("querylog.queue_size and querylog.batch_size must be at least 1")
        if self.flush_interval_s <= 0 or self.retry_initial_s <= 0:
            raise ConfigError("querylog intervals must be positive")
        if not 0 <= self.commit_delay_s <= _MAX_COMMIT_DELAY_S:
            raise ConfigError(
                f"querylog.commit_delay_s must be between 0 and {_MAX_COMMIT_DELAY_S} s"
            )
        if not 0 <= self.send_delay_s <= _MAX_SEND_DELAY_S:
            raise ConfigError(f"querylog.send_delay_s must be between 0 and {_MAX_SEND_DELAY_S} s")


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow mode: serve as configured, and for a sampled share of calls also record, with
    the question's text, what tierroute's policy (classifier strategy, calibrated rule)
    would have decided (docs/own-traffic.md). A team so collects a labelling sample
    before it trusts the router. 0 = off; the sampled calls' text is stored even with
    `querylog.store_text` off, so turning this on is the opt-in."""

    sample_rate: float = 0.0
    # Live labelling (docs/own-traffic.md): this share of calls (unfamiliar ones always,
    # while the budget lasts) is run through every tier in the background and labelled the
    # way `tierroute label` labels, into the query log's `tier_labels`. 0 = off.
    label_rate: float = 0.0
    # The most live labelling may spend (USD) until the server restarts, shared out among
    # `serve --workers` processes; needed with label_rate.
    label_budget_usd: float = 0.0
    # "consensus", "majority" or "judge" (`tierroute label --method`).
    label_method: str = "consensus"
    # Sampled calls waiting to be labelled; beyond it a familiar one is dropped.
    label_max_pending: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_rate <= 1.0:
            raise ConfigError("shadow.label_rate must be within [0, 1]")
        if self.label_budget_usd < 0 or (self.label_rate > 0 and self.label_budget_usd <= 0):
            raise ConfigError("shadow.label_budget_usd must be positive when label_rate is on")
        if self.label_method not in ("consensus", "majority", "judge"):
            raise ConfigError("shadow.label_method must be consensus, majority or judge")
        if self.label_max_pending < 1:
            raise ConfigError("shadow.label_max_pending must be at least 1")

    @property
    def keeps_text(self) -> bool:
        """Whether sampled calls keep their text (shadow samples or live labels)."""
        return self.sample_rate > 0 or self.label_rate > 0


@dataclass(frozen=True)
class AuthConfig:
    """Per-tenant bearer tokens; authentication is off until a tokens file is named."""

    # JSON or TOML mapping tenants to SHA-256 hex digests of their tokens, plus admin
    # digests (format in docs/security.md); tokens themselves are never configured.
    tokens_file: Path | None = None
    # Full method names that need an admin token (refused when authentication is off).
    admin_methods: tuple[str, ...] = (
        "/tierroute.v1.TierRouter/ReloadModel",
        "/tierroute.v1.TierRouter/RollbackModel",
    )


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS: PEM certificate chain and key; mutual TLS when a client CA is set."""

    cert_file: Path | None = None
    key_file: Path | None = None
    # Clients must present a certificate signed by this CA when set.
    client_ca_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("tls.cert_file and tls.key_file must be set together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ConfigError("tls.client_ca_file needs tls.cert_file and tls.key_file")


@dataclass(frozen=True)
class TelemetryConfig:
    """Tracing and metrics: where spans go, how many are kept, and the Prometheus endpoint.

    OTLP details (endpoint, protocol, headers, timeout) come from the standard
    `OTEL_EXPORTER_OTLP_*` variables; see docs/observability.md.
    """

    # off | console | otlp, or a comma list such as "otlp,console"; OTEL_TRACES_EXPORTER
    # sets it too, where "none" means off.
    mode: str = "off"
    # Parent-based: a caller's sampling decision is kept; new traces are kept at this ratio.
    sample_ratio: float = 1.0
    # Records prompts and answers in spans. A privacy risk, so off unless asked for.
    capture_content: bool = False
    # The Prometheus scrape endpoint; port 0 = off.
    prometheus_port: int = 0
    prometheus_host: str = "127.0.0.1"
    service_name: str = "tierroute"


# Rolling budget windows a tenant may name, in seconds.
BUDGET_WINDOWS: dict[str, float] = {"1h": 3600.0, "1d": 86_400.0, "30d": 30 * 86_400.0}
BUDGET_MODES = ("reject", "cheapest")


@dataclass(frozen=True)
class TenantConfig:
    """One tenant's limits (`[tenants.<id>]`); 0 means no limit. `id` "*" covers every tenant
    without a table of its own, each with budgets and limits of its own (docs/tenancy.md)."""

    id: str
    # USD the tenant may spend over the rolling budget_window (1h, 1d or 30d).
    budget_usd: float = 0.0
    budget_window: str = "1d"
    requests_per_minute: int = 0
    # Model tokens (input + output) over the last minute; calls still running count at
    # their worst case.
    tokens_per_minute: int = 0
    # reject: RESOURCE_EXHAUSTED; cheapest: answer from the cheap tier, unjudged.
    on_budget_exhausted: str = "reject"

    def __post_init__(self) -> None:
        if not self.id:
            raise ConfigError("a tenant's id must not be empty")
        if self.budget_window not in BUDGET_WINDOWS:
            raise ConfigError(
                f"tenants.{self.id}.budget_window must be one of {', '.join(BUDGET_WINDOWS)}, "
                f"not {self.budget_window!r}"
            )
        if self.on_budget_exhausted not in BUDGET_MODES:
            raise ConfigError(
                f"tenants.{self.id}.on_budget_exhausted must be 'reject' or 'cheapest', "
                f"not {self.on_budget_exhausted!r}"
            )
        for name in ("budget_usd", "requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tenants.{self.id}.{name} must not be negative")

    @property
    def window_s(self) -> float:
        """The budget window in seconds."""
        return BUDGET_WINDOWS[self.budget_window]


def tenants_from_mapping(
    data: Mapping[str, Any], where: str = "tenants"
) -> tuple[TenantConfig, ...]:
    """`{id: {budget_usd: ..., ...}}` (a `[tenants.<id>]` table) as tenant configs."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table of [tenants.<id>] tables")
    tenants = []
    for tenant_id, values in data.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}.{tenant_id} must be a table")
        if "id" in values:
            raise ConfigError(f"{where}.{tenant_id}: the table's name is the tenant id")
        tenants.append(build(TenantConfig, {**values, "id": tenant_id}, f"{where}.{tenant_id}"))
    return tuple(tenants)


@dataclass(frozen=True)
class TenancyConfig:
    """Where tenants' spend, sessions and request ids are kept, and how limits reload."""

    # "" = the query log's database (querylog.url) when the query log is enabled, else this
    # process's memory; "memory", sqlite:///PATH or postgresql://... name one explicitly.
    # Replicas share budgets, sessions and request ids only through PostgreSQL.
    state_url: Secret = field(default_factory=lambda: Secret(""))
    # A TOML file of [tenants.<id>] tables, reloaded on change and on SIGHUP; when set, the
    # main configuration must not hold [tenants] itself.
    tenants_file: Path | None = None
    # Seconds between checks of the tokens and tenants files for changes; 0 = SIGHUP only.
    reload_poll_s: float = 2.0
    # With authentication off, the call metadata entry that names the tenant when the
    # request's tenant_id is empty (with authentication on, the token names it).
    tenant_header: str = "x-tierroute-tenant"
    # A session's floor (and open agent loop) is forgotten this long after its last answer.
    session_ttl_s: float = 3600.0
    # A Cascade's result is returned for a repeated request id this long after it ended.
    idempotency_ttl_s: float = 86_400.0


DEGRADE_ACTIONS = ("skip_to_next", "fall_back", "fail")


@dataclass(frozen=True)
class BreakerConfig:
    """Per-tier circuit breakers, and what Cascade does while a tier's breaker is open.

    A tier's breaker opens after `failure_threshold` retryable failures in a row, or when at
    least `min_calls` calls in the last `window_s` seconds failed at `failure_rate` or more;
    after `cooldown_s` it lets `half_open_max_calls` trial calls through: a success closes
    it, a failure opens it again. Terminal errors and cancellations never count.
    """

    enabled: bool = True
    # Retryable failures in a row that open the breaker; 0 turns this rule off.
    failure_threshold: int = 5
    # Share of failed calls in the window that opens the breaker; 0 turns this rule off.
    failure_rate: float = 0.5
    min_calls: int = 20
    window_s: float = 30.0
    cooldown_s: float = 10.0
    half_open_max_calls: int = 1
    # "tier=action" entries; action is skip_to_next (the next tier up answers), fall_back
    # (the answer already held, else the nearest tier below, unjudged) or fail (UNAVAILABLE).
    # Unlisted tiers skip to the next tier, and the top tier, which has none, falls back.
    degrade: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ConfigError("breaker.failure_rate must be within [0, 1]")
        if self.window_s <= 0 or self.half_open_max_calls < 1:
            raise ConfigError(
                "breaker.window_s must be positive and breaker.half_open_max_calls at least 1"
            )

    def actions(self, tier_names: Sequence[str]) -> dict[str, str]:
        """The degradation action of every tier; ConfigError for an entry that cannot work."""
        actions = dict.fromkeys(tier_names[:-1], "skip_to_next")
        actions[tier_names[-1]] = "fall_back"
        for entry in self.degrade:
            tier, sep, action = (part.strip() for part in entry.partition("="))
            if not sep or action not in DEGRADE_ACTIONS:
                raise ConfigError(
                    f"breaker.degrade entry {entry!r} must be TIER=ACTION with ACTION one of "
                    f"{', '.join(DEGRADE_ACTIONS)}"
                )
            if tier not in actions:
                raise ConfigError(f"breaker.degrade names unknown tier {tier!r}")
            if tier == tier_names[-1] and action == "skip_to_next":
                raise ConfigError(f"breaker.degrade: the top tier {tier!r} has no next tier")
            actions[tier] = action
        return actions


EXT_PROC_FAILURE_MODES = ("open", "closed")


@dataclass(frozen=True)
class ExtProcConfig:
    """The Envoy external processor (envoy.service.ext_proc.v3) on the gRPC port."""

    enabled: bool = True
    # What a request gets when the processor cannot route it (a body that is not a Messages
    # API request, a routing failure): "open" lets it through unchanged, "closed" answers it
    # with an Anthropic error (400, 413 or 500) from Envoy. Envoy's own failure_mode_allow
    # covers the processor being unreachable; set the two alike (docs/deploy.md).
    failure_mode: str = "open"
    # Requests to this path (query string aside), method POST, are routed; others pass.
    path: str = "/v1/messages"
    # The model name that asks for routing; `ALIAS@...` does too.
    alias: str = "tierroute"
    # Whether requests naming a concrete model are routed as well (so code that names a
    # model is routed without changes); false routes only requests naming the alias.
    route_named_models: bool = True

    def __post_init__(self) -> None:
        if self.failure_mode not in EXT_PROC_FAILURE_MODES:
            raise ConfigError("ext_proc.failure_mode must be 'open' or 'closed'")
        if not self.path.startswith("/"):
            raise ConfigError("ext_proc.path must start with '/'")
        if not self.alias:
            raise ConfigError("ext_proc.alias must not be empty")


@dataclass(frozen=True)
class AdaptConfig:
    """Operating points that follow the traffic (`tierroute adapt`, docs/operations.md): the
    server re-solves its value policy's operating points from its own query log every
    `interval_s` seconds (0 = off) and promotes the result in the model registry."""

    interval_s: float = 0.0
    # The log window each run reads: the last this many seconds (0 = the whole log).
    window_s: float = 7 * 86400.0
    # Fewer planned Cascades than this in the window: nothing changes.
    min_decisions: int = 200
