"""The levers study of issue 13: which cheap checks pay, measured on dev with cross-validation.

    python model_export/levers.py --data ../shared/data/dev.jsonl.gz [--folds 5] \
        [--workers 2] [--out out/levers.json] [--json] [--quiet]

Every per-record outcome comes from the server's own cascade engine over the replay backend
(the calibration tables: each record under each fixed setting, plus the two agreement
rules with the configured probe), so every cost is what that run was billed: judges with
their reasoning (`replay.judge_billing`), the probe its input and output tokens. A policy
then picks, per record, one of those runs (or a sum of their calls, where a policy stops a
run early: the calls of a run on plain prompts cost the same in any run). Learned policies
are fitted on the other folds only (grouped by `dup_group`), and every threshold is chosen
on the training folds toward the target (quality >= always-top's: "parity"; >= 95 % of it:
"q95"), then applied to the held-out fold. Figures are pooled over the held-out folds.

Answer features are read from the recorded responses the replay serves (never `correct`):
whether the answer states a final answer, its output tokens, hedging phrases, its format,
and whether the cheap, probe and mid final answers agree (`tierroute.providers.final_answer`,
the engine's own comparison).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from tierroute.offline.evaluation import calibration as cal
from tierroute.offline.evaluation.agreement import AGREEMENT, AGREEMENT_MID, agreement_strategies
from tierroute.offline.evaluation.eval_data import EvalData, load_eval_data, load_store
from tierroute.offline.evaluation.harness import run_strategies
from tierroute.offline.evaluation.scoring import GroundTruth
from tierroute.offline.evaluation.strategies import eval_settings
from tierroute.offline.evaluation.summary import correctness
from tierroute.outcomes import default_data_path
from tierroute.providers import final_answer
from tierroute.providers.replay.recorded import ReplayStore
from tierroute.routing import classifier_text
from tierroute.settings import Settings

Array = npt.NDArray[np.float64]
HEDGES = ("not sure", "unsure", "uncertain", "i think", "perhaps", "possibly", "probably")
TARGETS = {"parity": 1.0, "q95": 0.95}
# Table columns (calibration.COLUMNS): always cheap, cheap judged by mid (escalations judged),
# cheap judged by mid only, always mid, mid judged by top, always top.
CHEAP, CHEAP_JUDGED, CHEAP_MID_JUDGE_ONLY, MID, MID_JUDGED, TOP = 0, 1, 7, 3, 4, 6
THRESHOLDS = np.linspace(0.0, 1.0, 201)


@dataclass(frozen=True)
class Runs:
    """Per record: quality (0/1) and cost (USD) of each engine run the policies pick from."""

    quality: dict[str, Array]
    cost: dict[str, Array]


@dataclass(frozen=True)
class Study:
    """Everything a policy may read: the runs, features, folds and task of every record."""

    runs: Runs
    text: sparse.csr_matrix
    answer: Array
    agree_probe: Array
    mid_agrees: Array
    probe_cost: Array
    folds: npt.NDArray[np.int64]
    tasks: npt.NDArray[np.str_]


def _fold(group: str, k: int) -> int:
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:4], "big") % k


def _answer_features(text: str, output_tokens: int) -> list[float]:
    lowered = text.lower()
    return [
        float(not final_answer(text)),
        np.log1p(output_tokens) / 8.0,
        min(3, sum(lowered.count(h) for h in HEDGES)) / 3.0,
        float('"answer"' in text),
        float("\\boxed{" in text),
        float("answer is" in lowered),
    ]


def _responses(store: ReplayStore, data: EvalData, keys: Sequence[str]) -> list[tuple[str, int]]:
    """The recorded response (and output tokens) of the first of `keys` each record holds."""
    out = []
    for record in data.records:
        served = store.lookup(record.prompt)
        assert served is not None  # the store indexed this prompt
        key = next((k for k in keys if k in served.answers), None)
        answer = served.answers[key] if key is not None else None
        out.append((answer.response, answer.output_tokens) if answer else ("", 0))
    return out


def build(
    data_path: Path, settings: Settings, folds: int, workers: int, limit: int | None = None
) -> Study:
    """Run the engine for every fixed setting and both agreement rules; read the features."""
    data = load_eval_data(data_path, limit=limit)
    truth = GroundTruth.load(data_path, limit)
    played = eval_settings(settings, data)
    store = load_store(data.path, limit) if workers <= 1 else None
    tables = cal.build_tables(data, played, truth, workers=workers, store=store)
    rules = agreement_strategies(played, data)
    if not rules:
        raise SystemExit("levers: no probe the data holds answers for ([[probes]])")
    outcomes = run_strategies(data, rules, workers=workers, store=store)
    columns = {
        "cheap": CHEAP,
        "cheap_judged": CHEAP_JUDGED,
        "cheap_mid_judge_only": CHEAP_MID_JUDGE_ONLY,
        "mid": MID,
        "mid_judged": MID_JUDGED,
        "top": TOP,
    }
    quality = {name: tables.quality[:, col] for name, col in columns.items()}
    cost = {name: tables.cost[:, col] for name, col in columns.items()}
    for name in (AGREEMENT, AGREEMENT_MID):
        quality[name] = correctness(outcomes[name], data, truth, 3)
        cost[name] = np.array([o.cost_usd for o in outcomes[name]])
    # Rule A's calls on plain prompts cost what the one-call runs cost: the rest is the probe.
    final = np.array([o.final_tier for o in outcomes[AGREEMENT]])
    probe_cost = (
        cost[AGREEMENT] - cost["cheap"] - (final >= 1) * cost["mid"] - (final >= 2) * cost["top"]
    )
    store = store or load_store(data.path, limit)
    probe = rules[0].plans[0].settings.probes[0]
    cheap_r = _responses(store, data, sorted({r.models[0] for r in data.records}))
    mid_r = _responses(store, data, sorted({r.models[1] for r in data.records}))
    probe_r = _responses(store, data, probe.replay_models)
    cheap_f = [final_answer(t) for t, _ in cheap_r]
    probe_f = [final_answer(t) for t, _ in probe_r]
    mid_f = [final_answer(t) for t, _ in mid_r]
    agree = np.array([bool(c) and c == p for c, p in zip(cheap_f, probe_f, strict=True)], float)
    mid_agrees = np.array(
        [bool(m) and m in (c, p) for m, c, p in zip(mid_f, cheap_f, probe_f, strict=True)], float
    )
    texts = [classifier_text(r.prompt, 4096) for r in data.records]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=10000, sublinear_tf=True)
    return Study(
        runs=Runs(quality, cost),
        # Fitted on every prompt without labels: the vocabulary alone carries no outcome.
        text=vectorizer.fit_transform(texts).tocsr(),
        answer=np.array([_answer_features(t, k) for t, k in cheap_r]),
        agree_probe=agree,
        mid_agrees=mid_agrees,
        probe_cost=probe_cost,
        folds=np.array([_fold(r.group, folds) for r in data.records]),
        tasks=np.array([r.task for r in data.records]),
    )


# -- policies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A two-way policy: ship option `ship` where the score clears the threshold, else
    `fallback`; per-record quality and cost of both."""

    q_ship: Array
    c_ship: Array
    q_fallback: Array
    c_fallback: Array


