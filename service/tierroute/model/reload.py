"""Loading, warming and hot-swapping the model a server routes with: reload and rollback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tierroute.errors import ConfigError, ModelLoadError, NotFound
from tierroute.model.registry import ModelRegistry

if TYPE_CHECKING:
    from tierroute.model.vocabulary import Vocabulary
    from tierroute.routing import Router, Scorer
    from tierroute.settings import Settings, TierConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded, warmed router model and the vocabulary its drift coverage is measured by."""

    scorer: Scorer
    vocabulary: Vocabulary | None


def load_model(
    bundle: Path, n_tiers: int, tiers: Sequence[TierConfig] | None = None
) -> LoadedModel:
    """Load, validate and warm the bundle in `bundle` (blocking: run it off the loop).

    `tiers` price the value policy (None: the prices it was calibrated under); ModelLoadError
    names the file at fault. The vocabulary is optional: a model whose graph
    it cannot be read from still serves, without coverage figures.
    """
    from tierroute.model.classifier import RouterModel
    from tierroute.model.vocabulary import Vocabulary

    model = RouterModel.load(bundle, n_tiers, tiers)
    model.warm_up()
    try:
        vocabulary: Vocabulary | None = Vocabulary.from_bundle(bundle, model.prefix_chars)
    except ModelLoadError as exc:
        logger.warning("no vocabulary coverage for %s: %s", model.version, exc)
        vocabulary = None
    return LoadedModel(model, vocabulary)


def startup_model(
    settings: Settings, registry: ModelRegistry | None, scorer: Scorer | None = None
) -> LoadedModel:
    """The model a server starts with: an injected scorer, the registry's promoted version
    (seeding an empty registry from `routing.model_dir`), or `routing.model_dir` itself."""
    if scorer is not None:
        return LoadedModel(scorer, None)
    bundle = registry.promoted_dir() if registry is not None else settings.routing.model_dir
    return load_model(bundle, len(settings.tiers), settings.tiers)


@dataclass(frozen=True)
class ModelSwap:
    """What a reload or rollback changed: the version served before, and the one now."""

    previous: str
    version: str


Loader = Callable[[Path, int], LoadedModel]


