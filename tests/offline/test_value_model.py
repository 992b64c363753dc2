"""The Cascade's value model: training, ONNX export and parity, and its calibration search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_settings
from tierroute.errors import ConfigError, ModelLoadError
from tierroute.model.operating import OPERATING_POINTS, CalibrationData, Ladder
from tierroute.model.value import ValueModel, parse_actions, top_action
from tierroute.offline.evaluation import calibration as cal
from tierroute.offline.evaluation import valuefit
from tierroute.offline.evaluation.calibration_probe import with_probe_tokens
from tierroute.offline.training.value_fit import (
    check_parity,
    export,
    fit_value_pipeline,
    predict,
    solve_points,
    write_value_model,
)
from tierroute.routing import RiskThresholds, RouteQuery, Router
from tierroute.routing.features import classifier_text
from tierroute.routing.plan import (
    ACTIONS,
    VALUE_ACTIONS,
    CascadeAction,
    CascadePlan,
    agreement_applies,
    allowed_actions,
    choose,
    plan_from,
)
from tierroute.settings import ProbeConfig

N_ACTIONS = len(ACTIONS)


LADDER = Ladder((1.0, 3.0, 5.0), (5.0, 15.0, 25.0), (1.25,) * 3, (0.1,) * 3)


def _training_table(n: int = 240) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts whose topic decides which actions end correct and how many tokens they bill."""
    rng = np.random.default_rng(7)
    texts, quality, tokens = [], [], []
    # Output tokens per action and tier: cheap answers, judges (mid), escalations (top).
    base = np.zeros((N_ACTIONS, 3, 2))
    base[:, :, 0] = 200.0
    base[:, :, 1] = [
        [300, 0, 0],
        [300, 40, 0],
        [300, 40, 0],
        [0, 300, 0],
        [0, 300, 60],
        [0, 0, 300],
    ]
    for i in range(n):
        hard = i % 3 == 0
        texts.append(
            f"question {i}: {'prove the integral of the polynomial' if hard else 'name the river'}"
        )
        # Hard queries: only the judged or top actions tend to be right; easy: all are.
        p = np.array([0.2, 0.7, 0.6, 0.4, 0.8, 0.85]) if hard else np.full(N_ACTIONS, 0.9)
        quality.append((rng.random(N_ACTIONS) < p).astype(float))
        scale = (3.0 if hard else 1.0) * np.exp(rng.normal(0, 0.1, (N_ACTIONS, 3, 1)))
        tokens.append(base * scale * (base > 0))
    return [classifier_text(t, 4096) for t in texts], np.array(quality), np.array(tokens)


@pytest.fixture(scope="module")
def fitted() -> tuple[object, list[str]]:
    texts, quality, tokens = _training_table()
    return fit_value_pipeline(texts, quality, tokens), texts


def test_the_exported_model_reproduces_scikit_learn(fitted: tuple[object, list[str]]) -> None:
    """onnxruntime, through the serving call, matches the pipeline on data and hostile text."""
    pipeline, texts = fitted
    report = check_parity(
        pipeline,  # type: ignore[arg-type]
        export(pipeline),  # type: ignore[arg-type]
        texts,
        prefix_chars=4096,
        ladder=LADDER,
        price_per_correct_usd=1e-3,
    )
    assert report.max_abs_diff_p < 1e-4
    assert report.max_rel_diff_tokens < 1e-4
    assert report.rows > len(texts)


def test_the_export_is_byte_for_byte_deterministic(fitted: tuple[object, list[str]]) -> None:
    """The same fitted model exports to the same bytes (the bundle is reproducible)."""
    pipeline, _ = fitted
    assert export(pipeline) == export(pipeline)  # type: ignore[arg-type]


def test_the_model_learns_which_queries_need_a_judge(fitted: tuple[object, list[str]]) -> None:
    """Hard queries get a lower P(correct) for the unjudged cheap action and more tokens."""
    pipeline, texts = fitted
    p, tokens = predict(pipeline, texts, 3)  # type: ignore[arg-type]
    hard = np.arange(len(texts)) % 3 == 0
    assert p[hard, 0].mean() < p[~hard, 0].mean() - 0.3
    cost = LADDER.price(tokens)
    assert cost[hard, 5].mean() > 2 * cost[~hard, 5].mean()
    # An action never calls a tier it does not reach: those token heads learn zero.
    assert np.abs(tokens[:, 5, 0, 1]).max() < 1.0