def _fit_scores(study: Study, features: sparse.csr_matrix, label: Array) -> Array:
    """Out-of-fold P(label) from a logistic regression fitted on the other folds."""
    scores = np.zeros(len(label))
    for fold in np.unique(study.folds):
        train, test = study.folds != fold, study.folds == fold
        model = LogisticRegression(C=1.0, max_iter=2000)
        model.fit(features[train], label[train])
        scores[test] = model.predict_proba(features[test])[:, 1]
    return scores


def _sweep(score: Array, choice: Choice, rows: npt.NDArray[np.bool_]) -> tuple[Array, Array]:
    """Mean quality and cost on `rows` for every threshold of THRESHOLDS."""
    ship = score[rows][None, :] >= THRESHOLDS[:, None]
    q = np.where(ship, choice.q_ship[rows], choice.q_fallback[rows]).mean(axis=1)
    c = np.where(ship, choice.c_ship[rows], choice.c_fallback[rows]).mean(axis=1)
    return q, c


def _pick(q: Array, c: Array, floor: float) -> int:
    """The cheapest threshold meeting the quality floor, else the best quality."""
    ok = np.flatnonzero(q >= floor - 1e-12)
    if ok.size == 0:
        return int(np.argmax(q))
    return int(ok[np.argmin(c[ok])])


