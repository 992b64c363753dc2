"""Judge sampling: which non-top answers the cascade has judged, stratified by query type.

Each request draws one uniform number from a hash of its request id and its query type, and
is judged when the draw falls below its type's rate. The draw is deterministic per request,
so a retried request is sampled the same way, and every query type gets exactly its own rate
in expectation: no type can be starved by a global draw that happens to favour another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from tierroute.errors import ConfigError
from tierroute.routing import QUERY_TYPES

_SCALE = float(1 << 64)


def uniform_draw(request_id: str, stratum: str) -> float:
    """A uniform number in [0, 1) that depends only on the request id and the stratum."""
    digest = hashlib.blake2b(f"{stratum}\x00{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def parse_rates(entries: Iterable[str]) -> dict[str, float]:
    """Read "type=rate" entries; ConfigError for unknown types or rates outside [0, 1]."""
    rates: dict[str, float] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        name = name.strip()
        if not sep or name not in QUERY_TYPES:
            raise ConfigError(
                f"cascade.judge_sample_rates entry {entry!r} must be 'type=rate' with a type "
                f"among {QUERY_TYPES}"
            )
        try:
            rate = float(value)
        except ValueError as exc:
            raise ConfigError(f"cascade.judge_sample_rates: {value!r} is not a number") from exc
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"cascade.judge_sample_rates: {name} rate {rate} is not in [0, 1]")
        rates[name] = rate
    return rates


class JudgeSampler:
    """Decides per request whether a non-top answer is judged."""

    def __init__(self, default_rate: float, rates: Mapping[str, float] | None = None) -> None:
        if not 0.0 <= default_rate <= 1.0:
            raise ConfigError(f"judge sample rate {default_rate} is not in [0, 1]")
        self._default = default_rate
        self._rates = dict(rates or {})

    def rate(self, query_type: str) -> float:
        """The configured rate for `query_type`."""
        return self._rates.get(query_type, self._default)

    def should_judge(self, request_id: str, query_type: str) -> bool:
        """Whether this request's non-top answers are judged."""
        rate = self.rate(query_type)
        # The end points are exact so that 0 and 1 mean "never" and "always".
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        return uniform_draw(request_id, query_type) < rate
