"""What the evaluation harness knows about a recorded-outcome file, with no ground truth in it.

`load_eval_data` keeps, per record, the id, task, prompt, query type and duplicate group;
the replay store keeps the recorded answers (it copies no ground truth either). Scoring
reads the truth separately (`tierroute.offline.evaluation.scoring`), after the strategies answered.

Two price ladders are first-class (`--prices` of eval and calibrate, `price_ladder`):
- `config`: the configured tiers' prices (`[[tiers]]` of the settings, what `make run`
  serves), or a TOML file of the same `[[tiers]]` form (name, input_usd_per_mtok,
  output_usd_per_mtok, optionally the cache multipliers) replacing them by tier name;
- `recorded`: the recorded trio's prices, from `prices.csv` beside the data file (or a CSV
  of that schema named explicitly), else fitted from each record's recorded cost and
  token counts.
Either way the answers are the recorded models'; only what their tokens cost changes.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tierroute.errors import ConfigError
from tierroute.outcomes import TIER_KEYS, file_sha256, iter_records, trio_key
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.routing import query_type
from tierroute.settings import Settings, TierConfig

logger = logging.getLogger(__name__)

PRICES_FILE = "prices.csv"


@dataclass(frozen=True)
class EvalRecord:
    """One prompt to answer, and which recorded record the replay backend answers it from."""

    id: str
    task: str
    prompt: str
    # The judge sampler's stratum, as the cascade computes it from the query text.
    query_type: str
    # Records sharing a group (MMLU-Pro duplicates) share a cross-validation fold.
    group: str
    # The replay store keeps the first record of a prompt recorded twice; that record's
    # answers are the ones served, so scoring looks its outcomes up.
    replay_id: str
    # The served record's recorded models playing cheap, mid and expensive (the key names
    # differ between sources, e.g. "gpt4o" and "gpt-4o-2024-05-13").
    models: tuple[str, ...]

    def model_for(self, tier_index: int, n_tiers: int) -> str:
        """The recorded model whose answer the replay backend serves for tier `tier_index`."""
        return self.models[TIER_KEYS.index(trio_key(tier_index, n_tiers))]


@dataclass(frozen=True)
class Pricing:
    """USD per million input and output tokens for each trio key, and where they came from."""

    usd_per_mtok: Mapping[str, tuple[float, float]]
    source: str

    def as_dict(self) -> dict[str, Any]:
        """For the report."""
        return {
            "source": self.source,
            "usd_per_mtok": {
                key: {"input": round(p[0], 6), "output": round(p[1], 6)}
                for key, p in self.usd_per_mtok.items()
            },
        }


@dataclass(frozen=True)
class EvalData:
    """A recorded-outcome file as the harness sees it."""

    path: Path
    sha256: str
    records: tuple[EvalRecord, ...]
    # Trio key ("cheap", "mid", "expensive") -> the name its tier is shown under (the most
    # common recorded model key playing it).
    trio: Mapping[str, str]
    pricing: Pricing
    # Only the first `limit` records of the file are evaluated (None: all).
    limit: int | None = None
    # USD per million input and output tokens of every recorded model key in the file (the
    # probes' prices), from the prices file where it has them, else fitted.
    model_prices: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def tasks(self) -> list[str]:
        """The tasks present, sorted."""
        return sorted({r.task for r in self.records})


def load_eval_data(path: Path, *, prices: Path | None = None, limit: int | None = None) -> EvalData:
    """Read `path` (the first `limit` records) into an EvalData; no ground truth is kept."""
    raw = _read(path, limit)
    store = ReplayStore(raw)
    records = []
    for position, record in enumerate(raw):
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{path}: record {position} has no prompt text")
        record_id = str(record.get("id") or f"#{position}")
        served = store.lookup(prompt)
        assert served is not None  # the store indexed this very prompt
        records.append(
            EvalRecord(
                id=record_id,
                task=str(record.get("task") or "all"),
                prompt=prompt,
                query_type=query_type(prompt),
                group=str(record.get("dup_group") or record_id),
                replay_id=served.id,
                models=tuple(served.trio[key] for key in TIER_KEYS),
            )
        )
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: record ids must be unique")
    prices_path = prices if prices is not None else path.parent / PRICES_FILE
    return EvalData(
        path=path,
        sha256=file_sha256(path),
        records=tuple(records),
        trio=_trio_labels(records),
        pricing=load_pricing(raw, prices_path),
        limit=limit,
        model_prices=model_prices(raw, prices_path),
    )


def load_store(path: Path, limit: int | None = None) -> ReplayStore:
    """The replay store of the same records `load_eval_data` reads."""
    return ReplayStore(_read(path, limit))


def _read(path: Path, limit: int | None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for record in iter_records(path):
        if limit is not None and len(records) >= limit:
            break
        records.append(record)
    if not records:
        raise ConfigError(f"{path}: no records to evaluate")
    return records


def _trio_labels(records: Sequence[EvalRecord]) -> dict[str, str]:
    labels = {}
    for position, key in enumerate(TIER_KEYS):
        counts = Counter(r.models[position] for r in records)
        labels[key] = min(counts, key=lambda m: (-counts[m], m))
    return labels


def _trio_models(raw: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    models = []
    for record in raw:
        trio = record.get("tiers")
        if not isinstance(trio, Mapping) or not isinstance(trio.get(key), str):
            raise ConfigError(f"record {record.get('id')!r}: 'tiers' must name a {key} model")
        models.append(str(trio[key]))
    return models


def load_pricing(raw: Sequence[Mapping[str, Any]], prices: Path) -> Pricing:
    """Each trio key's price: from `prices` when it prices every model playing the key,
    else fitted from the records' recorded cost and token counts.

    The models playing one key must share a price (they do in the shared data: the same
    model under two source names), since one tier has one price.
    """
    table = _read_prices(prices) if prices.is_file() else {}
    out: dict[str, tuple[float, float]] = {}
    sources = set()
    for key in TIER_KEYS:
        models = sorted(set(_trio_models(raw, key)))
        if table and all(m in table for m in models):
            found = {table[m] for m in models}
            sources.add(prices.name)
        else:
            if table:
                logger.warning("%s does not price every %s model; fitting", prices, key)
            found = {_fit_price(raw, key)}
            sources.add("fitted: recorded cost_usd against input and output tokens")
        if len(found) != 1:
            raise ConfigError(f"the models playing {key} ({models}) have different prices")
        out[key] = found.pop()
    return Pricing(out, " + ".join(sorted(sources)))


def _read_prices(path: Path) -> dict[str, tuple[float, float]]:
    table: dict[str, tuple[float, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                price = (
                    float(row["usd_per_1m_input_tokens"]),
                    float(row["usd_per_1m_output_tokens"]),
                )
                for name in (row.get("source_model_name"), row.get("canonical_model")):
                    if name:
                        table.setdefault(name, price)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: not a prices file of the shared data schema ({exc})") from exc
    return table


def model_prices(raw: Sequence[Mapping[str, Any]], prices: Path) -> dict[str, tuple[float, float]]:
    """Every recorded model key's price: from `prices` where it lists it, else fitted."""
    table = _read_prices(prices) if prices.is_file() else {}
    keys = sorted({key for record in raw for key in record["models"]})
    return {key: table[key] if key in table else _fit_model_price(raw, key) for key in keys}


