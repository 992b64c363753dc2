"""Hot reload and rollback: the ReloadModel and RollbackModel RPCs, and the registry watcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from tests.fixtures import make_records, write_dataset
from tests.helpers import Running, make_settings, make_variant, running_server
from tierroute.api.security import hash_token
from tierroute.errors import ModelLoadError
from tierroute.model.registry import ModelRegistry, bundle_version
from tierroute.model.reload import LoadedModel, ModelReloader, load_model
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.routing.router import RouteQuery, Router
from tierroute.settings import Settings
from tierroute.testing import HeldLoader, StaticScorer
from tierroute.v1 import tierroute_pb2 as pb

ADMIN_TOKEN = "admin-token-reload"
TENANT_TOKEN = "tenant-token-reload"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
TENANT = (("authorization", f"Bearer {TENANT_TOKEN}"),)
IN_FLIGHT = 40


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained bundle (300 synthetic records, 2 folds): the seed, v1."""
    from tierroute.offline.training.trainer import TrainOptions, train_bundle

    root = tmp_path_factory.mktemp("reload-bundle")
    data = write_dataset(root / "small.jsonl.gz", make_records(300))
    options = TrainOptions(folds=2, compare_none_labels=False, progress=False)
    train_bundle(data, root / "bundle", options)
    return root / "bundle"


def reload_settings(tmp_path: Path, bundle: Path, **extra: str) -> Settings:
    """Auth on (an admin and a tenant token), a registry seeded from `bundle`."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {"tenants": {"acme": [hash_token(TENANT_TOKEN)]}, "admin": [hash_token(ADMIN_TOKEN)]}
        )
    )
    return make_settings(
        {
            "TIERROUTE_AUTH_TOKENS_FILE": str(tokens),
            "TIERROUTE_MODEL_DIR": str(bundle),
            "TIERROUTE_ROUTING_REGISTRY_DIR": str(tmp_path / "models"),
            **extra,
        }
    )


@asynccontextmanager
async def serving(tmp_path: Path, bundle: Path, **kwargs: Any) -> AsyncIterator[Running]:
    """A real server on the registry's promoted version (seeded from `bundle`)."""
    async with running_server(reload_settings(tmp_path, bundle), **kwargs) as running:
        yield running


def add_version(tmp_path: Path, bundle: Path, version: str) -> str:
    """Put a loadable variant of `bundle` called `version` into the test registry."""
    registry = ModelRegistry(tmp_path / "models", seed=bundle)
    return registry.add(make_variant(bundle, version, tmp_path / "variants" / version))


async def route_version(running: Running, text: str = "What is the capital of France?") -> str:
    """Route one query; the model version that decided it."""
    response = await running.stub.Route(pb.RouteRequest(query=text), metadata=ADMIN, timeout=30)
    version: str = response.model_version
    return version


async def rpc_error(call: Any) -> aio.AioRpcError:
    """The error a call ended with (the test fails if it succeeded)."""
    with pytest.raises(aio.AioRpcError) as info:
        await call
    return info.value


async def test_server_starts_on_the_registry_promoted_version(tmp_path: Path, bundle: Path) -> None:
    """With a registry configured, the promoted version serves (seeded from model_dir)."""
    async with serving(tmp_path, bundle) as s:
        assert await route_version(s) == bundle_version(bundle)
    assert ModelRegistry(tmp_path / "models").state().promoted == bundle_version(bundle)


async def test_reload_under_load_drops_no_call(tmp_path: Path, bundle: Path) -> None:
    """Calls before, during and after a reload all succeed, on the old then the new model."""
    v1, v2 = bundle_version(bundle), add_version(tmp_path, bundle, "v2")
    loader = HeldLoader(load_model)
    async with serving(tmp_path, bundle, model_loader=loader) as s:
        before = await asyncio.gather(*(route_version(s) for _ in range(IN_FLIGHT)))
        reload = asyncio.ensure_future(
            s.stub.ReloadModel(pb.ReloadModelRequest(version="v2"), metadata=ADMIN, timeout=60)
        )
        # The new model is being loaded in a worker thread, held there: the loop stays free.
        await asyncio.to_thread(loader.started.wait)
        during = await asyncio.gather(*(route_version(s) for _ in range(IN_FLIGHT)))
        racing = [asyncio.ensure_future(route_version(s)) for _ in range(IN_FLIGHT)]
        loader.release()
        response = await reload
        raced = await asyncio.gather(*racing)
        after = await asyncio.gather(*(route_version(s) for _ in range(IN_FLIGHT)))
    assert (response.previous_version, response.version) == (v1, v2)
    assert set(before) == set(during) == {v1}
    assert set(raced) <= {v1, v2}
    assert len(raced) == IN_FLIGHT
    assert set(after) == {v2}


