"""Small recorded-outcome files in the `../shared/data` schema, written by the tests.

Records are synthetic but structurally faithful: three tasks with distinct vocabulary and a
difficulty that decides which tiers answer correctly, so a classifier can learn from them.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

TRIO = {"cheap": "flash-model", "mid": "pro-model", "expensive": "big-model"}
CLAUDE = {
    "cheap": "claude-3-haiku-20240307",
    "mid": "claude-3-sonnet-20240229",
    "expensive": "claude-3-opus-20240229",
}
PRICES = {
    "flash-model": (0.075, 0.3),
    "pro-model": (1.25, 5.0),
    "big-model": (5.0, 15.0),
    "claude-3-haiku-20240307": (0.25, 1.25),
    "claude-3-sonnet-20240229": (3.0, 15.0),
    "claude-3-opus-20240229": (15.0, 75.0),
}

_TOPICS = {
    # task -> (task_type, easy words, hard words)
    "toy_facts": (
        "knowledge_mcq",
        ["capital", "colour", "animal", "river"],
        ["quantum", "renormalization", "cohomology", "eigenvalue"],
    ),
    "toy_math": (
        "math",
        ["add", "sum", "apples", "total"],
        ["integral", "modular", "polynomial", "combinatorics"],
    ),
    "toy_code": (
        "code_reasoning",
        ["print", "list", "append", "len"],
        ["recursion", "bitmask", "generator", "closure"],
    ),
}


def make_record(index: int, rng: random.Random, *, claude: bool = False) -> dict[str, Any]:
    """One synthetic record; difficulty 0-3 decides which tiers get it right."""
    task = list(_TOPICS)[index % len(_TOPICS)]
    task_type, easy, hard = _TOPICS[task]
    difficulty = rng.choice([0, 0, 0, 1, 1, 2, 3])
    words = rng.sample(hard if difficulty >= 2 else easy, 2)
    prompt = f"Question {index}: explain the {words[0]} of the {words[1]} in case {index}?"
    reference = rng.choice("ABCDEFGHIJ")
    wrong = "A" if reference != "A" else "B"
    models: dict[str, Any] = {}
    trios = [TRIO, CLAUDE] if claude else [TRIO]
    for trio in trios:
        for rank, tier in enumerate(("cheap", "mid", "expensive")):
            key = trio[tier]
            correct = int(difficulty <= rank)
            pred = reference if correct else wrong
            in_tok, out_tok = 50 + len(prompt) // 4, 40 + 30 * rank
            price_in, price_out = PRICES[key]
            models[key] = {
                "canonical_model": key,
                "correct": correct,
                "pred": pred,
                "input_tokens": in_tok,
                "output_tokens": out_tok,
                "cost_usd": round((in_tok * price_in + out_tok * price_out) / 1e6, 9),
                "response": f"Reasoning by {key} about case {index}. The answer is ({pred}).",
            }
    labels = [t for r, t in enumerate(("cheap", "mid", "expensive")) if difficulty <= r]
    return {
        "id": f"{task}/{index}",
        "task": task,
        "task_type": task_type,
        "category": task,
        "prompt": prompt,
        "reference_answer": reference,
        "tiers": dict(TRIO),
        "models": models,
        "min_tier_correct": labels[0] if labels else "none",
        "split": "dev",
    }


def make_records(n: int, seed: int = 7, *, claude: bool = False) -> list[dict[str, Any]]:
    """`n` synthetic records, reproducible from `seed`."""
    rng = random.Random(seed)
    return [make_record(i, rng, claude=claude) for i in range(n)]


def write_dataset(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write records as gzip JSON lines (the shared data's format) and return the path."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    return path


def cascade_records(n: int = 60, seed: int = 7) -> list[dict[str, Any]]:
    """`make_records(n, seed)` in which each wrong tier gives a wrong answer of its own.

    The synthetic wrong tiers share one wrong answer, which the replay judge (agreement with
    its own answer) would pass; real models often differ, as here, so cascades escalate.
    """
    records = make_records(n, seed)
    for record in records:
        for key, letter in (("flash-model", "X"), ("pro-model", "Y")):
            outcome = record["models"][key]
            if not outcome["correct"]:
                outcome["pred"] = letter
                outcome["response"] = f"Reasoning by {key}. The answer is ({letter})."
    return records


def labelled(records: list[dict[str, Any]], min_tier_correct: str) -> dict[str, Any]:
    """The first record whose cheapest correct tier is `min_tier_correct`."""
    return next(r for r in records if r["min_tier_correct"] == min_tier_correct)


def add_value_policy(
    bundle: Path,
    prompts: list[str],
    quality: Any,
    tokens: Any,
    *,
    tiers: Any,
    default_point: str = "parity",
    edit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a value model on `prompts` and add it to the classifier bundle in `bundle`.

    `quality` (rows, actions) and `tokens` (rows, actions, tiers, 4: input, output, cache
    write, cache read) are both the training targets and the realised outcomes stored as
    calibration data; the operating points are solved for `tiers`' prices. `edit` updates
    the `cascade` section after it is written. Returns the `cascade.value` section.
    """
    import numpy as np

    from tierroute.model.operating import OPERATING_POINTS, CalibrationData, Ladder
    from tierroute.model.value import top_action
    from tierroute.offline.training.value_fit import (
        fit_value_pipeline,
        predict,
        solve_points,
        write_value_model,
    )
    from tierroute.routing.features import classifier_text
    from tierroute.routing.plan import ACTIONS

    metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
    prefix = int(metadata["prefix_chars"])
    texts = [classifier_text(p, prefix) for p in prompts]
    tokens = np.asarray(tokens, dtype=np.float64)
    pipeline = fit_value_pipeline(texts, quality, tokens[..., :2])
    p, predicted = predict(pipeline, texts, tokens.shape[2])
    evidence = CalibrationData(
        oof_p=p,
        oof_tokens=predicted,
        quality=np.asarray(quality, dtype=np.float64),
        tokens=tokens,
        top_action=top_action(ACTIONS, tokens.shape[2]),
    )
    ladder = Ladder.of(tiers)
    section = write_value_model(
        bundle,
        pipeline,
        evidence,
        ladder=ladder,
        points=solve_points(evidence, ladder, OPERATING_POINTS),
        default_point=default_point,
        prefix_chars=prefix,
        parity_texts=prompts[:20],
    )
    path = bundle / "thresholds.json"
    thresholds = json.loads(path.read_text(encoding="utf-8"))
    cascade = dict(thresholds.get("cascade") or {})
    cascade.update(policy="value", value=section)
    cascade.update(edit or {})
    thresholds["cascade"] = cascade
    path.write_text(json.dumps(thresholds), encoding="utf-8")
    return section