def _evidence(texts: list[str], quality: np.ndarray, tokens: np.ndarray) -> CalibrationData:
    pipeline = fit_value_pipeline(texts, quality, tokens)
    p, predicted = predict(pipeline, texts, 3)
    full = np.concatenate([tokens, np.zeros_like(tokens)], axis=3)
    return CalibrationData(p, predicted, quality, full, top_action(ACTIONS, 3))


def _write(tmp_path: Path, pipeline: object, texts: list[str]) -> dict[str, object]:
    _, quality, tokens = _training_table()
    evidence = _evidence(texts, quality, tokens)
    return write_value_model(
        tmp_path,
        pipeline,  # type: ignore[arg-type]
        evidence,
        ladder=LADDER,
        points=solve_points(evidence, LADDER, OPERATING_POINTS),
        default_point="parity",
        prefix_chars=4096,
        parity_texts=texts[:20],
    )


def test_write_and_load_round_trip(tmp_path: Path, fitted: tuple[object, list[str]]) -> None:
    """The section written names a model ValueModel.load accepts and plans with."""
    pipeline, texts = fitted
    section = _write(tmp_path, pipeline, texts)
    model = ValueModel.load(tmp_path, section, n_tiers=3, prefix_chars=4096, where="t.json")
    plan = model.plan("question 3: prove the integral of the polynomial")
    p, cost = model.estimate("question 3: prove the integral of the polynomial")
    assert plan.index == choose(p, cost, model.points["parity"])
    assert plan.action == ACTIONS[plan.index]
    assert set(model.points) == set(OPERATING_POINTS)
    assert json.loads(json.dumps(section)) == section