class ModelReloader:
    """Hot reload and rollback for one server's Router.

    Loading and warming run in a worker thread (`asyncio.to_thread`), the swap is one
    assignment on the event loop: a call that has started keeps the scorer it read, a call
    that starts afterwards gets the new one, and no call waits on or fails from a reload.
    Reloads are serialised by an asyncio lock. Without a registry, ReloadModel re-reads
    `static_dir` (`routing.model_dir`) and rollback swaps back to the model served before
    the last reload, kept in memory.
    """

    def __init__(
        self,
        router: Router,
        n_tiers: int,
        *,
        registry: ModelRegistry | None = None,
        static_dir: Path | None = None,
        initial: LoadedModel | None = None,
        loader: Loader = load_model,
        coverage_sample_rate: float = 1.0,
    ) -> None:
        self._router = router
        self._n_tiers = n_tiers
        self._registry = registry
        self._static_dir = static_dir
        self._loader = loader
        self._lock = asyncio.Lock()
        self._vocabularies: dict[str, Vocabulary] = {}
        if initial is not None and initial.vocabulary is not None:
            self._vocabularies[initial.scorer.version] = initial.vocabulary
        self._previous: LoadedModel | None = None
        self._current: LoadedModel | None = initial
        self._watched: tuple[int, int] | None = None
        # Coverage is measured on the calls whose query hash falls under this share.
        self._coverage_cut = int(coverage_sample_rate * 0x10000)

    @property
    def registry(self) -> ModelRegistry | None:
        """The registry reloads read from, if any."""
        return self._registry

    def coverage(self, text: str, query_sha256: str, model_version: str) -> float | None:
        """Share of `text`'s words in `model_version`'s vocabulary, for a sample of calls.

        None when the call is outside the sample (by query hash, so no RNG on the hot path),
        or when no vocabulary of that version is loaded (heuristic routing, a test scorer).
        """
        if not model_version or int(query_sha256[:4], 16) >= self._coverage_cut:
            return None
        vocabulary = self._vocabularies.get(model_version)
        return None if vocabulary is None else vocabulary.coverage(text)

    def _install(self, loaded: LoadedModel) -> ModelSwap:
        previous = self._router.model_version
        # swap_scorer validates the tier count before assigning; a mismatch raises here and
        # the old model keeps serving.
        self._router.swap_scorer(loaded.scorer)
        version = loaded.scorer.version
        if loaded.vocabulary is not None:
            self._vocabularies[version] = loaded.vocabulary
        # Keep the previous version's vocabulary for calls recorded after the swap.
        self._vocabularies = {
            v: vocab for v, vocab in self._vocabularies.items() if v in (previous, version)
        }
        logger.info("router model swapped: %s -> %s", previous or "(none)", version)
        return ModelSwap(previous, version)

    def _resolve(self, version: str) -> Path:
        if self._registry is not None:
            return self._registry.bundle_dir(version or self._registry.promoted())
        if self._static_dir is None:
            raise ConfigError("no model registry is configured (routing.registry_dir)")
        if version:
            raise ConfigError(
                f"cannot load version {version!r}: no model registry is configured "
                "(routing.registry_dir); an empty version reloads routing.model_dir"
            )
        return self._static_dir

    def _load(self, version: str) -> LoadedModel:
        return self._loader(self._resolve(version), self._n_tiers)

    async def reload(self, version: str = "") -> ModelSwap:
        """Serve `version` (empty: the registry's promoted one) once it has loaded and warmed.

        NotFound for a version the registry does not hold; ModelLoadError naming the file
        for a bundle that does not load (the old model keeps serving).
        """
        async with self._lock:
            loaded = await asyncio.to_thread(self._load, version)
            return self._swap_in(loaded)

    def _swap_in(self, loaded: LoadedModel) -> ModelSwap:
        current = self._current
        swap = self._install(loaded)
        if swap.previous != swap.version:
            self._previous, self._current = current, loaded
        return swap

    async def rollback(self) -> ModelSwap:
        """Serve the version before the last promotion (registry) or the last reload."""
        async with self._lock:
            registry = self._registry
            if registry is None:
                previous = self._previous
                if previous is None:
                    raise ConfigError("no earlier model to roll back to since this server started")
                swap = self._install(previous)
                self._previous, self._current = self._current, previous
                return swap
            state = await asyncio.to_thread(registry.state)
            target = state.previous
            if target is None or state.promoted is None:
                raise ConfigError(
                    f"model registry {registry.root} has no earlier promotion to roll back to"
                )
            # Load first: the registry is rolled back only once the older model is proven
            # loadable, so a failure changes nothing anywhere.
            loaded = await asyncio.to_thread(self._load, target)
            await asyncio.to_thread(
                registry.rollback, expect=state.promoted, note="RollbackModel RPC"
            )
            return self._swap_in(loaded)

    async def poll_once(self) -> ModelSwap | None:
        """Reload when registry.json changed and promotes a version not served; else None.

        A version that fails to load is logged (file named) and not retried until the
        registry changes again.
        """
        registry = self._registry
        if registry is None:
            return None
        try:
            stat = await asyncio.to_thread(registry.registry_file.stat)
        except FileNotFoundError:
            return None
        mark = (stat.st_mtime_ns, stat.st_ino)
        if mark == self._watched:
            return None
        self._watched = mark
        promoted = (await asyncio.to_thread(registry.state)).promoted
        if promoted is None or promoted == self._router.model_version:
            return None
        try:
            return await self.reload(promoted)
        except (ModelLoadError, NotFound, ConfigError) as exc:
            logger.error("registry promoted %s but it was not loaded: %s", promoted, exc)
            return None

    async def watch(self, interval_s: float) -> None:
        """Poll the registry every `interval_s` seconds until cancelled."""
        while True:
            try:
                await self.poll_once()
            except ConfigError as exc:
                logger.error("model registry watcher: %s", exc)
            await asyncio.sleep(interval_s)