async def test_a_cascade_in_flight_finishes_on_the_model_it_started_with(
    tmp_path: Path, bundle: Path
) -> None:
    """A Cascade routed before the swap answers with the old model's decision."""
    v1 = bundle_version(bundle)
    add_version(tmp_path, bundle, "v2")
    gate = asyncio.Event()
    settings = reload_settings(tmp_path, bundle)
    provider = ScriptedProvider(
        answers={t.model: [Reply.answer("Paris.", gate=gate)] for t in settings.tiers}
    )
    async with running_server(settings, provider=provider) as s:
        call = asyncio.ensure_future(
            s.stub.Cascade(
                pb.CascadeRequest(
                    query="What is the capital of France?",
                    judge_mode=pb.JUDGE_MODE_NEVER,
                    speculation=pb.SPECULATION_MODE_OFF,
                ),
                metadata=ADMIN,
                timeout=60,
            )
        )
        await provider.wait_for_calls(1)
        reload = await s.stub.ReloadModel(
            pb.ReloadModelRequest(version="v2"), metadata=ADMIN, timeout=60
        )
        gate.set()
        answered = await call
        assert await route_version(s) == "v2"
    assert reload.version == "v2"
    assert answered.route.model_version == v1


async def test_an_empty_version_reloads_the_promoted_one(tmp_path: Path, bundle: Path) -> None:
    """ReloadModel without a version serves whatever the registry promotes now."""
    async with serving(tmp_path, bundle) as s:
        registry = ModelRegistry(tmp_path / "models", seed=bundle)
        registry.promote(add_version(tmp_path, bundle, "v2"))
        response = await s.stub.ReloadModel(pb.ReloadModelRequest(), metadata=ADMIN, timeout=60)
        assert response.version == "v2"
        assert await route_version(s) == "v2"