def test_loading_refuses_a_changed_model_file(
    tmp_path: Path, fitted: tuple[object, list[str]]
) -> None:
    """A value.onnx whose hash is not the recorded one is refused, naming the mismatch."""
    pipeline, texts = fitted
    section = _write(tmp_path, pipeline, texts)
    (tmp_path / "value.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="SHA-256"):
        ValueModel.load(tmp_path, section, n_tiers=3, prefix_chars=4096, where="t.json")


def test_loading_refuses_a_missing_model_file(tmp_path: Path) -> None:
    """A section naming a file the bundle lacks is a ModelLoadError naming it."""
    section = {"model": "value.onnx", "sha256": "0", "actions": [], "price_per_correct_usd": 1}
    section["actions"] = [a.as_dict() for a in ACTIONS]
    with pytest.raises(ModelLoadError, match="value model file not found"):
        ValueModel.load(tmp_path, section, n_tiers=3, prefix_chars=4096, where="t.json")


def test_a_price_change_flips_the_plan(tmp_path: Path, fitted: tuple[object, list[str]]) -> None:
    """The same bundle, loaded with another tier's price, chooses another action: prices
    reach decisions at load time (here a cheap-tier output price 50x higher moves a query
    off the cheap tier)."""
    pipeline, texts = fitted
    section = _write(tmp_path, pipeline, texts)
    text = "question 4: name the river"
    base = ValueModel.load(tmp_path, section, n_tiers=3, prefix_chars=4096, where="t.json")
    dear = Ladder((1.0, 3.0, 5.0), (250.0, 15.0, 25.0), (1.25,) * 3, (0.1,) * 3)
    repriced = ValueModel.load(
        tmp_path, section, n_tiers=3, prefix_chars=4096, where="t.json", ladder=dear
    )
    assert base.plan(text).start == 0
    assert repriced.plan(text).start > 0
    assert repriced.points != base.points


@pytest.mark.parametrize(
    "actions",
    [[], [{"start": 3, "judge": "none"}], [{"start": 0, "judge": "sometimes"}], "cheap"],
)
def test_bad_action_lists_are_refused(actions: object) -> None:
    """Empty, out-of-range and unknown actions are load errors, not routing surprises."""
    with pytest.raises(ModelLoadError):
        parse_actions(actions, 3, "t.json")


def test_training_refuses_inconsistent_tables() -> None:
    """Mismatched shapes and negative token counts are refused."""
    texts, quality, tokens = _training_table(30)
    with pytest.raises(ConfigError, match="shapes disagree"):
        fit_value_pipeline(texts[:-1], quality, tokens)
    with pytest.raises(ConfigError, match="shapes disagree"):
        fit_value_pipeline(texts, quality, tokens[..., 0])
    with pytest.raises(ConfigError, match="negative"):
        fit_value_pipeline(texts, quality, -tokens)


def test_the_policy_trades_cost_against_quality_at_its_price() -> None:
    """Price 0 takes the cheapest action; a high price the most likely correct one."""
    p = (0.5, 0.8, 0.7, 0.6, 0.85, 0.9)
    cost = (1e-5, 6e-5, 4e-5, 1.5e-4, 4e-4, 9e-4)
    assert plan_from(p, cost, 0.0).action == CascadeAction(0, "none")
    assert plan_from(p, cost, 10.0).action == CascadeAction(2, "none")
    # At $1e-3 per correct answer, judging the cheap answer (0.3 more correct for 5e-5)
    # pays, and the top tier (0.1 more for 8.4e-4) does not.
    assert plan_from(p, cost, 1e-3).action == CascadeAction(0, "all")


def _inputs(n: int = 400) -> cal.Inputs:
    """Search inputs whose value estimates are the truth plus noise."""
    rng = np.random.default_rng(3)
    # The fixed settings without the agreement columns (no probe), six actions.
    n_cols = len(cal.COLUMNS) - len(cal.AGREEMENT_COLUMNS)
    quality = (rng.random((n, n_cols)) < 0.5 + 0.05 * np.arange(n_cols) % 0.4).astype(float)
    cost = np.tile(np.array([1, 6, 6, 15, 40, 40, 90, 4, 4], dtype=float) * 1e-5, (n, 1))
    tables = cal.Tables(
        quality=quality,
        cost=cost,
        judge_cost=cost * 0.1,
        latency_ms=rng.random((n, n_cols)) * 1000,
        final=np.zeros((n, n_cols), dtype=np.int64),
        escalated=np.zeros((n, n_cols), dtype=bool),
    )
    columns = tables.action_columns
    value_p = np.clip(quality[:, columns] + rng.normal(0, 0.3, (n, N_ACTIONS)), 0, 1)
    return _with_signals(rng, tables, value_p, cost[:, columns])


def _with_signals(
    rng: np.random.Generator, tables: cal.Tables, value_p: np.ndarray, value_cost: np.ndarray
) -> cal.Inputs:
    """Search inputs over `tables` with random classifier probabilities and sampler draws."""
    n = len(value_p)
    proba = rng.dirichlet(np.ones(3), size=n)
    return cal.Inputs(
        risks=np.column_stack([proba[:, 1] + proba[:, 2], proba[:, 2], np.zeros(n)]),
        confidence=proba.max(axis=1),
        type_index=rng.integers(0, 4, n),
        draw=rng.random(n),
        tables=tables,
        value_p=value_p,
        value_cost=value_cost,
    )


def test_value_columns_follow_the_per_row_choice() -> None:
    """A record's table column is the column playing its chosen action (serial, no bound)."""
    inputs = _inputs()
    rows = np.ones(400, dtype=bool)
    params = cal.Params((0.5, 0.5), (1.0, 1.0, 1.0, 1.0), 0.0, 1.0, price_per_correct_usd=5e-4)
    cols = cal.columns_for(inputs, params, rows)
    assert inputs.value_p is not None
    assert inputs.value_cost is not None
    for i in range(400):
        action = choose(inputs.value_p[i], inputs.value_cost[i], 5e-4)
        assert cols[i] == cal.ACTION_COLUMNS[action]


def test_value_columns_speculate_only_on_judged_actions_below_the_bound() -> None:
    """Judged starts speculate exactly when the classifier's confidence is below the bound."""
    inputs = _inputs()
    rows = np.ones(400, dtype=bool)
    bound = float(np.median(inputs.confidence))
    params = cal.Params((0.5, 0.5), (1.0, 1.0, 1.0, 1.0), bound, 1.0, price_per_correct_usd=5e-4)
    cols = cal.columns_for(inputs, params, rows)
    serial = cal.columns_for(inputs, cal.Params((0.5, 0.5), (1.0,) * 4, 0.0, 1.0, 5e-4), rows)
    judged = np.array([cal.COLUMNS[c][1] != "never" for c in serial])
    speculative = np.array([cal.COLUMNS[c][2] for c in cols])
    below = inputs.confidence < bound
    assert (judged & below).any()
    assert (judged & ~below).any()
    np.testing.assert_array_equal(speculative, judged & below)
    # Speculation changes the column, never the action (start tier and judge mode).
    assert [cal.COLUMNS[c][:2] for c in cols] == [cal.COLUMNS[c][:2] for c in serial]


def test_value_estimates_are_out_of_fold() -> None:
    """A fold's estimates come from a model that never saw its outcomes: changing them moves
    every other fold's estimates and none of its own.
    """
    texts, quality, cost = _training_table(150)
    folds = np.arange(150) % 3
    p, c = valuefit.out_of_fold(texts, quality, cost, folds)
    changed = quality.copy()
    changed[folds == 0] = 1 - changed[folds == 0]
    p2, c2 = valuefit.out_of_fold(texts, changed, cost, folds)
    np.testing.assert_array_equal(p[folds == 0], p2[folds == 0])
    np.testing.assert_array_equal(c[folds == 0], c2[folds == 0])
    assert np.abs(p[folds != 0] - p2[folds != 0]).max() > 0.01


def test_the_price_search_meets_a_cost_budget() -> None:
    """Toward a budget, the searched price's configuration stays within it on its rows."""
    inputs = _inputs()
    rows = np.ones(400, dtype=bool)
    target = cal.CalibrationTarget("max_cost_per_query", 0.3, relative=True)
    params = cal.search(inputs, rows, target)
    assert params.policy == "value"
    figures = cal.figures(inputs, cal.columns_for(inputs, params, rows), rows, ["c", "m", "e"])
    assert figures["cost_ratio_vs_always_expensive"] <= 0.3
    # A bigger budget buys at least as many correct answers.
    bigger = cal.search(inputs, rows, cal.CalibrationTarget("max_cost_per_query", 0.6, True))
    more = cal.figures(inputs, cal.columns_for(inputs, bigger, rows), rows, ["c", "m", "e"])
    assert more["quality"] >= figures["quality"]


def _fresh_inputs(evidence: CalibrationData, ladder: Ladder) -> cal.Inputs:
    """Calibration inputs built from scratch on the same rows, priced with `ladder`: every
    table column plays the action whose serial column it is (speculative ones copy it)."""
    # Column -> action: serial columns play their action (ACTION_COLUMNS); the speculative
    # columns 2, 5 and 8 copy their serial twins' actions 1, 4 and 2.
    source = [0, 1, 1, 3, 4, 4, 5, 2, 2]
    assert [source[c] for c in cal.ACTION_COLUMNS[:N_ACTIONS]] == list(range(N_ACTIONS))
    quality = evidence.quality[:, source]
    cost = ladder.price(evidence.tokens[:, source])
    rng = np.random.default_rng(5)
    tables = cal.Tables(
        quality=quality,
        cost=cost,
        judge_cost=np.zeros_like(cost),
        latency_ms=np.ones_like(cost),
        final=np.zeros(cost.shape, dtype=np.int64),
        escalated=np.zeros(cost.shape, dtype=bool),
    )
    return _with_signals(rng, tables, evidence.oof_p, ladder.price(evidence.oof_tokens))


@pytest.mark.parametrize("ladder_name", ["calibration", "flat"])
def test_re_solving_stored_predictions_equals_a_fresh_calibration(ladder_name: str) -> None:
    """Operating points solved from the stored out-of-fold predictions (what a server does
    on a price change) are the prices calibration's own search finds on the same
    predictions priced the same way."""
    texts, quality, tokens = _training_table()
    evidence = _evidence(texts, quality, tokens)
    ladder = (
        LADDER
        if ladder_name == "calibration"
        else Ladder((2.0,) * 3, (10.0,) * 3, (1.25,) * 3, (0.1,) * 3)
    )
    solved = evidence.solve(ladder, OPERATING_POINTS)
    inputs = _fresh_inputs(evidence, ladder)
    everything = np.ones(len(texts), dtype=bool)
    for name, point in OPERATING_POINTS.items():
        target = cal.CalibrationTarget(point.kind, point.value, relative=True)
        try:
            fresh = cal.search(inputs, everything, target).price_per_correct_usd
        except ConfigError:
            assert not solved[name].feasible
            continue
        assert solved[name].feasible
        assert solved[name].price_per_correct_usd == fresh


@pytest.mark.parametrize(
    "prompt",
    [
        "Question: Which gas?\nOptions: A. neon\nB. argon\nC. xenon\nAnswer: Let's think.",
        'Solve it. Please show your final answer in the `answer` field, e.g. "answer": "42".',
        "assert f([1, 2], 3) == ??",
        "Janet has 16 eggs and eats 3. How many are left?",
        "Find the sum of all integers x with |x| < 7.",
    ],
)
def test_agreement_applies_where_answers_state_a_final_answer(prompt: str) -> None:
    """Options, an answer format, a code-output assertion or a short quantitative question:
    answers will state a final answer the agreement check can compare."""
    assert agreement_applies(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a poem about the 3 rivers of my town?",
        "Explain how RNA sequencing works.",
        "Implement a linux kernel module that prints 42.",
        "What does this do?\n```python\nprint(1)\n```",
        "Why is the sky blue?",
        "Summarise the following report: " + "quarterly figures 2024. " * 100,
    ],
)
def test_agreement_does_not_apply_to_open_ended_prompts(prompt: str) -> None:
    """Requests to write, explain or implement, code to discuss, questions without a
    quantity and long briefs have no comparable final answer."""
    assert not agreement_applies(prompt)


