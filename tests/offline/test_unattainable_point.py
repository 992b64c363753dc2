"""`tierroute calibrate` with a target no price meets: a marked point, a warning, exit 0."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_settings, running_server
from tests.offline.test_as_served import probed
from tierroute.__main__ import main
from tierroute.model.bundle import THRESHOLDS_FILE
from tierroute.offline.training.trainer import TrainOptions, train_bundle
from tierroute.v1 import tierroute_pb2 as pb

FOLDS = 3


@pytest.fixture(scope="module")
def unreachable(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, int, str, dict[str, Any]]:
    """A bundle calibrated by the CLI toward every answer correct, which no price reaches
    on a fixture where some records no tier answers correctly."""
    root = tmp_path_factory.mktemp("unattainable")
    data = write_dataset(root / "data.jsonl.gz", probed(make_records(300, claude=True)))
    bundle = root / "bundle"
    train_bundle(data, bundle, TrainOptions(folds=FOLDS, progress=False))
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        code = main(
            [
                "calibrate",
                "--data",
                str(data),
                "--model-dir",
                str(bundle),
                "--out",
                str(bundle / THRESHOLDS_FILE),
                "--folds",
                str(FOLDS),
                "--target-quality",
                "1.0",
                "--quiet",
            ],
            environ={},
        )
    assert code == 0, buffer.getvalue()
    report = json.loads((bundle / "thresholds.slices.json").read_text())
    return data, bundle, code, buffer.getvalue(), report


def test_calibrate_exits_0_and_marks_the_unreachable_point(
    unreachable: tuple[Path, Path, int, str, dict[str, Any]],
) -> None:
    """The unreachable point is marked attainable false with its target and what it reached,
    in thresholds.json and the report, with one warning line; calibrate exits 0."""
    _, bundle, code, stderr, report = unreachable
    assert code == 0, stderr
    document = json.loads((bundle / THRESHOLDS_FILE).read_text())
    custom = document["cascade"]["value"]["operating_points"]["custom"]
    assert custom["attainable"] is False
    assert custom["in_sample_quality"] < custom["target"]["value"]
    assert report["unattainable"]["custom"]["in_sample_quality"] == custom["in_sample_quality"]
    warnings = [line for line in stderr.splitlines() if "warning: no price meets" in line]
    assert len(warnings) == 1
    assert "operating point custom" in warnings[0]


async def test_the_real_server_serves_the_marked_bundle(
    unreachable: tuple[Path, Path, int, str, dict[str, Any]],
) -> None:
    """A server loads the bundle with the unreachable point and answers at it."""
    data, bundle, _, _, _ = unreachable
    settings = make_settings(
        {
            "TIERROUTE_MODEL_DIR": str(bundle),
            "TIERROUTE_REPLAY_DATA": str(data),
            "TIERROUTE_REPLAY_TIME_SCALE": "0",
        }
    )
    async with running_server(settings, environ={}) as running:
        response = await running.stub.Cascade(
            pb.CascadeRequest(
                query="Question 1: add the apples?",
                policy=pb.RoutingPolicy(operating_point="custom"),
            )
        )
    assert response.tier.name in {t.name for t in settings.tiers}
