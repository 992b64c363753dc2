"""The replay backend's latency model: time to first token plus output tokens over speed.

Defaults (in `ReplayConfig`) follow public figures for small, mid-size and large hosted
models: about 0.4 s / 150 tokens per second, 0.8 s / 80 and 1.5 s / 40.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tierroute.errors import ConfigError


@dataclass(frozen=True)
class LatencyModel:
    """Simulated seconds for a reply of a tier, scaled by `time_scale` (0 = instant)."""

    ttft_s: Sequence[float]
    tokens_per_s: Sequence[float]
    time_scale: float

    def __post_init__(self) -> None:
        if not self.ttft_s or not self.tokens_per_s:
            raise ConfigError("replay.ttft_s and replay.tokens_per_s need one value per tier")
        if any(t < 0 for t in self.ttft_s) or any(s <= 0 for s in self.tokens_per_s):
            raise ConfigError("replay.ttft_s must be >= 0 and replay.tokens_per_s > 0")
        if self.time_scale < 0:
            raise ConfigError("replay.time_scale must not be negative")

    def seconds(self, tier_index: int, output_tokens: int) -> float:
        """Seconds before a reply of `output_tokens` from tier `tier_index` is complete."""
        if self.time_scale == 0:
            return 0.0
        return self.first_token_s(tier_index) + max(output_tokens, 0) * self.per_token_s(tier_index)

    def first_token_s(self, tier_index: int) -> float:
        """Seconds before a reply from tier `tier_index` starts (streaming: message_start)."""
        return self.ttft_s[min(tier_index, len(self.ttft_s) - 1)] * self.time_scale

    def per_token_s(self, tier_index: int) -> float:
        """Seconds per output token of tier `tier_index`."""
        speed = self.tokens_per_s[min(tier_index, len(self.tokens_per_s) - 1)]
        return self.time_scale / speed
