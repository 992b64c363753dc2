"""The model registry on disk: versions, promotion history, rollback, atomic and locked writes."""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest

from tests.fixtures import make_records, write_dataset
from tests.helpers import make_variant
from tierroute.errors import ConfigError, ModelLoadError, NotFound
from tierroute.model.registry import REGISTRY_FILE, ModelRegistry, bundle_version
from tierroute.offline.cli.operations import add_models_parser, add_rollback_parser
from tierroute.settings import Settings


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained bundle (300 synthetic records, 2 folds)."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("registry-bundle")
    data = write_dataset(root / "small.jsonl.gz", make_records(300))
    options = TrainOptions(folds=2, compare_none_labels=False, progress=False)
    train_bundle(data, root / "bundle", options)
    return root / "bundle"


@pytest.fixture
def registry(tmp_path: Path, bundle: Path) -> ModelRegistry:
    """An empty registry seeded, when first read, from the trained bundle."""
    return ModelRegistry(tmp_path / "models", seed=bundle)


def test_empty_registry_is_seeded_from_the_model_dir(registry: ModelRegistry, bundle: Path) -> None:
    """The first read of an empty registry adds and promotes the seed bundle."""
    version = bundle_version(bundle)
    assert registry.promoted() == version
    assert (registry.root / version / "model.onnx").read_bytes() == (
        bundle / "model.onnx"
    ).read_bytes()
    state = registry.state()
    assert state.history == (version,)
    assert [e.action for e in state.events] == ["seed"]


def test_promotions_stack_and_rollback_pops_them(
    registry: ModelRegistry, bundle: Path, tmp_path: Path
) -> None:
    """Each promotion is pushed; each rollback restores the one before it."""
    seed = registry.promoted()
    for name in ("v2", "v3"):
        registry.promote(registry.add(make_variant(bundle, name, tmp_path / name)))
    assert registry.state().history == (seed, "v2", "v3")
    assert registry.rollback().promoted == "v2"
    assert registry.rollback().promoted == seed
    assert [e.action for e in registry.state().events] == [
        "seed",
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]


def test_rollback_with_no_earlier_promotion_is_refused(registry: ModelRegistry) -> None:
    """Rolling back the only promotion is a ConfigError that changes nothing."""
    seed = registry.promoted()
    with pytest.raises(ConfigError, match="no earlier promotion"):
        registry.rollback()
    assert registry.state().promoted == seed


def test_rollback_refuses_when_the_registry_moved_meanwhile(
    registry: ModelRegistry, bundle: Path, tmp_path: Path
) -> None:
    """A rollback that expects another promoted version leaves the registry as it is."""
    seed = registry.promoted()
    registry.promote(registry.add(make_variant(bundle, "v2", tmp_path / "v2")))
    with pytest.raises(ConfigError, match="changed meanwhile"):
        registry.rollback(expect=seed)
    assert registry.state().history == (seed, "v2")


def test_adding_a_bundle_twice_is_idempotent(registry: ModelRegistry, bundle: Path) -> None:
    """The same bundle added again is the same version, stored once."""
    assert registry.add(bundle) == registry.add(bundle)
    assert registry.versions() == [bundle_version(bundle)]


def test_a_different_model_under_a_held_version_is_refused(
    registry: ModelRegistry, bundle: Path, tmp_path: Path
) -> None:
    """Two different model files may not share one version name."""
    registry.add(bundle)
    impostor = make_variant(bundle, bundle_version(bundle), tmp_path / "impostor")
    (impostor / "model.onnx").write_bytes(b"other bytes")
    metadata = json.loads((impostor / "metadata.json").read_text())
    metadata["onnx_sha256"] = hashlib.sha256(b"other bytes").hexdigest()
    (impostor / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ConfigError, match="already holds a different"):
        registry.add(impostor)


def test_a_bundle_whose_model_does_not_match_its_metadata_is_refused(
    registry: ModelRegistry, bundle: Path, tmp_path: Path
) -> None:
    """A corrupt model.onnx is refused at the door, naming the file."""
    broken = make_variant(bundle, "broken", tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"corrupt")
    with pytest.raises(ModelLoadError, match=r"broken/model\.onnx"):
        registry.add(broken)
    assert "broken" not in registry.versions()