def add_agreement_value_model(bundle: Path, prompts: list[str], quality: Any, tokens: Any) -> None:
    """Fit a value model over VALUE_ACTIONS on `prompts`, with the default settings'
    agreement probe as a fourth payer, and make it the Cascade policy of the classifier
    bundle in `bundle`.

    `quality` is (rows, actions); `tokens` is (rows, actions, 4 payers, 4: input, output,
    cache write, cache read), both the training targets and the stored calibration data.
    """
    from tests.helpers import make_settings
    from tierroute.model.operating import OPERATING_POINTS, CalibrationData, Ladder
    from tierroute.model.value import plain_actions, top_action
    from tierroute.offline.training.value_fit import (
        fit_value_pipeline,
        predict,
        solve_points,
        write_value_model,
    )
    from tierroute.routing import VALUE_ACTIONS, classifier_text

    texts = [classifier_text(p, 4096) for p in prompts]
    pipeline = fit_value_pipeline(texts, quality, tokens[..., :2])
    p, predicted = predict(pipeline, texts, 4)
    evidence = CalibrationData(
        p,
        predicted,
        quality,
        tokens,
        top_action(VALUE_ACTIONS, 3),
        plain_actions=plain_actions(VALUE_ACTIONS, 3),
    )
    settings = make_settings()
    probe = settings.agreement_probe()
    assert probe is not None
    ladder = Ladder.of(settings.tiers).with_probe(
        probe.input_usd_per_mtok, probe.output_usd_per_mtok
    )
    section = write_value_model(
        bundle,
        pipeline,
        evidence,
        ladder=ladder,
        points=solve_points(evidence, ladder, OPERATING_POINTS),
        default_point="parity",
        prefix_chars=4096,
        parity_texts=prompts[:20],
        actions=VALUE_ACTIONS,
        probe=probe,
    )
    path = bundle / "thresholds.json"
    thresholds = json.loads(path.read_text(encoding="utf-8"))
    thresholds["cascade"] = {**thresholds.get("cascade", {}), "policy": "value", "value": section}
    path.write_text(json.dumps(thresholds), encoding="utf-8")
