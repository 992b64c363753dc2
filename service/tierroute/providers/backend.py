"""Chooses the model backend: Anthropic when a key is set, else the in-process replay server.

Either way the provider is `AnthropicProvider`, the real SDK: the replay backend is a local
Anthropic Messages API, so switching to Claude needs no code change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from tierroute.providers.anthropic import build_provider
from tierroute.providers.base import Provider
from tierroute.providers.replay.http_server import ReplayServer
from tierroute.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Backend:
    """A provider and, in replay mode, the replay server it talks to."""

    provider: Provider
    name: str
    replay: ReplayServer | None = None

    @property
    def forwards_fault_headers(self) -> bool:
        """Only the replay backend understands fault-injection headers."""
        return self.replay is not None or self.name == "replay"

    async def aclose(self) -> None:
        """Close the provider, then stop the replay server if this backend started it."""
        await self.provider.aclose()
        if self.replay is not None:
            self.replay.stop()


def uses_anthropic(settings: Settings) -> bool:
    """Whether the settings select the real Anthropic API."""
    choice = settings.anthropic.backend
    return choice == "anthropic" or (choice == "auto" and bool(settings.anthropic.api_key))


def build_backend(settings: Settings, environ: Mapping[str, str]) -> Backend:
    """Anthropic with a key (or when forced), else a replay server started in-process."""
    if uses_anthropic(settings):
        logger.info("backend: Anthropic API")
        return Backend(build_provider(settings), "anthropic")
    replay = ReplayServer.from_settings(settings, environ)
    replay.start()
    logger.info("backend: replay server at %s", replay.base_url)
    return Backend(build_provider(settings, base_url=replay.base_url), "replay", replay)