def test_the_plan_never_takes_agreement_where_it_cannot_apply() -> None:
    """However good agreement looks, an open-ended prompt's plan takes another action;
    a question with a final answer takes it."""
    p = [0.5] * 6 + [0.99, 0.99]
    cost = [1e-3] * 6 + [1e-4, 1e-4]
    open_ended = allowed_actions(VALUE_ACTIONS, "Explain how tides work.")
    closed = allowed_actions(VALUE_ACTIONS, "What is 17 times 3?")
    assert closed is None
    assert plan_from(p, cost, 0.01, VALUE_ACTIONS, allowed=open_ended).action.judge != "agree"
    assert plan_from(p, cost, 0.01, VALUE_ACTIONS, allowed=closed).action.judge == "agree"


def test_a_value_model_with_a_probe_loads_priced_with_it(tmp_path: Path) -> None:
    """Fitted over VALUE_ACTIONS with the probe as a fourth payer, the model writes, loads
    with the configured tiers' ladder (the probe's calibration price appended) and plans
    agreement only where it applies."""
    texts, quality6, tokens6 = _training_table()
    n = len(texts)
    quality = np.concatenate([quality6, np.ones((n, 2))], axis=1)
    tokens = np.zeros((n, len(VALUE_ACTIONS), 4, 2))
    tokens[:, :6, :3] = tokens6
    tokens[:, 6:, 0] = tokens6[:, :1, 0]
    tokens[:, 6:, 3] = [200.0, 100.0]
    pipeline = fit_value_pipeline(texts, quality, tokens)
    p, predicted = predict(pipeline, texts, 4)
    full = np.concatenate([tokens, np.zeros_like(tokens)], axis=3)
    evidence = CalibrationData(p, predicted, quality, full, top_action(VALUE_ACTIONS, 3))
    ladder = LADDER.with_probe(0.25, 1.25)
    section = write_value_model(
        tmp_path,
        pipeline,
        evidence,
        ladder=ladder,
        points=solve_points(evidence, ladder, OPERATING_POINTS),
        default_point="parity",
        prefix_chars=4096,
        parity_texts=texts[:20],
        actions=VALUE_ACTIONS,
        probe=ProbeConfig("probe-model", 0.25, 1.25, name="probe"),
    )
    assert section["probe"]["name"] == "probe"
    three_tiers = Ladder(LADDER.input_usd_per_mtok, (5.0, 15.0, 30.0), (1.25,) * 3, (0.1,) * 3)
    model = ValueModel.load(
        tmp_path, section, n_tiers=3, prefix_chars=4096, where="t.json", ladder=three_tiers
    )
    assert model.ladder.input_usd_per_mtok == (1.0, 3.0, 5.0, 0.25)
    assert model.plan("question 4: name the river?").action.judge in ("agree", "agree_mid")
    assert model.plan("Explain the river to me").action.judge not in ("agree", "agree_mid")


