"""Final answers for the agreement check: what counts as one, and when two agree."""

from __future__ import annotations

import pytest

from tierroute.providers import final_answer, final_answers_agree


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Step by step... The answer is (C).", "c"),
        ("The answer is **B**.", "b"),
        ("\\[ \\text{Answer: (F) } 0.32 \\mu C \\]", "f"),
        ('{"reasoning": "3 + 4", "answer": "1,200"}', "1200"),
        ('{"reasoning": "...", "answer": 7.0}', "7"),
        ("so the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("The answer is a list of numbers.", ""),
        ("which is closest to option (I) 1600 lb.", ""),
        ("", ""),
    ],
)
def test_final_answer_per_format(text: str, answer: str) -> None:
    """Each task format's stated answer is found and normalised; prose states none."""
    assert final_answer(text) == answer


def test_same_final_answer_in_different_words_agrees() -> None:
    """Two answers that word their working differently but state one answer agree."""
    assert final_answers_agree("First... The answer is (D).", "Clearly the answer is D")
    assert final_answers_agree('{"answer": "12"}', '{"answer": "12.0"}')


def test_different_final_answers_disagree() -> None:
    """Different stated answers disagree."""
    assert not final_answers_agree("The answer is (D).", "The answer is (E).")


def test_no_final_answer_agrees_with_nothing() -> None:
    """An answer that states no final answer agrees with nothing, not even the same prose."""
    prose = "It depends on the reading of the question."
    assert not final_answers_agree(prose, prose)
    assert not final_answers_agree(prose, "The answer is (A).")
