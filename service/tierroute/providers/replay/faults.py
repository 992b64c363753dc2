"""Fault injection for the replay backend: by configured rate or by request header.

A fault spec is `KIND[:ARG][*N][@TIER]`:
- KIND is one of `FAULT_KINDS`; ARG is the retry-after seconds of a `429` or the variant of
  `malformed_judge` (`maybe`, the default, or `text`);
- `*N` makes the fault hit only the first N matching calls, then let calls through
  (counted per `x-tierroute-fault-key` header value, spec and tier);
- `@TIER` limits it to one tier, named by tier name or model id.
The header `x-tierroute-fault` carries comma-separated specs; the first that applies to a
call wins. Configuration (`replay.faults`) carries comma-separated `SPEC=RATE` entries,
each drawn from one RNG seeded by `replay.fault_seed`, so a sequence of calls replays the
same faults every run.
"""

from __future__ import annotations

import random
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from tierroute.errors import ConfigError

FAULT_KINDS = (
    "429",
    "529",
    "500",
    "timeout",
    "drop",
    "malformed_judge",
    "midstream",
    "spend_limit",
    "400",
    "401",
    "403",
    "404",
    "413",
)
JUDGE_ONLY_KINDS = frozenset({"malformed_judge"})
FAULT_HEADER = "x-tierroute-fault"
FAULT_KEY_HEADER = "x-tierroute-fault-key"
# Call metadata the servicer forwards to the replay backend; never sent to Anthropic.
FAULT_HEADERS = (FAULT_HEADER, FAULT_KEY_HEADER)

_SPEC = re.compile(
    r"^(?P<kind>[a-z0-9_]+)(?::(?P<arg>[^*@=]+))?(?:\*(?P<count>\d+))?"
    r"(?:@(?P<scope>[^=]+))?(?:=(?P<rate>.+))?$"
)
# Call counters for `*N` specs; bounded so a long-running server cannot grow without limit.
_MAX_COUNTERS = 10_000


@dataclass(frozen=True)
class FaultSpec:
    """One parsed fault: what to inject, on which tier, how often."""

    kind: str
    arg: str | None = None
    count: int | None = None
    scope: str | None = None
    rate: float | None = None
    text: str = ""

    def applies(self, tier_name: str, model: str, is_judge: bool) -> bool:
        """Whether this fault can hit a call to this tier of this kind."""
        if self.scope is not None and self.scope not in (tier_name, model):
            return False
        return is_judge or self.kind not in JUDGE_ONLY_KINDS


def _check_argument(kind: str, arg: str) -> None:
    """ValueError unless `arg` is what fault `kind` takes after its colon."""
    if kind == "429":
        try:
            seconds = float(arg)
        except ValueError:
            raise ValueError(f"429 retry-after must be seconds, not {arg!r}") from None
        if not seconds >= 0:
            raise ValueError("429 retry-after must not be negative")
    elif kind == "malformed_judge":
        if arg not in ("maybe", "text"):
            raise ValueError("malformed_judge takes 'maybe' or 'text'")
    else:
        raise ValueError(f"fault {kind!r} takes no argument")


def parse_spec(text: str, *, with_rate: bool) -> FaultSpec:
    """Parse one spec; ValueError says what is wrong with it."""
    text = text.strip()
    match = _SPEC.match(text)
    if not match:
        raise ValueError(f"cannot read fault spec {text!r}")
    kind, arg, count, scope, rate = match.group("kind", "arg", "count", "scope", "rate")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    if arg is not None:
        _check_argument(kind, arg)
    if with_rate:
        if rate is None or count is not None:
            raise ValueError(f"configured fault {text!r} needs '=RATE' and no '*N'")
        value = float(rate)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault rate in {text!r} must be within [0, 1]")
        return FaultSpec(kind, arg, None, scope, value, text)
    if rate is not None:
        raise ValueError(f"header fault {text!r} cannot carry a rate")
    return FaultSpec(kind, arg, None if count is None else int(count), scope, None, text)


def parse_specs(text: str, *, with_rate: bool) -> tuple[FaultSpec, ...]:
    """Parse comma-separated specs."""
    return tuple(parse_spec(s, with_rate=with_rate) for s in text.split(",") if s.strip())


class FaultPlan:
    """Decides, per call, which fault (if any) to inject. Thread-safe."""

    def __init__(self, configured: str, seed: int, *, allow_headers: bool) -> None:
        try:
            self._configured = parse_specs(configured, with_rate=True)
        except ValueError as exc:
            raise ConfigError(f"replay.faults: {exc}") from exc
        self._allow_headers = allow_headers
        self._rng = random.Random(seed)
        self._counters: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._lock = threading.Lock()

    def choose(
        self,
        headers: dict[str, str],
        *,
        tier_index: int,
        tier_name: str,
        model: str,
        is_judge: bool,
    ) -> FaultSpec | None:
        """The fault for this call; ValueError on an unreadable fault header."""
        header = headers.get(FAULT_HEADER, "") if self._allow_headers else ""
        if header.strip():
            key = headers.get(FAULT_KEY_HEADER, "")
            for spec in parse_specs(header, with_rate=False):
                if spec.applies(tier_name, model, is_judge) and self._counts(spec, key, tier_index):
                    return spec
        for spec in self._configured:
            if spec.applies(tier_name, model, is_judge):
                with self._lock:
                    draw = self._rng.random()
                if spec.rate is not None and draw < spec.rate:
                    return spec
        return None

    def _counts(self, spec: FaultSpec, key: str, tier_index: int) -> bool:
        # A spec without *N always hits; with *N only its first N calls do.
        if spec.count is None:
            return True
        counter = (key, spec.text, tier_index)
        with self._lock:
            seen = self._counters.pop(counter, 0) + 1
            self._counters[counter] = seen
            while len(self._counters) > _MAX_COUNTERS:
                self._counters.popitem(last=False)
        return seen <= spec.count