def cross_fitted(
    study: Study, score: Array, choice: Choice, target: float, by_task: bool = False
) -> tuple[Array, Array]:
    """Per record quality and cost with each fold's threshold chosen on the other folds
    (per task with `by_task`) toward `target` x always-top's quality there."""
    top = study.runs.quality["top"]
    q_out, c_out = np.zeros(len(score)), np.zeros(len(score))
    groups = np.unique(study.tasks) if by_task else np.array(["*"])
    for fold in np.unique(study.folds):
        for group in groups:
            in_group = study.tasks == group if by_task else np.ones(len(score), bool)
            train = (study.folds != fold) & in_group
            test = (study.folds == fold) & in_group
            q, c = _sweep(score, choice, train)
            t = THRESHOLDS[_pick(q, c, target * top[train].mean())]
            ship = score[test] >= t
            q_out[test] = np.where(ship, choice.q_ship[test], choice.q_fallback[test])
            c_out[test] = np.where(ship, choice.c_ship[test], choice.c_fallback[test])
    return q_out, c_out


def figures(study: Study, q: Array, c: Array) -> dict[str, float]:
    """Pooled held-out quality and cost against always-top on the same records."""
    top_q, top_c = study.runs.quality["top"], study.runs.cost["top"]
    diff = q - top_q
    return {
        "quality": round(float(q.mean()), 4),
        "quality_diff_points": round(100 * float(diff.mean()), 2),
        "quality_diff_se_points": round(100 * float(diff.std(ddof=1) / np.sqrt(len(q))), 2),
        "quality_share_of_top": round(float(q.mean() / top_q.mean()), 4),
        "cost_ratio_vs_top": round(float(c.mean() / top_c.mean()), 4),
        "times_cheaper": round(float(top_c.mean() / c.mean()), 2),
    }


