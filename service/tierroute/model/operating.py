"""Prices and operating points of the Cascade's value policy, solved with numpy only.

The value model predicts tokens, not dollars: per action (`tierroute.routing.plan.ACTIONS`)
and per tier, the expected input and output tokens of every call the action makes. A
`Ladder` (each tier's USD per million input and output tokens and its cache multipliers)
prices them, so a tier's configured prices reach the policy's decisions at load time.
Expected cost is linear in expected tokens, so pricing predicted tokens per (tier, kind)
is exact under any ladder, which one summed token count per action could not be: input and
output, and tiers, have different prices.

An operating point is a target relative to always-top on the calibration rows (`parity`:
the cheapest price of a correct answer with quality >= always-top's; `q95`: >= 95 % of
it; `third_cost`: the best quality at <= 1/3 of its cost). `solve_price` finds a point's
price of a correct answer from out-of-fold per-record estimates and each action's realised
outcome; calibration and the loader both call it, so a bundle re-solved for another ladder
gets what a fresh calibration on the same estimates would.

`CalibrationData` is that evidence as the bundle stores it (`value_calibration.npz`, no
pickles): per calibration record, the out-of-fold P(correct) and tokens per action, and
per action the realised correctness and tokens (input, output, cache write, cache read
per tier).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tierroute.errors import ModelLoadError
from tierroute.settings import TierConfig

TargetKind = Literal["max_cost_per_query", "min_quality"]
# Token kinds the realised tables keep per tier; the value model predicts the first two
# (the Cascade's calls carry no cache_control, so its cache tokens are zero).
TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")
PREDICTED_KINDS = 2
# Price-of-a-correct-answer grid, relative to always-top's cost per query: geometric.
PRICE_GRID_RELATIVE = np.geomspace(0.01, 100.0, 601)
DEFAULT_SPECULATION_COST_SHARE = 0.02
DEFAULT_POINT = "parity"
# The array names of value_calibration.npz and their dimensions (N rows, A actions, T tiers).
ARRAYS = {
    "oof_p": ("N", "A"),
    "oof_tokens": ("N", "A", "T", PREDICTED_KINDS),
    "quality": ("N", "A"),
    "tokens": ("N", "A", "T", len(TOKEN_KINDS)),
}


@dataclass(frozen=True)
class PointTarget:
    """A cost budget or a quality floor: times the reference's figure on the same rows
    (`relative`), or absolute (USD per query, or a 0-1 quality).

    The reference is always using one tier, unjudged: the top tier unless `reference`
    names another tier's index (a team's current tier, `routing.reference_tier`), with
    `reference_name` its configured name for statements."""

    kind: TargetKind
    value: float
    relative: bool = True
    reference: int | None = None
    reference_name: str = ""

    def _baseline(self) -> str:
        if self.reference is None:
            return "always-top's"
        return f"always-{self.reference_name or f'tier-{self.reference}'}'s"

    def statement(self) -> str:
        """The target in one sentence."""
        scale = f" x {self._baseline()}" if self.relative else ""
        if self.kind == "max_cost_per_query":
            unit = " cost" if self.relative else " USD"
            return f"best quality at cost per query <= {self.value:.6g}{scale}{unit}"
        return f"cheapest with quality >= {self.value:.6g}{scale}" + (
            " quality" if self.relative else ""
        )

    def as_dict(self) -> dict[str, Any]:
        """For the thresholds file."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "value": round(self.value, 6),
            "relative_to": "always_top_tier" if self.relative else "absolute",
        }
        if self.relative and self.reference is not None:
            out["relative_to"] = "always_reference_tier"
            out["reference_tier"] = {"index": self.reference, "name": self.reference_name}
        return out


# The named operating points every calibrated bundle ships, in the order reports list them.
OPERATING_POINTS: Mapping[str, PointTarget] = {
    "parity": PointTarget("min_quality", 1.0),
    "q95": PointTarget("min_quality", 0.95),
    "third_cost": PointTarget("max_cost_per_query", 1 / 3),
}
REFERENCE_POINT = "ref_parity"