def test_the_calibration_search_takes_agreement_only_where_allowed() -> None:
    """Inputs' per-row `allowed` keeps the agreement actions off the rows they cannot apply
    to, as the served plan does."""
    rng = np.random.default_rng(9)
    n = 200
    tables = cal.Tables(
        quality=np.ones((n, len(cal.COLUMNS))),
        cost=np.ones((n, len(cal.COLUMNS))),
        judge_cost=np.zeros((n, len(cal.COLUMNS))),
        latency_ms=np.ones((n, len(cal.COLUMNS))),
        final=np.zeros((n, len(cal.COLUMNS)), dtype=np.int64),
        escalated=np.zeros((n, len(cal.COLUMNS)), dtype=bool),
    )
    value_p = np.full((n, 8), 0.5)
    value_p[:, 6] = 0.99
    allowed = np.ones((n, 8), dtype=bool)
    allowed[: n // 2, 6:] = False
    inputs = dataclasses.replace(
        _with_signals(rng, tables, value_p, np.full((n, 8), 1e-4)), allowed=allowed
    )
    chosen = inputs.action_index(np.ones(n, dtype=bool), 0.01)
    assert (chosen[: n // 2] < 6).all()
    assert (chosen[n // 2 :] == 6).all()


def test_probe_tokens_are_what_the_agreement_runs_paid_beyond_the_tiers() -> None:
    """The probe's payer row: the prompt's input tokens, and the output tokens the rest of
    the run's cost paid at the probe's output price; other columns have none."""
    tiers = make_settings().tiers
    probe = ProbeConfig("p", 0.25, 1.25)
    tokens = np.zeros((2, len(cal.COLUMNS), 3, 4))
    tokens[0, :, 0, :2] = [400, 100]
    tokens[1, :, 0, :2] = [800, 50]
    tier_cost = Ladder.of(tiers).price(tokens)
    probe_cost = np.array([400 * 0.25 + 30 * 1.25, 800 * 0.25 + 70 * 1.25]) / 1e6
    cost = tier_cost.copy()
    cost[:, list(cal.AGREEMENT_COLUMNS)] += probe_cost[:, None]
    out = with_probe_tokens(tokens, cost, tiers, probe, cal.AGREEMENT_COLUMNS)
    assert out.shape == (2, len(cal.COLUMNS), 4, 4)
    np.testing.assert_array_equal(out[:, 9, 3, :2], [[400, 30], [800, 70]])
    np.testing.assert_array_equal(out[:, 0, 3], 0)


class _PlanOnlyScorer:
    """A scorer that scores and plans in two calls, as the evaluation's fold scorers do."""

    version = "plan-only"
    thresholds = RiskThresholds((0.1, 0.3))
    cascade_thresholds = None

    def predict_proba(self, text: str) -> list[float]:
        return [0.2, 0.3, 0.5]

    def cascade_plan(self, text: str, point: str | None = None) -> CascadePlan:
        return plan_from([0.9] + [0.1] * 5, [0.001] * 6, 0.01, ACTIONS)


def test_the_router_plans_with_a_scorer_that_only_has_cascade_plan() -> None:
    """A Cascade routed by a scorer without a one-call `score` still gets its value plan:
    the cross-fitted evaluation's operating points depend on it."""
    decision = Router(make_settings(), _PlanOnlyScorer()).decide(
        RouteQuery(text="What is 2 + 2?"), for_cascade=True
    )
    assert decision.plan is not None
    assert (decision.plan.action, decision.tier.name) == (CascadeAction(0, "none"), "cheap")
