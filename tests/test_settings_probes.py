"""`[[probes]]`: models outside the answer ladder, read from config files and validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tierroute.errors import ConfigError
from tierroute.settings import Settings


def config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return {"TIERROUTE_CONFIG": str(path)}


def test_bundled_config_ships_an_older_claude_as_the_probe() -> None:
    """The bundled config names one probe, cheaper than the cheapest tier, for agreement."""
    s = Settings.from_env({})
    probe = s.agreement_probe()
    assert probe is not None
    assert probe.label == "probe"
    assert probe.model.startswith("claude-")
    assert probe.input_usd_per_mtok < s.tiers[0].input_usd_per_mtok
    assert probe.replay_models == ("deepseek", "gpt-4o-mini-2024-07-18")


def test_config_file_replaces_probes_and_names_default_to_the_model(tmp_path: Path) -> None:
    """A probe without a name goes by its model id; cascade.probe picks one by name."""
    env = config(
        tmp_path,
        '[cascade]\nprobe = "m2"\n'
        '[[probes]]\nmodel = "m1"\ninput_usd_per_mtok = 0.1\noutput_usd_per_mtok = 0.2\n'
        '[[probes]]\nmodel = "m2"\ninput_usd_per_mtok = 0.3\noutput_usd_per_mtok = 0.4\n',
    )
    s = Settings.from_env(env)
    assert [p.label for p in s.probes] == ["m1", "m2"]
    probe = s.agreement_probe()
    assert probe is not None
    assert probe.model == "m2"
    tier = probe.as_tier()
    assert (tier.name, tier.input_usd_per_mtok, tier.output_usd_per_mtok) == ("m2", 0.3, 0.4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[probes]]\nname = "p"\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n', "model"),
        ('[[probes]]\nmodel = "m"\ninput_usd_per_mtok = -1\noutput_usd_per_mtok = 1\n', "negative"),
        ('[[probes]]\nmodel = "m"\nprice = 1\n', "unknown setting probes[0].price"),
        (
            '[[probes]]\nname = "cheap"\nmodel = "m"\ninput_usd_per_mtok = 1\n'
            "output_usd_per_mtok = 1\n",
            "share a tier's name",
        ),
        (
            '[[probes]]\nmodel = "m"\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n'
            '[[probes]]\nmodel = "m"\ninput_usd_per_mtok = 2\noutput_usd_per_mtok = 2\n',
            "unique",
        ),
        ('[cascade]\nprobe = "nowhere"\n', "names no configured probe"),
        ('[probes]\nmodel = "m"\n', "array of tables"),
        (
            '[[probes]]\nmodel = "m"\ninput_usd_per_mtok = "cheap"\noutput_usd_per_mtok = 1\n',
            "cannot read",
        ),
    ],
)
def test_bad_probe_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    """A probe that cannot work is one ConfigError that says what is wrong."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(config(tmp_path, text))