def study_levers(study: Study, progress: Callable[[str], None]) -> dict[str, Any]:
    """Every lever's figures: fixed rules first, then each learned policy at each target."""
    r = study.runs
    out: dict[str, Any] = {"fixed": {}, "learned": {}}
    for name in r.quality:
        out["fixed"][name] = figures(study, r.quality[name], r.cost[name])
    cheap, mid, top = r.cost["cheap"], r.cost["mid"], r.cost["top"]
    qc, qm, qt = r.quality["cheap"], r.quality["mid"], r.quality["top"]
    answer = sparse.csr_matrix(study.answer)
    agree = sparse.csr_matrix(
        np.column_stack([study.agree_probe, study.answer[:, 0] * study.agree_probe])
    )
    # The rule-A continuation after cheap and probe: mid, shipped if it agrees, else top.
    continue_q = np.where(study.mid_agrees > 0, qm, qt)
    continue_c = mid + (1 - study.mid_agrees) * top
    paid = cheap + study.probe_cost
    choices = {
        # Lever: an answer-aware gate on the cheap answer alone (no probe, no judge).
        "gate_answer_else_mid": (answer, Choice(qc, cheap, qm, cheap + mid)),
        "gate_answer_else_top": (answer, Choice(qc, cheap, qt, cheap + top)),
        "gate_answer_text_else_mid": (
            sparse.hstack([study.text, answer]).tocsr(),
            Choice(qc, cheap, qm, cheap + mid),
        ),
        # Lever: agreement learned with the text and answer features (cheap + probe paid).
        "agreement_learned_else_rule_a": (
            sparse.hstack([study.text, answer, agree]).tocsr(),
            Choice(qc, paid, continue_q, paid + continue_c),
        ),
        "agreement_learned_else_mid": (
            sparse.hstack([study.text, answer, agree]).tocsr(),
            Choice(qc, paid, qm, paid + mid),
        ),
        # Lever: the direct route (pre-generation, text only): cheap alone or top alone.
        "direct_text_cheap_or_top": (study.text, Choice(qc, cheap, qt, top)),
        "direct_text_cheap_or_mid": (study.text, Choice(qc, cheap, qm, mid)),
    }
    scores: dict[str, Array] = {}
    for name, (features, choice) in choices.items():
        progress(name)
        scores[name] = _fit_scores(study, features, qc)
        out["learned"][name] = {
            target: figures(study, *cross_fitted(study, scores[name], choice, value))
            for target, value in TARGETS.items()
        }
    # Lever: per-task structure (thresholds per task; the task stands for the prompt format).
    name = "agreement_learned_else_rule_a"
    out["learned"][f"{name}@per_task"] = {
        target: figures(
            study,
            *cross_fitted(study, scores[name], choices[name][1], value, by_task=True),
        )
        for target, value in TARGETS.items()
    }
    # Lever: judging with mid where a top judge costs more than it saves, chosen per record
    # by a text-only score: mid's answer judged by top, or mid alone.
    progress("mid_judge_or_not")
    needs = _fit_scores(study, study.text, qm)
    out["learned"]["mid_alone_else_mid_judged_by_top"] = {
        target: figures(
            study,
            *cross_fitted(
                study, needs, Choice(qm, mid, r.quality["mid_judged"], r.cost["mid_judged"]), value
            ),
        )
        for target, value in TARGETS.items()
    }
    out["per_task"] = {
        task: {
            "rows": int((study.tasks == task).sum()),
            **{
                name: figures(
                    _restrict(study, study.tasks == task),
                    r.quality[name][study.tasks == task],
                    r.cost[name][study.tasks == task],
                )
                for name in (AGREEMENT, AGREEMENT_MID, "cheap_judged", "mid")
            },
        }
        for task in np.unique(study.tasks)
    }
    return out


def _restrict(study: Study, rows: npt.NDArray[np.bool_]) -> Study:
    runs = Runs(
        {k: v[rows] for k, v in study.runs.quality.items()},
        {k: v[rows] for k, v in study.runs.cost.items()},
    )
    return Study(
        runs,
        study.text[rows],
        study.answer[rows],
        study.agree_probe[rows],
        study.mid_agrees[rows],
        study.probe_cost[rows],
        study.folds[rows],
        study.tasks[rows],
    )


def _table(report: dict[str, Any]) -> str:
    lines = [f"{'policy':44} {'target':7} {'d points':>9} {'SE':>5} {'share':>6} {'x cheaper':>9}"]
    for name, f in report["fixed"].items():
        lines.append(
            f"{name:44} {'fixed':7} {f['quality_diff_points']:+9.2f} "
            f"{f['quality_diff_se_points']:5.2f} {f['quality_share_of_top']:6.3f} "
            f"{f['times_cheaper']:9.2f}"
        )
    for name, by_target in report["learned"].items():
        for target, f in by_target.items():
            lines.append(
                f"{name:44} {target:7} {f['quality_diff_points']:+9.2f} "
                f"{f['quality_diff_se_points']:5.2f} {f['quality_share_of_top']:6.3f} "
                f"{f['times_cheaper']:9.2f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; print a table (or JSON) and write it with --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="the first N records only")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env(os.environ)
    data = args.data or default_data_path(os.environ)

    def progress(what: str) -> None:
        if not args.quiet:
            print(f"levers: {what}", file=sys.stderr)

    progress("engine runs (calibration tables and agreement rules)")
    study = build(data, settings, args.folds, args.workers, args.limit)
    report = {"data_file": data.name, "folds": args.folds, **study_levers(study, progress)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
