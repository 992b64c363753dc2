"""Fixtures of the api tests: a real server whose replay backend serves recorded answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import Running, make_settings, running_server
from tierroute.testing import StaticScorer


@pytest.fixture
async def served(replay_data: Path) -> AsyncIterator[Running]:
    """A server whose replay backend serves `replay_data` instantly; routes to cheap."""
    settings = make_settings(
        {"TIERROUTE_REPLAY_DATA": str(replay_data), "TIERROUTE_REPLAY_TIME_SCALE": "0"}
    )
    async with running_server(settings, scorer=StaticScorer((0.95, 0.03, 0.02)), environ={}) as s:
        yield s
