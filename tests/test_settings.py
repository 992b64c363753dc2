"""Settings are built from files and an injected environment, validated, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierroute.errors import ConfigError
from tierroute.settings import Settings


def test_defaults_have_three_tiers_cheapest_first() -> None:
    """The bundled config defines three tiers with rising prices."""
    s = Settings.from_env({})
    assert [t.name for t in s.tiers] == ["cheap", "mid", "expensive"]
    prices = [t.input_usd_per_mtok for t in s.tiers]
    assert prices == sorted(prices)


def test_environment_overrides_any_field() -> None:
    """TIERROUTE_<SECTION>_<FIELD> and the short aliases override the file."""
    s = Settings.from_env({"TIERROUTE_PORT": "6001", "TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "0.5"})
    assert s.server.port == 6001
    assert s.cascade.judge_sample_rate == 0.5


def test_config_file_replaces_tiers(tmp_path: Path) -> None:
    """A TIERROUTE_CONFIG file can configure a different set of tiers."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[[tiers]]\nname="a"\nmodel="m1"\ninput_usd_per_mtok=1\noutput_usd_per_mtok=2\n'
        '[[tiers]]\nname="b"\nmodel="m2"\ninput_usd_per_mtok=3\noutput_usd_per_mtok=4\n'
    )
    s = Settings.from_env({"TIERROUTE_CONFIG": str(path)})
    assert [t.model for t in s.tiers] == ["m1", "m2"]


def test_secret_never_prints() -> None:
    """The API key is hidden in repr and str of the settings."""
    s = Settings.from_env({"ANTHROPIC_API_KEY": "sk-ant-very-secret"})
    assert "very-secret" not in repr(s)
    assert s.anthropic.api_key.get() == "sk-ant-very-secret"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIERROUTE_PORT": "abc"}, "server.port"),
        ({"TIERROUTE_CASCADE_JUDGE_SAMPLE_RATE": "1.5"}, "judge_sample_rate"),
        ({"TIERROUTE_ROUTING_DEFAULT_STRATEGY": "magic"}, "default_strategy"),
        ({"TIERROUTE_SERVER_NOPE": "1"}, "server.nope"),
        ({"TIERROUTE_CONFIG": "/nonexistent/x.toml"}, "not found"),
        ({"TIERROUTE_QUERYLOG_COMMIT_DELAY_S": "-0.1"}, "commit_delay_s"),
        ({"TIERROUTE_QUERYLOG_COMMIT_DELAY_S": "5"}, "commit_delay_s"),
        ({"TIERROUTE_QUERYLOG_SEND_DELAY_S": "-0.001"}, "send_delay_s"),
        ({"TIERROUTE_QUERYLOG_SEND_DELAY_S": "0.5"}, "send_delay_s"),
    ],
)
def test_bad_configuration_is_a_clear_error(env: dict[str, str], message: str) -> None:
    """Unusable configuration raises ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_http_endpoint_is_on_port_8080_until_turned_off() -> None:
    """http.port is 8080 by default, on the gRPC host; TIERROUTE_HTTP_PORT=0 turns it off."""
    s = Settings.from_env({})
    assert (s.http.port, s.http.host) == (8080, "")
    assert Settings.from_env({"TIERROUTE_HTTP_PORT": "0"}).http.port == 0


def test_an_http_ping_interval_must_be_positive() -> None:
    """A stream cannot ping every 0 seconds."""
    with pytest.raises(ConfigError, match="ping_interval_s"):
        Settings.from_env({"TIERROUTE_HTTP_PING_INTERVAL_S": "0"})


def test_reference_tier_must_name_a_configured_tier() -> None:
    """routing.reference_tier names a configured tier, or is empty for the top tier."""
    env = {"TIERROUTE_ROUTING_REFERENCE_TIER": "mid"}
    assert Settings.from_env(env).routing.reference_tier == "mid"
    assert Settings.from_env({}).routing.reference_tier == ""
    with pytest.raises(ConfigError, match="reference_tier 'sonnet' is not a configured tier"):
        Settings.from_env({"TIERROUTE_ROUTING_REFERENCE_TIER": "sonnet"})
