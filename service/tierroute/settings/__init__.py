"""One frozen settings object, built once from a TOML file and an injectable environment.

Precedence, lowest first: the defaults below, the bundled `default_config.toml`, the file
named by `TIERROUTE_CONFIG`, then environment variables. Every field of every section can be
set as `TIERROUTE_<SECTION>_<FIELD>` (for example `TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE=0.5`);
a few common ones have short aliases (see `_ALIASES`). Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tierroute.errors import ConfigError
from tierroute.settings.parsing import Secret, build, merge, read_toml, section_types
from tierroute.settings.sections import (
    BUDGET_MODES,
    BUDGET_WINDOWS,
    DEGRADE_ACTIONS,
    EXT_PROC_FAILURE_MODES,
    JUDGE_BILLING_MODES,
    ON_UNFAMILIAR_CHOICES,
    QUERYLOG_WRITERS,
    AdaptConfig,
    AnthropicConfig,
    AuthConfig,
    BreakerConfig,
    CascadeConfig,
    ExtProcConfig,
    HeuristicConfig,
    HttpConfig,
    LimitsConfig,
    ProbeConfig,
    QueryLogConfig,
    ReplayConfig,
    RoutingConfig,
    ServerConfig,
    ShadowConfig,
    TelemetryConfig,
    TenancyConfig,
    TenantConfig,
    TierConfig,
    TlsConfig,
    tenants_from_mapping,
)

__all__ = [
    "BUDGET_MODES",
    "BUDGET_WINDOWS",
    "DEGRADE_ACTIONS",
    "EXT_PROC_FAILURE_MODES",
    "JUDGE_BILLING_MODES",
    "ON_UNFAMILIAR_CHOICES",
    "QUERYLOG_WRITERS",
    "AdaptConfig",
    "AnthropicConfig",
    "AuthConfig",
    "BreakerConfig",
    "CascadeConfig",
    "ExtProcConfig",
    "HeuristicConfig",
    "HttpConfig",
    "LimitsConfig",
    "ProbeConfig",
    "QueryLogConfig",
    "ReplayConfig",
    "RoutingConfig",
    "Secret",
    "ServerConfig",
    "Settings",
    "ShadowConfig",
    "TelemetryConfig",
    "TenancyConfig",
    "TenantConfig",
    "TierConfig",
    "TlsConfig",
    "tenants_from_mapping",
]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_BUNDLED_CONFIG = _PACKAGE_DIR / "default_config.toml"


@dataclass(frozen=True)
class Settings:
    """Everything tierroute is configured with; built once in `__main__`."""

    server: ServerConfig = field(default_factory=ServerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    heuristic: HeuristicConfig = field(default_factory=HeuristicConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    anthropic: AnthropicConfig = field(default_factory=AnthropicConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    querylog: QueryLogConfig = field(default_factory=QueryLogConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    tenancy: TenancyConfig = field(default_factory=TenancyConfig)
    ext_proc: ExtProcConfig = field(default_factory=ExtProcConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    tiers: tuple[TierConfig, ...] = ()
    tenants: tuple[TenantConfig, ...] = ()
    probes: tuple[ProbeConfig, ...] = ()

    def tier(self, name: str) -> TierConfig:
        """The tier called `name`; ConfigError when there is none."""
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise ConfigError(f"unknown tier {name!r}; configured: {[t.name for t in self.tiers]}")

    def tier_index(self, name: str) -> int:
        """Position of tier `name`, 0 = cheapest."""
        return self.tiers.index(self.tier(name))

    def agreement_probe(self) -> ProbeConfig | None:
        """The probe the agreement modes call (`cascade.probe`), None when none is set up."""
        for probe in self.probes:
            if self.cascade.probe in ("", probe.label):
                return probe
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """Build settings from the bundled file, `TIERROUTE_CONFIG` and the environment."""
        data: dict[str, Any] = {}
        for path in (_BUNDLED_CONFIG, environ.get("TIERROUTE_CONFIG")):
            if path:
                merge(data, read_toml(Path(path)))
        for env_name, (section, key) in _ALIASES.items():
            if env_name in environ:
                data.setdefault(section, {})[key] = environ[env_name]
        for section in section_types(cls):
            prefix = f"TIERROUTE_{section.upper()}_"
            for env_name, value in environ.items():
                if env_name.startswith(prefix):
                    data.setdefault(section, {})[env_name[len(prefix) :].lower()] = value
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build settings from nested mappings, as read from TOML; unknown keys are errors."""
        kwargs: dict[str, Any] = {}
        sections = section_types(cls)
        for key, value in data.items():
            if key == "tiers":
                kwargs["tiers"] = tuple(build(TierConfig, t, "tiers") for t in value)
            elif key == "tenants":
                kwargs["tenants"] = tenants_from_mapping(value)
            elif key == "probes":
                kwargs["probes"] = _probes(value)
            elif key in sections:
                kwargs[key] = build(sections[key], value, key)
            else:
                raise ConfigError(f"unknown configuration section {key!r}")
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError when the settings cannot work."""
        names = self._validate_tiers()
        self._validate_probes(names)
        self._validate_choices()
        self._validate_reference_tier(names)
        for name in ("judge_sample_rate", "speculative_bound", "self_confidence_threshold"):
            if not 0.0 <= getattr(self.cascade, name) <= 1.0:
                raise ConfigError(f"cascade.{name} must be within [0, 1]")
        for name in ("audit_sample_rate", "coverage_sample_rate"):
            if not 0.0 <= getattr(self.querylog, name) <= 1.0:
                raise ConfigError(f"querylog.{name} must be within [0, 1]")
        if not 0.0 <= self.shadow.sample_rate <= 1.0:
            raise ConfigError("shadow.sample_rate must be within [0, 1]")
        self._validate_adapt()
        server = self.server
        if server.max_concurrent_rpcs and server.max_in_flight >= server.max_concurrent_rpcs:
            raise ConfigError("server.max_in_flight must be below server.max_concurrent_rpcs")
        if not 0.0 <= self.telemetry.sample_ratio <= 1.0:
            raise ConfigError("telemetry.sample_ratio must be within [0, 1]")
        self.breaker.actions(names)
        if self.tenants and self.tenancy.tenants_file is not None:
            raise ConfigError(
                "set tenants in one place: [tenants] in the configuration or "
                "tenancy.tenants_file, not both"
            )
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value):
                for f in dataclasses.fields(value):
                    v = getattr(value, f.name)
                    if isinstance(v, int | float) and not isinstance(v, bool) and v < 0:
                        raise ConfigError(f"{section.name}.{f.name} must not be negative")

    def _validate_reference_tier(self, names: Sequence[str]) -> None:
        """ConfigError when routing.reference_tier names no configured tier."""
        if self.routing.reference_tier and self.routing.reference_tier not in names:
            raise ConfigError(
                f"routing.reference_tier {self.routing.reference_tier!r} is not a configured "
                f"tier; configured: {list(names)}"
            )

    def _validate_adapt(self) -> None:
        """ConfigError when the server is to adapt its operating points with nothing to
        adapt from or to: no model registry, or no query log."""
        if self.adapt.interval_s > 0 and not (
            self.routing.registry_dir is not None
            and str(self.routing.registry_dir)
            and self.querylog.enabled
        ):
            raise ConfigError(
                "adapt.interval_s needs a model registry (routing.registry_dir) and the "
                "query log (querylog.enabled) to adapt from"
            )

    def _validate_tiers(self) -> list[str]:
        """The tier names; ConfigError for too few tiers, a repeated name or no output."""
        if len(self.tiers) < 2:
            raise ConfigError("configure at least two tiers, cheapest first")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ConfigError(f"tier names must be unique: {names}")
        for tier in self.tiers:
            if tier.max_output_tokens < 1:
                raise ConfigError(f"tiers.{tier.name}.max_output_tokens must be at least 1")
        return names

    def _validate_probes(self, tier_names: Sequence[str]) -> None:
        """ConfigError for a probe that cannot work, or a `cascade.probe` naming none."""
        labels = [p.label for p in self.probes]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"probe names must be unique: {labels}")
        for probe in self.probes:
            where = f"probes.{probe.label}"
            if probe.label in tier_names:
                raise ConfigError(f"{where}: a probe may not share a tier's name")
            if probe.input_usd_per_mtok < 0 or probe.output_usd_per_mtok < 0:
                raise ConfigError(f"{where}: prices must not be negative")
            if probe.max_output_tokens < 1:
                raise ConfigError(f"{where}.max_output_tokens must be at least 1")
        if self.cascade.probe and self.agreement_probe() is None:
            raise ConfigError(
                f"cascade.probe {self.cascade.probe!r} names no configured probe; "
                f"configured: {labels}"
            )

    def _validate_choices(self) -> None:
        """ConfigError for a setting that names none of the values it may take."""
        if self.routing.default_strategy not in ("heuristic", "classifier"):
            raise ConfigError("routing.default_strategy must be 'heuristic' or 'classifier'")
        if self.routing.default_rule not in ("calibrated", "published"):
            raise ConfigError("routing.default_rule must be 'calibrated' or 'published'")
        if self.routing.on_unfamiliar not in ON_UNFAMILIAR_CHOICES:
            raise ConfigError(
                f"routing.on_unfamiliar must be one of {', '.join(ON_UNFAMILIAR_CHOICES)}, "
                f"not {self.routing.on_unfamiliar!r}"
            )
        if self.anthropic.backend not in ("auto", "anthropic", "replay"):
            raise ConfigError("anthropic.backend must be 'auto', 'anthropic' or 'replay'")
        if self.replay.trio not in ("default", "claude"):
            raise ConfigError("replay.trio must be 'default' or 'claude'")
        if self.replay.judge_billing not in JUDGE_BILLING_MODES:
            raise ConfigError(
                f"replay.judge_billing must be one of {', '.join(JUDGE_BILLING_MODES)}, "
                f"not {self.replay.judge_billing!r}"
            )
        modes = {m.strip() for m in self.telemetry.mode.split(",")} - {""}
        if not modes <= {"off", "none", "console", "otlp"}:
            raise ConfigError("telemetry.mode must be off, console, otlp or a comma list of them")


# Short environment names for the settings people set most.
_ALIASES: dict[str, tuple[str, str]] = {
    "TIERROUTE_HOST": ("server", "host"),
    "TIERROUTE_PORT": ("server", "port"),
    "TIERROUTE_MODEL_DIR": ("routing", "model_dir"),
    "ANTHROPIC_API_KEY": ("anthropic", "api_key"),
    "ANTHROPIC_BASE_URL": ("anthropic", "base_url"),
    "TIERROUTE_REPLAY_DATA": ("replay", "data"),
    "TIERROUTE_DB_URL": ("querylog", "url"),
    # The standard OpenTelemetry names; TIERROUTE_TELEMETRY_* still wins over them.
    "OTEL_TRACES_EXPORTER": ("telemetry", "mode"),
    "OTEL_SERVICE_NAME": ("telemetry", "service_name"),
}


def _probes(value: Any) -> tuple[ProbeConfig, ...]:
    """The `[[probes]]` array of tables."""
    if isinstance(value, Mapping) or not isinstance(value, list | tuple):
        raise ConfigError("probes must be an array of tables ([[probes]])")
    return tuple(build(ProbeConfig, p, f"probes[{i}]") for i, p in enumerate(value))
