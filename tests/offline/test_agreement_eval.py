"""The agreement rules in the evaluation, the probe it replays, and `eval --trio`."""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import CLAUDE, TRIO, make_records, write_dataset
from tierroute.errors import ConfigError
from tierroute.offline.cli.modelling import add_eval_parser
from tierroute.offline.evaluation.agreement import (
    AGREEMENT,
    AGREEMENT_MID,
    agreement_strategies,
    eval_probe,
)
from tierroute.offline.evaluation.eval_data import load_eval_data
from tierroute.offline.evaluation.harness import run_strategies
from tierroute.offline.evaluation.strategies import eval_settings
from tierroute.offline.evaluation.trio import trio_view
from tierroute.providers import final_answer
from tierroute.settings import ProbeConfig, Settings

RECORDS = make_records(30, claude=True)
PROBE_KEY = CLAUDE["cheap"]


def settings_with_probe(*replay_models: str) -> Settings:
    probe = ProbeConfig("older-claude", 0.25, 1.25, name="probe", replay_models=replay_models)
    return dataclasses.replace(Settings.from_env({}), probes=(probe,))


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    """A small recorded-outcome file whose records also hold the Claude trio."""
    return write_dataset(tmp_path / "dev.jsonl.gz", RECORDS)


def test_eval_probe_plays_the_replay_models_the_data_holds(data_file: Path) -> None:
    """The probe is played by its replay models present in the data, at the dearest price."""
    data = load_eval_data(data_file)
    probe = eval_probe(settings_with_probe("not-recorded", PROBE_KEY, TRIO["mid"]), data)
    assert probe is not None
    assert probe.replay_models == (PROBE_KEY, TRIO["mid"])
    prices = [data.model_prices[k] for k in probe.replay_models]
    assert probe.input_usd_per_mtok == max(p[0] for p in prices)
    assert probe.output_usd_per_mtok == max(p[1] for p in prices)
    assert probe.model not in {t.model for t in eval_settings(Settings.from_env({}), data).tiers}


def test_no_recorded_probe_means_no_agreement_strategies(data_file: Path) -> None:
    """With none of the probe's replay models in the data the rules are not evaluated."""
    data = load_eval_data(data_file)
    settings = eval_settings(settings_with_probe("not-recorded"), data)
    assert agreement_strategies(settings, data) == []


def expected_rule_a(record: dict[str, Any], data: Any, probe: ProbeConfig) -> float:
    """Rule A's bill for one record, from its recorded tokens and the calls the rule makes."""
    models = record["models"]

    def bill(key: str, price: tuple[float, float]) -> float:
        return (
            models[key]["input_tokens"] * price[0] + models[key]["output_tokens"] * price[1]
        ) / 1e6

    tier_price = data.pricing.usd_per_mtok
    probe_price = (probe.input_usd_per_mtok, probe.output_usd_per_mtok)
    cheap, mid = (
        final_answer(models[TRIO["cheap"]]["response"]),
        final_answer(models[TRIO["mid"]]["response"]),
    )
    seen = final_answer(models[PROBE_KEY]["response"])
    cost = bill(TRIO["cheap"], tier_price["cheap"]) + bill(PROBE_KEY, probe_price)
    if cheap and cheap == seen:
        return cost
    cost += bill(TRIO["mid"], tier_price["mid"])
    if mid and mid in (cheap, seen):
        return cost
    return cost + bill(TRIO["expensive"], tier_price["expensive"])


def test_rule_a_costs_what_its_calls_cost(data_file: Path) -> None:
    """Each record's rule-A cost is its cheap, probe, mid and top calls' recorded tokens at
    their prices, exactly the calls the rule makes (the probe's included)."""
    data = load_eval_data(data_file)
    settings = eval_settings(settings_with_probe(PROBE_KEY), data)
    strategies = agreement_strategies(settings, data)
    outcomes = run_strategies(data, strategies)
    probe = strategies[0].plans[0].settings.probes[0]
    expected = [expected_rule_a(r, data, probe) for r in RECORDS]
    assert [o.cost_usd for o in outcomes[AGREEMENT]] == pytest.approx(expected, rel=1e-9)
    # Rule B never calls the top tier; on a first agreement both rules make the same calls.
    for a, b in zip(outcomes[AGREEMENT], outcomes[AGREEMENT_MID], strict=True):
        assert b.final_tier <= 1
        if a.final_tier == 0:
            assert b.cost_usd == pytest.approx(a.cost_usd)


def test_trio_view_keeps_records_with_the_trio_and_repoints_them(
    data_file: Path, tmp_path: Path
) -> None:
    """--trio keeps the records that hold all three keys, with tiers and labels re-pointed."""
    mixed = [*RECORDS[:5], *make_records(4, seed=3)]
    source = write_dataset(tmp_path / "mixed.jsonl.gz", mixed)
    view, info = trio_view(source, list(CLAUDE.values()), tmp_path / "view.jsonl.gz")
    with gzip.open(view, "rt", encoding="utf-8") as fh:
        kept = [json.loads(line) for line in fh]
    assert [r["id"] for r in kept] == [r["id"] for r in RECORDS[:5]]
    assert all(r["tiers"] == CLAUDE for r in kept)
    for record in kept:
        right = [t for t in ("cheap", "mid", "expensive") if record["models"][CLAUDE[t]]["correct"]]
        assert record["min_tier_correct"] == (right[0] if right else "none")
    assert sum(info["records_per_task"].values()) == 5
    assert load_eval_data(view).trio == CLAUDE


def test_trio_with_an_unknown_model_key_is_a_clear_error(data_file: Path, tmp_path: Path) -> None:
    """A --trio key that no record holds is a ConfigError naming it and the keys there are."""
    with pytest.raises(ConfigError, match=r"no record holds model key\(s\) \['claude-9'\]"):
        trio_view(data_file, [CLAUDE["cheap"], CLAUDE["mid"], "claude-9"], tmp_path / "v.gz")
    with pytest.raises(ConfigError, match="3 different model keys"):
        trio_view(data_file, [CLAUDE["cheap"], CLAUDE["mid"]], tmp_path / "v.gz")


def test_cli_eval_trio_with_an_unknown_key_exits_2(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute eval --trio` naming a key the data lacks exits 2 with one clear line."""
    parser = argparse.ArgumentParser(prog="tierroute")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "eval",
            "--data",
            str(data_file),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--trio",
            f"{CLAUDE['cheap']},{CLAUDE['mid']},gpt-9",
        ]
    )
    assert args.func(args, Settings.from_env({}), {}) == 2
    err = capsys.readouterr().err
    assert "tierroute eval: error: --trio: no record holds model key(s) ['gpt-9']" in err
    assert not (tmp_path / "o").exists()