def _fit_model_price(raw: Sequence[Mapping[str, Any]], model: str) -> tuple[float, float]:
    return _fit(raw, lambda record: model, model)


def _fit_price(raw: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float]:
    return _fit(raw, lambda record: str(record["tiers"][key]), f"the {key} tier")


def _fit(
    raw: Sequence[Mapping[str, Any]], model_of: Callable[[Mapping[str, Any]], str], what: str
) -> tuple[float, float]:
    rows, costs = [], []
    for record in raw:
        outcome = record["models"].get(model_of(record))
        if outcome and outcome.get("cost_usd") is not None:
            rows.append([float(outcome["input_tokens"]), float(outcome["output_tokens"])])
            costs.append(float(outcome["cost_usd"]))
    if len(rows) < 2:
        raise ConfigError(f"cannot price {what}: too few records with cost and tokens")
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(costs), rcond=None)
    usd_in, usd_out = (max(float(v) * 1e6, 0.0) for v in solution)
    return usd_in, usd_out


LADDER_CONFIG = "config"
LADDER_RECORDED = "recorded"


def ladder_kind(spec: str) -> str:
    """`recorded` for the recorded trio's prices (the word, or a prices CSV), else `config`
    (the word, or a TOML file of [[tiers]] prices)."""
    if spec == LADDER_RECORDED or spec.lower().endswith(".csv"):
        return LADDER_RECORDED
    if spec == LADDER_CONFIG or spec.lower().endswith(".toml"):
        return LADDER_CONFIG
    raise ConfigError(
        f"--prices {spec!r}: use 'config' (the configured tiers' prices), 'recorded' (the "
        "recorded trio's), a prices CSV of the shared data schema, or a TOML file of "
        "[[tiers]] prices"
    )


