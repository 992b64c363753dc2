"""`tierroute eval` on incomplete files and unreachable targets: counted results, not exits."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.offline.test_as_served import probed
from tierroute.model.bundle import THRESHOLDS_FILE
from tierroute.offline.evaluation.as_served import evaluate_as_served
from tierroute.offline.evaluation.eval_data import load_eval_data
from tierroute.offline.evaluation.harness import run_strategies
from tierroute.offline.evaluation.pipeline import Options, calibrate, evaluate
from tierroute.offline.evaluation.strategies import baseline_strategies, eval_settings
from tierroute.offline.evaluation.usable import usable_view
from tierroute.offline.training.trainer import TrainOptions, train_bundle
from tierroute.settings import Settings

FOLDS = 3
CHEAP, MID, TOP = "flash-model", "pro-model", "big-model"


def _settings() -> Settings:
    return Settings.from_env({})


def _file(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """90 fixture records, every fifth edited by `edit`."""
    records = copy.deepcopy(make_records(90))
    for i, record in enumerate(records):
        if i % 5 == 0:
            edit(record)
    return write_dataset(tmp_path / f"{name}.jsonl.gz", records)


def _drop(model: str, *fields: str) -> Callable[[dict[str, Any]], None]:
    def edit(record: dict[str, Any]) -> None:
        for field in fields:
            record["models"][model].pop(field)

    return edit


def test_a_missing_answer_text_is_kept_and_counted(tmp_path: Path) -> None:
    """A tier's answer without `response` is served as empty text and counted as such."""
    path = _file(tmp_path, "noresponse", _drop(CHEAP, "response"))
    view, check = usable_view(path, tmp_path / "view")
    assert view == path
    assert check["counts"] == {"empty_answer_text": 18}
    assert check["evaluated"] == 90


def test_an_empty_answer_is_kept_and_counted(tmp_path: Path) -> None:
    """An empty answer text is an answer: kept, scored by its grade, and counted."""
    path = _file(tmp_path, "empty", lambda r: r["models"][MID].update(response="", pred=""))
    _, check = usable_view(path, tmp_path / "view")
    assert check["counts"] == {"empty_answer_text": 18}
    assert check["skipped"] == 0


def test_a_tier_model_without_token_counts_skips_the_record(tmp_path: Path) -> None:
    """A record whose tier model cannot be priced is left out and counted."""
    path = _file(tmp_path, "notokens", _drop(TOP, "input_tokens", "output_tokens"))
    view, check = usable_view(path, tmp_path / "view")
    assert view != path
    assert check["counts"] == {"tier_model_untokened": 18}
    assert len(load_eval_data(view)) == 72


def test_a_tier_model_without_a_grade_skips_the_record(tmp_path: Path) -> None:
    """A record whose tier model has no `correct` cannot be scored: left out and counted."""
    path = _file(tmp_path, "nocorrect", _drop(MID, "correct"))
    _, check = usable_view(path, tmp_path / "view")
    assert check["counts"] == {"tier_model_ungraded": 18}
    assert check["skipped"] == 18
    assert "skipped" in check["rules"]["tier_model_ungraded"]


def test_another_model_lacking_fields_is_dropped_from_its_record(tmp_path: Path) -> None:
    """A model outside the tiers without a grade is dropped; its record stays."""

    def extra(record: dict[str, Any]) -> None:
        record["models"]["other-model"] = {"response": "hello", "pred": "A"}

    path = _file(tmp_path, "other", extra)
    view, check = usable_view(path, tmp_path / "view")
    assert check["counts"] == {"other_model_dropped": 18}
    assert check["evaluated"] == 90
    assert len(load_eval_data(view)) == 90


def test_a_streamed_empty_answer_has_no_first_token_instead_of_an_assertion(
    tmp_path: Path,
) -> None:
    """Answering empty recorded texts the streamed way leaves their first token unset."""
    path = _file(tmp_path, "empty", lambda r: r["models"][CHEAP].update(response=""))
    data = load_eval_data(path)
    settings = eval_settings(_settings(), data, "config")
    (cheap, *_) = baseline_strategies(settings)
    outcomes = run_strategies(data, [cheap], stream=True)[cheap.name]
    firsts = [o.first_token_ms for o in outcomes]
    assert sum(t is None for t in firsts) == 18
    assert all(t is not None and t > 0 for i, t in enumerate(firsts) if i % 5)


def _defective(tmp_path: Path) -> Path:
    records = probed(make_records(150))
    for i, record in enumerate(records):
        if i % 10 == 0:
            record["models"][CHEAP]["response"] = ""
        elif i % 10 == 1:
            record["models"][TOP].pop("output_tokens")
    return write_dataset(tmp_path / "defective.jsonl.gz", records)


@pytest.fixture(scope="module")
def strict_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated bundle whose shipped target is a quality of 0.9999, out of every
    fixture file's reach (always-top answers about 86 % right there)."""
    bundle = tmp_path_factory.mktemp("strict") / "bundle"
    small_data = write_dataset(bundle.parent / "train.jsonl.gz", probed(make_records(300)))
    train_bundle(small_data, bundle, TrainOptions(folds=FOLDS, progress=False))
    calibrate(
        small_data,
        bundle / THRESHOLDS_FILE,
        _settings(),
        None,
        Options(folds=FOLDS, model_dir=bundle),
        report_path=bundle.parent / "slices.json",
    )
    document = json.loads((bundle / THRESHOLDS_FILE).read_text())
    document["cascade"]["target"] = {"kind": "min_quality", "value": 0.9999}
    (bundle / THRESHOLDS_FILE).write_text(json.dumps(document))
    return bundle


@pytest.fixture(scope="module")
def defective_report(
    strict_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One cross-fitted eval of a file with empty answers and unpriceable records."""
    tmp = tmp_path_factory.mktemp("defective")
    path = _defective(tmp)
    return evaluate(path, tmp / "out", _settings(), Options(folds=FOLDS, model_dir=strict_bundle))


def test_an_unreachable_target_is_reported_and_the_run_succeeds(
    defective_report: dict[str, Any],
) -> None:
    """The shipped target no configuration meets on the file is listed as unattainable,
    with what the run did instead, and every strategy is still scored."""
    (entry,) = (e for e in defective_report["unattainable"] if "target" in e["what"])
    assert "0.9999" in entry["target"]
    assert entry["instead"].startswith("cross-fitted toward")
    assert "shipped@parity" in defective_report["strategies"]


def test_the_eval_report_counts_skipped_and_empty_records(
    defective_report: dict[str, Any],
) -> None:
    """report.json says how many records were evaluated, skipped, and answered empty."""
    check = defective_report["records_check"]
    assert check["counts"] == {"empty_answer_text": 15, "tier_model_untokened": 15}
    assert defective_report["n"] == check["evaluated"] == 135


def test_as_served_counts_skipped_and_empty_records(strict_bundle: Path, tmp_path: Path) -> None:
    """The as-served report carries the same records check."""
    report = evaluate_as_served(
        _defective(tmp_path), tmp_path / "out", _settings(), Options(model_dir=strict_bundle)
    )
    assert report["records_check"]["skipped"] == 15
    assert report["n"] == 135
