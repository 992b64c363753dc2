"""The agreement rules as evaluation strategies, and the probe the evaluation replays.

Both rules are the engine's own agreement modes (`judge_mode` "agreement" and
"agreement_mid"), so the probe's call is a real hop of each run: billed its input and
output tokens at the probe's price, like every call. In the evaluation the probe is played
by the configured probe's replay models that the data holds (DeepSeek-V2 on MMLU-Pro,
GPT-4o mini on the other tasks) and priced at the dearest of them: one probe has one price,
so where two recorded models play it the cost is counted at the higher one (an upper bound,
never an undercount). A record that holds none of them gets the replay's synthetic answer,
billed the same way.
"""

from __future__ import annotations

import dataclasses
import logging

from tierroute.offline.evaluation.eval_data import EvalData
from tierroute.offline.evaluation.harness import RunPlan, Strategy
from tierroute.settings import ProbeConfig, Settings

logger = logging.getLogger(__name__)

AGREEMENT = "agreement"
AGREEMENT_MID = "agreement_mid"
NAMES = (AGREEMENT, AGREEMENT_MID)


def eval_probe(settings: Settings, data: EvalData) -> ProbeConfig | None:
    """The agreement probe as the evaluation replays it (None: the data holds none of its
    replay models, or none is configured)."""
    probe = settings.agreement_probe()
    if probe is None:
        return None
    keys = [k for k in probe.replay_models or (probe.model,) if k in data.model_prices]
    if not keys:
        logger.warning(
            "the data holds none of probe %s's replay models %s: agreement is not evaluated",
            probe.label,
            list(probe.replay_models),
        )
        return None
    return dataclasses.replace(
        probe,
        # Its own model id, so that it never answers as a tier whose recorded model it names.
        model=f"probe/{probe.label}",
        input_usd_per_mtok=max(data.model_prices[k][0] for k in keys),
        output_usd_per_mtok=max(data.model_prices[k][1] for k in keys),
        replay_models=tuple(keys),
    )


def agreement_strategies(settings: Settings, data: EvalData) -> list[Strategy]:
    """Rule A and rule B (docs/cascade.md, "Agreement"), with no learning and no judge."""
    probe = eval_probe(settings, data)
    if probe is None:
        return []
    played = dataclasses.replace(
        settings,
        probes=(probe,),
        cascade=dataclasses.replace(settings.cascade, probe=probe.label),
    )
    names = [t.name for t in settings.tiers]
    who = (
        f"probe {probe.label} (recorded {', '.join(probe.replay_models)}; priced "
        f"${probe.input_usd_per_mtok:g}/${probe.output_usd_per_mtok:g} per 1M tokens, the "
        "dearest of them)"
    )
    return [
        Strategy(
            AGREEMENT,
            f"rule A: {names[0]} and the {who} answer; equal final answers ship {names[0]}; "
            f"else {names[1]} answers and ships if it agrees with either, else {names[-1]}; "
            "no judge, no speculation",
            (RunPlan(played, judge_mode="agreement", speculation="off"),),
        ),
        Strategy(
            AGREEMENT_MID,
            f"rule B: as rule A, but on a disagreement {names[1]}'s answer ships unchecked",
            (RunPlan(played, judge_mode="agreement_mid", speculation="off"),),
        ),
    ]