def test_promoting_an_unknown_version_is_not_found(registry: ModelRegistry) -> None:
    """Only versions the registry holds can be promoted."""
    registry.promoted()
    with pytest.raises(NotFound, match="no version 'v9'"):
        registry.promote("v9")


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 129])
def test_version_names_that_are_not_plain_directory_names_are_refused(
    registry: ModelRegistry, name: str
) -> None:
    """A version can never name a path outside the registry."""
    with pytest.raises(ConfigError, match="cannot name a registry directory"):
        registry.bundle_dir(name)


def test_changes_leave_no_temporary_files(
    registry: ModelRegistry, bundle: Path, tmp_path: Path
) -> None:
    """Writes go through a temporary file renamed into place, which never stays behind."""
    registry.promote(registry.add(make_variant(bundle, "v2", tmp_path / "v2")))
    registry.rollback()
    hidden = {p.name for p in registry.root.iterdir() if p.name.startswith(".")}
    assert hidden == {".registry.lock"}
    assert json.loads((registry.root / REGISTRY_FILE).read_text())["format"] == 1


def test_a_corrupt_registry_file_is_a_config_error_naming_it(registry: ModelRegistry) -> None:
    """A registry.json that is not JSON is reported with its path."""
    registry.promoted()
    (registry.root / REGISTRY_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"registry\.json"):
        registry.state()


def _promote_many(root: str, seed: str, names: list[str], barrier: object) -> None:
    registry = ModelRegistry(Path(root), seed=Path(seed))
    barrier.wait()  # type: ignore[attr-defined]
    for name in names:
        registry.promote(name)


def test_two_processes_promoting_at_once_lose_no_promotion(
    registry: ModelRegistry, bundle: Path, tmp_path: Path
) -> None:
    """Concurrent promotions from two processes all land in the history, none overwritten."""
    seed = registry.promoted()
    names = {p: [f"{p}-{i}" for i in range(15)] for p in ("a", "b")}
    for name in names["a"] + names["b"]:
        registry.add(make_variant(bundle, name, tmp_path / "variants" / name))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    processes = [
        ctx.Process(target=_promote_many, args=(str(registry.root), str(bundle), names[p], barrier))
        for p in ("a", "b")
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    history = registry.state().history
    assert len(history) == 31
    assert history[0] == seed
    for own in names.values():
        assert [v for v in history if v in own] == own


def _cli(add: object, argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    add(parser.add_subparsers())  # type: ignore[operator]
    args = parser.parse_args(argv)
    code: int = args.func(args, settings, {})
    return code


def test_rollback_command_pops_the_last_promotion(
    registry: ModelRegistry, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute rollback --registry DIR` restores the previous version and exits 0."""
    seed = registry.promoted()
    registry.promote(registry.add(make_variant(bundle, "v2", tmp_path / "v2")))
    settings = Settings.from_env({"TIERROUTE_MODEL_DIR": str(bundle)})
    assert _cli(add_rollback_parser, ["rollback", "--registry", str(registry.root)], settings) == 0
    assert capsys.readouterr().out.strip() == f"rolled back v2 -> {seed}"
    assert registry.state().promoted == seed


def test_rollback_command_exits_2_with_nothing_to_roll_back(
    registry: ModelRegistry, bundle: Path
) -> None:
    """With a single promotion, `tierroute rollback` exits 2."""
    registry.promoted()
    settings = Settings.from_env({"TIERROUTE_MODEL_DIR": str(bundle)})
    assert _cli(add_rollback_parser, ["rollback", "--registry", str(registry.root)], settings) == 2


def test_models_command_adds_promotes_and_lists(
    registry: ModelRegistry, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tierroute models --add B --promote V --json` adds, promotes and prints the registry."""
    registry.promoted()
    variant = make_variant(bundle, "v2", tmp_path / "v2")
    settings = Settings.from_env({"TIERROUTE_MODEL_DIR": str(bundle)})
    argv = ["models", "--registry", str(registry.root), "--add", str(variant)]
    code = _cli(add_models_parser, [*argv, "--promote", "v2", "--json"], settings)
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["promoted"] == "v2"
    assert summary["versions"] == sorted([bundle_version(bundle), "v2"])