def priced_tiers(settings: Settings, spec: str) -> tuple[TierConfig, ...]:
    """The configured tiers, with the prices of a TOML file's [[tiers]] (matched by name)
    when `spec` names one; ConfigError naming the file when it cannot price every tier."""
    if not spec.lower().endswith(".toml"):
        return settings.tiers
    path = Path(spec)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--prices {path}: not a readable TOML file: {exc}") from exc
    rows = document.get("tiers")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"--prices {path}: expected [[tiers]] tables")
    by_name = {str(r.get("name")): r for r in rows}
    fields = (
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cache_write_multiplier",
        "cache_read_multiplier",
    )
    out = []
    for tier in settings.tiers:
        row = by_name.get(tier.name)
        if row is None:
            raise ConfigError(f"--prices {path}: no [[tiers]] entry named {tier.name!r}")
        changes: dict[str, float] = {}
        for field in fields:
            if field not in row:
                if field.endswith("per_mtok"):
                    raise ConfigError(f"--prices {path}: tier {tier.name!r} lacks {field}")
                continue
            value = row[field]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(
                    f"--prices {path}: tier {tier.name!r} {field} must be a number >= 0"
                )
            changes[field] = float(value)
        out.append(dataclasses.replace(tier, **changes))  # type: ignore[arg-type]
    return tuple(out)


def eval_tiers(
    settings: Settings, data: EvalData, prices: str = LADDER_RECORDED
) -> tuple[TierConfig, ...]:
    """The configured tiers, played by the recorded models that answer for them, priced by
    the `prices` ladder (`ladder_kind`): the recorded trio's, or the configured ones.

    The replay backend maps tier positions to trio keys the same way (`trio_key`), so under
    `recorded` each tier is priced as the model whose recorded answers it serves.
    """
    n = len(settings.tiers)
    kind = ladder_kind(prices)
    configured = priced_tiers(settings, prices)
    tiers = []
    for index, tier in enumerate(configured):
        key = trio_key(index, n)
        price = data.pricing.usd_per_mtok[key]
        played = dataclasses.replace(tier, model=data.trio[key])
        if kind == LADDER_RECORDED:
            played = dataclasses.replace(
                played,
                input_usd_per_mtok=price[0],
                output_usd_per_mtok=price[1],
                cache_write_multiplier=TierConfig.cache_write_multiplier,
                cache_read_multiplier=TierConfig.cache_read_multiplier,
                max_output_tokens=TierConfig.max_output_tokens,
            )
        else:
            played = dataclasses.replace(played, max_output_tokens=TierConfig.max_output_tokens)
        tiers.append(played)
    return tuple(tiers)


def pricing_report(tiers: Sequence[TierConfig], prices: str, data: EvalData) -> dict[str, Any]:
    """The report's `pricing` section: which ladder, and each tier's prices."""
    kind = ladder_kind(prices)
    return {
        "ladder": kind,
        "source": data.pricing.source if kind == LADDER_RECORDED else prices,
        "usd_per_mtok": {
            t.name: {
                "input": round(t.input_usd_per_mtok, 6),
                "output": round(t.output_usd_per_mtok, 6),
            }
            for t in tiers
        },
        "recorded": data.pricing.as_dict(),
    }