async def test_a_corrupt_version_fails_the_reload_and_the_old_model_keeps_serving(
    tmp_path: Path, bundle: Path
) -> None:
    """A version whose model.onnx is corrupt: FAILED_PRECONDITION naming it; v1 still serves."""
    v1 = bundle_version(bundle)
    add_version(tmp_path, bundle, "v-bad")
    # Damaged on disk after it was added: the server's own validation must catch it.
    (tmp_path / "models" / "v-bad" / "model.onnx").write_bytes(b"not a model at all")
    async with serving(tmp_path, bundle) as s:
        error = await rpc_error(
            s.stub.ReloadModel(pb.ReloadModelRequest(version="v-bad"), metadata=ADMIN)
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "v-bad/model.onnx" in (error.details() or "")
        assert await route_version(s) == v1


async def test_an_unknown_version_is_not_found(tmp_path: Path, bundle: Path) -> None:
    """ReloadModel of a version the registry does not hold answers NOT_FOUND."""
    async with serving(tmp_path, bundle) as s:
        error = await rpc_error(
            s.stub.ReloadModel(pb.ReloadModelRequest(version="v404"), metadata=ADMIN)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_version_that_is_not_a_name_is_invalid(tmp_path: Path, bundle: Path) -> None:
    """A version such as '../x' is refused with INVALID_ARGUMENT before any file is read."""
    async with serving(tmp_path, bundle) as s:
        error = await rpc_error(
            s.stub.ReloadModel(pb.ReloadModelRequest(version="../x"), metadata=ADMIN)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reload_needs_an_admin_token(tmp_path: Path, bundle: Path) -> None:
    """A tenant's token may route but not reload."""
    async with serving(tmp_path, bundle) as s:
        error = await rpc_error(s.stub.ReloadModel(pb.ReloadModelRequest(), metadata=TENANT))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_rollback_restores_the_previous_promotion_everywhere(
    tmp_path: Path, bundle: Path
) -> None:
    """RollbackModel pops the registry's last promotion and serves the version before it."""
    v1 = bundle_version(bundle)
    registry = ModelRegistry(tmp_path / "models", seed=bundle)
    registry.promote(add_version(tmp_path, bundle, "v2"))
    async with serving(tmp_path, bundle) as s:
        assert await route_version(s) == "v2"
        response = await s.stub.RollbackModel(pb.RollbackModelRequest(), metadata=ADMIN, timeout=60)
        assert (response.previous_version, response.version) == ("v2", v1)
        assert await route_version(s) == v1
    assert registry.state().promoted == v1


async def test_rollback_with_nothing_to_roll_back_fails_precondition(
    tmp_path: Path, bundle: Path
) -> None:
    """With one promotion only, RollbackModel answers FAILED_PRECONDITION and changes nothing."""
    async with serving(tmp_path, bundle) as s:
        error = await rpc_error(s.stub.RollbackModel(pb.RollbackModelRequest(), metadata=ADMIN))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert await route_version(s) == bundle_version(bundle)


def _router(settings: Settings, version: str = "static-test") -> Router:
    return Router(settings, StaticScorer((0.9, 0.05, 0.05), version=version))


async def test_the_watcher_reloads_a_newly_promoted_version(tmp_path: Path, bundle: Path) -> None:
    """One poll after a promotion swaps the promoted version in; a poll with no change doesn't."""
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(bundle)})
    registry = ModelRegistry(tmp_path / "models", seed=bundle)
    registry.promoted()
    router = _router(settings)
    reloader = ModelReloader(router, 3, registry=registry)
    first = await reloader.poll_once()
    assert first is not None
    assert first.version == bundle_version(bundle)
    assert await reloader.poll_once() is None
    registry.promote(add_version(tmp_path, bundle, "v2"))
    swap = await reloader.poll_once()
    assert swap is not None
    assert (swap.previous, swap.version) == (bundle_version(bundle), "v2")
    assert router.model_version == "v2"


async def test_the_watcher_keeps_serving_when_the_promoted_version_is_corrupt(
    tmp_path: Path, bundle: Path
) -> None:
    """A promoted version that fails to load is logged and skipped; the old model stays."""
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(bundle)})
    registry = ModelRegistry(tmp_path / "models", seed=bundle)
    registry.promote(add_version(tmp_path, bundle, "v-bad"))
    (tmp_path / "models" / "v-bad" / "model.onnx").write_bytes(b"corrupt")
    router = _router(settings, "served")
    reloader = ModelReloader(router, 3, registry=registry)
    assert await reloader.poll_once() is None
    assert router.model_version == "served"


async def test_without_a_registry_reload_rereads_model_dir(bundle: Path) -> None:
    """No registry: ReloadModel with no version loads routing.model_dir again."""
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(bundle)})
    router = _router(settings, "before")
    swap = await ModelReloader(router, 3, static_dir=bundle).reload()
    assert (swap.previous, swap.version) == ("before", bundle_version(bundle))


async def test_without_a_registry_rollback_swaps_back_to_the_model_before(bundle: Path) -> None:
    """No registry: RollbackModel restores the model served before the last reload."""
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(bundle)})
    scorer = StaticScorer((0.9, 0.05, 0.05), version="before")
    router = Router(settings, scorer)
    reloader = ModelReloader(
        router, 3, static_dir=bundle, initial=LoadedModel(scorer, vocabulary=None)
    )
    await reloader.reload()
    swap = await reloader.rollback()
    assert (swap.previous, swap.version) == (bundle_version(bundle), "before")
    assert router.model_version == "before"


async def test_a_model_dir_that_does_not_load_leaves_the_old_model(
    bundle: Path, tmp_path: Path
) -> None:
    """A reload from a directory without a model raises ModelLoadError and swaps nothing."""
    router = _router(make_settings({"TIERROUTE_MODEL_DIR": str(bundle)}), "before")
    with pytest.raises(ModelLoadError, match=r"metadata\.json"):
        await ModelReloader(router, 3, static_dir=tmp_path).reload()
    assert router.model_version == "before"


async def test_reloaded_models_route_like_freshly_loaded_ones(tmp_path: Path, bundle: Path) -> None:
    """After a reload the router's decisions come from the new bundle's own scorer."""
    settings = make_settings({"TIERROUTE_MODEL_DIR": str(bundle)})
    router = _router(settings)
    await ModelReloader(router, 3, static_dir=bundle).reload()
    fresh = load_model(bundle, 3).scorer
    query = RouteQuery(text="explain the quantum of the cohomology in case 5?")
    assert list(router.decide(query).scores) == fresh.predict_proba(query.text)
