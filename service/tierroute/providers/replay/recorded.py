"""The recorded answers the replay backend serves, indexed by prompt text.

Only what serving needs is kept from each record: the prompt texts, the default trio and,
per model, its response, extracted answer (`pred`) and token counts. Ground-truth fields
are never copied, so nothing downstream can read them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tierroute.errors import ConfigError
from tierroute.outcomes import TIER_KEYS, iter_records, trio_key

logger = logging.getLogger(__name__)

# The all-Claude trio, present on the tasks whose source ran it (GSM8K and CRUXEval).
CLAUDE_TRIO: Mapping[str, str] = MappingProxyType(
    {
        "cheap": "claude-3-haiku-20240307",
        "mid": "claude-3-sonnet-20240229",
        "expensive": "claude-3-opus-20240229",
    }
)
TRIOS = ("default", "claude")


@dataclass(frozen=True)
class RecordedAnswer:
    """What one model answered to one prompt, as recorded."""

    response: str
    pred: str | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ReplayRecord:
    """One prompt with every recorded answer to it."""

    id: str
    task: str
    trio: Mapping[str, str]
    answers: Mapping[str, RecordedAnswer]

    def model_key(self, tier_index: int, n_tiers: int, trio: str) -> str:
        """The recorded model answering for configured tier `tier_index` of `n_tiers`.

        The cheapest tier maps to the trio's "cheap" model, the top tier to "expensive" and
        any tier between to "mid". The Claude trio falls back to the default trio on
        records that lack one of its models.
        """
        key = trio_key(tier_index, n_tiers)
        if trio == "claude" and all(m in self.answers for m in CLAUDE_TRIO.values()):
            return CLAUDE_TRIO[key]
        return self.trio[key]

    def answer(self, tier_index: int, n_tiers: int, trio: str) -> RecordedAnswer:
        """The recorded answer of the model that plays tier `tier_index`."""
        return self.answers[self.model_key(tier_index, n_tiers, trio)]


def _answer(raw: Mapping[str, Any]) -> RecordedAnswer:
    pred = raw.get("pred")
    return RecordedAnswer(
        response=str(raw.get("response") or ""),
        pred=None if pred is None else str(pred),
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
    )


def _record(raw: Mapping[str, Any]) -> ReplayRecord:
    models = raw["models"]
    trio = raw.get("tiers") or {}
    if not all(isinstance(trio.get(k), str) and trio[k] in models for k in TIER_KEYS):
        raise ConfigError(f"record {raw.get('id')!r}: 'tiers' must name a recorded model per tier")
    return ReplayRecord(
        id=str(raw.get("id", "")),
        task=str(raw.get("task", "")),
        trio=MappingProxyType({k: trio[k] for k in TIER_KEYS}),
        answers=MappingProxyType({key: _answer(value) for key, value in models.items()}),
    )


class ReplayStore:
    """Recorded records looked up by the exact (stripped) prompt text the cascade sends."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        self._by_prompt: dict[str, ReplayRecord] = {}
        self._count = 0
        for raw in records:
            record = _record(raw)
            self._count += 1
            for field_name in ("prompt", "prompt_sent"):
                text = raw.get(field_name)
                if isinstance(text, str) and text.strip():
                    # A prompt recorded twice keeps its first record: file order decides.
                    self._by_prompt.setdefault(text.strip(), record)

    @classmethod
    def load(cls, path: Path) -> ReplayStore:
        """Read a recorded-outcome file of the shared data schema."""
        store = cls(iter_records(path))
        logger.info("replay store loaded %s records from %s", len(store), path)
        return store

    def __len__(self) -> int:
        return self._count

    def lookup(self, text: str) -> ReplayRecord | None:
        """The record whose `prompt` or `prompt_sent` is `text` (both stripped), if any."""
        return self._by_prompt.get(text.strip())