def reference_points(tier_names: Sequence[str], reference: str = "") -> dict[str, PointTarget]:
    """The points defined against the reference tier (`routing.reference_tier`, the tier a
    team uses today), for tiers `tier_names`: `ref_parity`, the cheapest with quality >=
    always-<reference>'s, when `reference` names a tier below the top ("" or the top tier:
    none, `parity` is that point)."""
    names = list(tier_names)
    if reference not in names[:-1]:
        return {}
    return {
        REFERENCE_POINT: PointTarget(
            "min_quality", 1.0, reference=names.index(reference), reference_name=reference
        )
    }


@dataclass(frozen=True)
class Ladder:
    """Per tier: USD per million input and output tokens, and the cache multipliers."""

    input_usd_per_mtok: tuple[float, ...]
    output_usd_per_mtok: tuple[float, ...]
    cache_write_multiplier: tuple[float, ...]
    cache_read_multiplier: tuple[float, ...]

    @classmethod
    def of(cls, tiers: Sequence[TierConfig]) -> Ladder:
        """The configured tiers' prices."""
        return cls(
            tuple(float(t.input_usd_per_mtok) for t in tiers),
            tuple(float(t.output_usd_per_mtok) for t in tiers),
            tuple(float(t.cache_write_multiplier) for t in tiers),
            tuple(float(t.cache_read_multiplier) for t in tiers),
        )

    def with_probe(self, input_usd_per_mtok: float, output_usd_per_mtok: float) -> Ladder:
        """This ladder with the agreement probe's prices as one more payer after the tiers
        (the value model's token estimates of an action with a probe have that row too)."""
        return Ladder(
            (*self.input_usd_per_mtok, float(input_usd_per_mtok)),
            (*self.output_usd_per_mtok, float(output_usd_per_mtok)),
            (*self.cache_write_multiplier, 1.25),
            (*self.cache_read_multiplier, 0.1),
        )

    @classmethod
    def from_dict(cls, raw: Any, n_tiers: int, where: str) -> Ladder:
        """A ladder as `as_dict` wrote it; ModelLoadError naming `where` when malformed."""
        fields = ("input_usd_per_mtok", "output_usd_per_mtok")
        optional = ("cache_write_multiplier", "cache_read_multiplier")
        if not isinstance(raw, Mapping):
            raise ModelLoadError(f"{where}: prices must be an object of per-tier lists")
        values = []
        for name in fields + optional:
            column = raw.get(name, [1.25 if "write" in name else 0.1] * n_tiers)
            if (
                not isinstance(column, list)
                or len(column) != n_tiers
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
                    for v in column
                )
            ):
                raise ModelLoadError(
                    f"{where}: prices.{name} must be {n_tiers} numbers >= 0, got {column!r}"
                )
            values.append(tuple(float(v) for v in column))
        return cls(*values)

    def as_dict(self) -> dict[str, list[float]]:
        """For the thresholds file."""
        return {
            "input_usd_per_mtok": list(self.input_usd_per_mtok),
            "output_usd_per_mtok": list(self.output_usd_per_mtok),
            "cache_write_multiplier": list(self.cache_write_multiplier),
            "cache_read_multiplier": list(self.cache_read_multiplier),
        }

    @functools.cached_property
    def _per_token(self) -> npt.NDArray[np.float64]:
        price_in = np.array(self.input_usd_per_mtok) / 1e6
        price_out = np.array(self.output_usd_per_mtok) / 1e6
        rates = np.stack(
            [
                price_in,
                price_out,
                price_in * np.array(self.cache_write_multiplier),
                price_in * np.array(self.cache_read_multiplier),
            ],
            axis=1,
        )
        rates.flags.writeable = False
        return rates

    def per_token(self) -> npt.NDArray[np.float64]:
        """USD per token, shape (tiers, TOKEN_KINDS), read-only (computed once: every
        value-planned Cascade prices its estimates with it)."""
        return self._per_token

    def price(self, tokens: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """USD of token counts shaped (..., tiers, kinds): the first `kinds` TOKEN_KINDS."""
        counts = np.asarray(tokens, dtype=np.float64)
        rates = self.per_token()[:, : counts.shape[-1]]
        if counts.shape[-2] != rates.shape[0]:
            raise ValueError(f"tokens for {counts.shape[-2]} tiers, ladder of {rates.shape[0]}")
        return np.asarray(np.einsum("...tk,tk->...", counts, rates), dtype=np.float64)


def action_choice(
    p: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    price: float,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """Per row, the action with the lowest `cost - price * P(correct)` (ties: the cheaper)
    among the row's `allowed` actions (None: all; `routing.plan.allowed_actions`)."""
    value = cost - price * p
    if allowed is not None:
        value = np.where(allowed, value, np.inf)
    return np.asarray(value.argmin(axis=1), dtype=np.int64)


def limit_of(target: Any, top_quality: float, top_cost: float, share: float) -> float:
    """The absolute limit a target sets on rows scoring (top_quality, top_cost) when it is
    relative: a budget keeps a reserve of `share` for speculation, which only buys latency."""
    relative = getattr(target, "relative", True)
    if target.kind == "max_cost_per_query":
        return float(target.value * (top_cost if relative else 1.0) / (1 + share))
    return float(target.value * (top_quality if relative else 1.0))


def feasible_best(
    q: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    kind: str,
    limit: float,
    n: int,
    *,
    whole: bool = True,
) -> int | None:
    """The grid index best meeting a limit on sums over `n` rows, or None: for a budget,
    the most correct answers within it; for a floor, the cheapest at or above it. Ties go
    to the lower cost, then to the lower index. With `whole` the quality sums count correct
    answers and the floor compares exactly; without, they are expected (fractional) sums
    and the floor allows a rounding tolerance."""
    if kind == "max_cost_per_query":
        feasible = c <= limit * n * (1 + 1e-12)
        primary, secondary = -q, c
    elif whole:
        feasible = q >= math.ceil(limit * n - 1e-9)
        primary, secondary = c, -q
    else:
        feasible = q >= limit * n - 1e-9 * max(n, 1)
        primary, secondary = c, -q
    candidates = np.flatnonzero(feasible)
    if len(candidates) == 0:
        return None
    return int(candidates[np.lexsort((candidates, secondary[candidates], primary[candidates]))[0]])


@dataclass(frozen=True)
class Solved:
    """A price of a correct answer, whether it meets its target, and its in-sample figures."""

    price_per_correct_usd: float
    feasible: bool
    quality: float
    cost_per_query_usd: float

    def as_dict(self) -> dict[str, Any]:
        """For the thresholds file."""
        return {
            "price_per_correct_usd": self.price_per_correct_usd,
            "feasible": self.feasible,
            "in_sample_quality": round(self.quality, 6),
            "in_sample_cost_per_query_usd": round(self.cost_per_query_usd, 9),
        }


def price_sweep(
    p: npt.NDArray[np.float64],
    cost_pred: npt.NDArray[np.float64],
    quality: npt.NDArray[np.float64],
    cost_real: npt.NDArray[np.float64],
    top_cost: float,
    *,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> tuple[list[float], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The price grid and, per price, the sums of realised quality and cost over the rows.

    `p`, `cost_pred` are per-row estimates per action; `quality`, `cost_real` the realised
    outcome of each action on each row; prices are relative to always-top's `top_cost`;
    `allowed` (rows, actions) masks the actions a row may not take (None: all).
    """
    n = len(p)
    arange = np.arange(n)
    prices = [float(f"{rel * top_cost:.6g}") for rel in PRICE_GRID_RELATIVE]
    q = np.empty(len(prices))
    c = np.empty(len(prices))
    for i, price in enumerate(prices):
        chosen = action_choice(p, cost_pred, price, allowed)
        q[i], c[i] = quality[arange, chosen].sum(), cost_real[arange, chosen].sum()
    return prices, q, c


def solve_price(
    p: npt.NDArray[np.float64],
    cost_pred: npt.NDArray[np.float64],
    quality: npt.NDArray[np.float64],
    cost_real: npt.NDArray[np.float64],
    *,
    kind: str,
    limit: float,
    top_cost: float,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> Solved:
    """The grid price that best meets an absolute `limit` (see `feasible_best`); `allowed`
    as in `price_sweep`.

    When no price meets it, the nearest: the best quality for a floor, the lowest cost for
    a budget, with `feasible` False.
    """
    n = len(p)
    prices, q, c = price_sweep(p, cost_pred, quality, cost_real, top_cost, allowed=allowed)
    found = feasible_best(q, c, kind, limit, n)
    feasible = found is not None
    if found is None:
        order = (
            np.lexsort((c, -q)) if kind == "min_quality" else np.lexsort((-q, c))
        )  # best quality (then cheaper), or lowest cost (then better)
        found = int(order[0])
    return Solved(prices[found], feasible, float(q[found] / n), float(c[found] / n))


@dataclass(frozen=True)
class CalibrationData:
    """The value policy's calibration evidence, as a bundle stores it (record order)."""

    oof_p: npt.NDArray[np.float64]
    oof_tokens: npt.NDArray[np.float64]
    quality: npt.NDArray[np.float64]
    tokens: npt.NDArray[np.float64]
    top_action: int
    # (rows, actions): the actions each row may take (`routing.plan.allowed_actions`);
    # None: all of them. Stored as `allowed` when given.
    allowed: npt.NDArray[np.bool_] | None = None
    # Per tier, the index of its action "this tier, unjudged": the baselines of points
    # defined against a reference tier (empty: such points cannot be solved).
    plain_actions: tuple[int, ...] = ()

    def save(self, path: Path) -> None:
        """Write the arrays as a compressed .npz (float32 estimates, integer tokens)."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "oof_p": self.oof_p.astype(np.float32),
            "oof_tokens": self.oof_tokens.astype(np.float32),
            "quality": self.quality.astype(np.int8),
            "tokens": np.rint(self.tokens).astype(np.int32),
        }
        if self.allowed is not None:
            arrays["allowed"] = self.allowed.astype(np.int8)
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        n_actions: int,
        n_tiers: int,
        top_action: int,
        plain_actions: tuple[int, ...] = (),
    ) -> CalibrationData:
        """Read and check `path` (`n_tiers`: the payers its tokens have, the agreement
        probe included); ModelLoadError naming it when anything is malformed."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: np.asarray(archive[name], dtype=np.float64) for name in ARRAYS}
                allowed = np.asarray(archive["allowed"]) if "allowed" in archive.files else None
        except FileNotFoundError as exc:
            raise ModelLoadError(f"value calibration file not found: {path}") from exc
        except KeyError as exc:
            raise ModelLoadError(f"{path}: missing array {exc}; expected {list(ARRAYS)}") from exc
        except (OSError, ValueError, EOFError) as exc:
            raise ModelLoadError(f"{path}: not a readable .npz of arrays: {exc}") from exc
        sizes: dict[str, int] = {"A": n_actions, "T": n_tiers, "N": len(arrays["oof_p"])}
        for name, dims in ARRAYS.items():
            expected = tuple(sizes[d] if isinstance(d, str) else d for d in dims)
            if arrays[name].shape != expected:
                raise ModelLoadError(
                    f"{path}: array {name!r} has shape {arrays[name].shape}, expected {expected} "
                    f"({', '.join(str(d) for d in dims)})"
                )
            if not np.all(np.isfinite(arrays[name])) or arrays[name].min(initial=0) < 0:
                raise ModelLoadError(f"{path}: array {name!r} holds negative or non-finite values")
        if sizes["N"] == 0:
            raise ModelLoadError(f"{path}: no calibration rows")
        if arrays["oof_p"].max() > 1 or not np.isin(arrays["quality"], (0.0, 1.0)).all():
            raise ModelLoadError(f"{path}: probabilities or correctness outside [0, 1]")
        if allowed is not None and (
            allowed.shape != arrays["oof_p"].shape or not np.isin(allowed, (0, 1)).all()
        ):
            raise ModelLoadError(
                f"{path}: array 'allowed' must be 0/1 of shape {arrays['oof_p'].shape}"
            )
        return cls(
            **arrays,
            top_action=top_action,
            allowed=None if allowed is None else allowed.astype(bool),
            plain_actions=plain_actions,
        )

    def baseline(self, target: PointTarget) -> int:
        """The action a relative target is measured against: always its reference tier
        (the top tier when it names none), unjudged."""
        if target.reference is None:
            return self.top_action
        if not 0 <= target.reference < len(self.plain_actions):
            raise ModelLoadError(
                f"operating point against tier {target.reference}: the calibration data "
                f"has no unjudged action for it"
            )
        return self.plain_actions[target.reference]

    def solve(
        self,
        ladder: Ladder,
        targets: Mapping[str, PointTarget],
        share: float = DEFAULT_SPECULATION_COST_SHARE,
    ) -> dict[str, Solved]:
        """Every target's price of a correct answer under `ladder`, on all stored rows."""
        cost_pred = ladder.price(self.oof_tokens)
        cost_real = ladder.price(self.tokens)
        top_cost = float(cost_real[:, self.top_action].mean())
        out = {}
        for name, target in targets.items():
            base = self.baseline(target)
            out[name] = solve_price(
                self.oof_p,
                cost_pred,
                self.quality,
                cost_real,
                kind=target.kind,
                limit=limit_of(
                    target,
                    float(self.quality[:, base].mean()),
                    float(cost_real[:, base].mean()),
                    share,
                ),
                top_cost=top_cost,
                allowed=self.allowed,
            )
        return out


def parse_points(raw: Any, where: str) -> dict[str, PointTarget]:
    """The thresholds file's `operating_points` targets; ModelLoadError when malformed."""
    if not isinstance(raw, Mapping) or not raw:
        raise ModelLoadError(f"{where}: operating_points must be a non-empty object")
    out = {}
    for name, entry in raw.items():
        target = entry.get("target") if isinstance(entry, Mapping) else None
        kind = target.get("kind") if isinstance(target, Mapping) else None
        value = target.get("value") if isinstance(target, Mapping) else None
        if (
            kind not in ("max_cost_per_query", "min_quality")
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value > 0
        ):
            raise ModelLoadError(f"{where}: operating point {name!r} has no valid target")
        relative_to = target.get("relative_to", "always_top_tier")  # type: ignore[union-attr]
        reference, reference_name = None, ""
        if relative_to == "always_reference_tier":
            tier = target.get("reference_tier")  # type: ignore[union-attr]
            index = tier.get("index") if isinstance(tier, Mapping) else None
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ModelLoadError(
                    f"{where}: operating point {name!r} names no valid reference tier"
                )
            reference, reference_name = index, str(tier.get("name", ""))
        out[str(name)] = PointTarget(
            kind, float(value), relative_to != "absolute", reference, reference_name
        )
    return out


__all__ = [
    "DEFAULT_POINT",
    "DEFAULT_SPECULATION_COST_SHARE",
    "OPERATING_POINTS",
    "PRICE_GRID_RELATIVE",
    "REFERENCE_POINT",
    "TOKEN_KINDS",
    "CalibrationData",
    "Ladder",
    "PointTarget",
    "Solved",
    "action_choice",
    "feasible_best",
    "limit_of",
    "parse_points",
    "price_sweep",
    "reference_points",
    "solve_price",
]
