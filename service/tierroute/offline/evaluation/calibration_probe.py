"""The agreement checks in the calibration tables: the probe they replay, how it is priced,
and the tokens it billed.

The value policy's agreement actions (`routing.plan.AGREEMENT_ACTIONS`) are two more table
columns, the engine's own agreement modes from the cheapest tier (no judge, no
speculation). Their probe is the evaluation's (`agreement.eval_probe`: the configured
probe, played by the recorded models the data holds), priced at the configured probe's
prices under the configured ladder and at the dearest recorded model's under the recorded
one. The value model prices its token estimates per payer, the probe after the tiers
(`operating.Ladder.with_probe`), so the tables keep the probe's tokens as one more payer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tierroute.model.operating import Ladder
from tierroute.offline.evaluation.agreement import eval_probe
from tierroute.offline.evaluation.eval_data import LADDER_CONFIG, EvalData, ladder_kind
from tierroute.settings import ProbeConfig, Settings

logger = logging.getLogger(__name__)


def table_probe(settings: Settings, data: EvalData, prices: str) -> ProbeConfig | None:
    """The probe the agreement columns replay (None: no probe, or the data holds none of
    its recorded models: the tables then have no agreement columns)."""
    probe = eval_probe(settings, data)
    configured = settings.agreement_probe()
    if probe is None or configured is None:
        return None
    if ladder_kind(prices) == LADDER_CONFIG:
        probe = dataclasses.replace(
            probe,
            input_usd_per_mtok=configured.input_usd_per_mtok,
            output_usd_per_mtok=configured.output_usd_per_mtok,
        )
    return probe


def probe_settings(settings: Settings, probe: ProbeConfig) -> Settings:
    """`settings` whose agreement modes call `probe`."""
    return dataclasses.replace(
        settings,
        probes=(probe,),
        cascade=dataclasses.replace(settings.cascade, probe=probe.label),
    )


def ladder(tiers: Sequence[object], probe: ProbeConfig | None) -> Ladder:
    """The tiers' prices, with the probe's as one more payer when there is one."""
    base = Ladder.of(tiers)  # type: ignore[arg-type]
    if probe is None:
        return base
    return base.with_probe(probe.input_usd_per_mtok, probe.output_usd_per_mtok)


def with_probe_tokens(
    tokens: npt.NDArray[np.float64],
    cost: npt.NDArray[np.float64],
    tiers: Sequence[object],
    probe: ProbeConfig,
    columns: Sequence[int],
) -> npt.NDArray[np.float64]:
    """`tokens` (rows, columns, tiers, kinds) with the probe as one more payer: in the
    agreement `columns`, its input tokens are the prompt's (the cheapest tier's plain
    run read the same prompt, counted by the same tokenizer) and its output tokens what
    the rest of the run's cost paid for at the probe's output price.

    A run whose cost leaves less than the probe's prompt for it (a probe without a
    recorded answer, whose prompt was estimated) gets no output tokens, and is counted in
    a warning.
    """
    rows, n_columns, n_tiers, kinds = tokens.shape
    out = np.zeros((rows, n_columns, n_tiers + 1, kinds))
    out[:, :, :n_tiers] = tokens
    tier_ladder = Ladder.of(tiers)  # type: ignore[arg-type]
    price_in = probe.input_usd_per_mtok / 1e6
    price_out = probe.output_usd_per_mtok / 1e6
    prompt = tokens[:, 0, 0, 0]
    short = 0
    for column in columns:
        residual = cost[:, column] - tier_ladder.price(tokens[:, column])
        output = (residual - prompt * price_in) / price_out if price_out > 0 else 0 * residual
        short += int((output < -1.0).sum())
        out[:, column, n_tiers, 0] = prompt
        out[:, column, n_tiers, 1] = np.rint(np.maximum(output, 0.0))
    if short:
        logger.warning(
            "calibration tables: %s agreement runs billed less than the probe's prompt; "
            "their probe output tokens are counted as 0",
            short,
        )
    return out


__all__ = ["ladder", "probe_settings", "table_probe", "with_probe_tokens"]
