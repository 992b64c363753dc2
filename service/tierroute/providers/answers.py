"""Final answers: extracting them from an answer's text, and comparing two of them.

Two comparisons live here, one for each user:

- `final_answer` and `final_answers_agree`: the Cascade's agreement check (a tier's answer
  against a probe's or another tier's), used by serving and, through the engine, by the
  evaluation. Only an explicitly stated final answer counts: "the answer is (X)" or
  "Answer: X" for multiple choice, a JSON `"answer"` field (GSM8K, CRUXEval), the last
  `\\boxed{...}` (competition maths). An answer that states none has no final answer, and
  no final answer agrees with anything (not even another missing one): the check then
  escalates, as a disagreement does. docs/cascade.md, "Agreement".
- `extract_answer` and `answers_agree`: the replay judge's reading of a candidate that is
  not a recorded response, which also falls back to the last line.
"""

from __future__ import annotations

import json
import re

# The option letter is matched case-sensitively so "the answer is a list" is not option A.
_MCQ = re.compile(r"(?i:answer is):?\s*\(?([A-J])\)?(?![A-Za-z])")
_JSON_ANSWER = re.compile(r'"answer"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\n]+)')
_BOXED = "\\boxed{"
_INTEGER = re.compile(r"[-+]?\d+")

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?")


def _last_boxed(text: str) -> str | None:
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


# "The answer is **B**", "Answer: (F) 0.32", "the answer is (E) hot day": an explicit
# choice; the letter is case-sensitive so "the answer is a list" is not option A.
_STATED_CHOICE = re.compile(r"(?i:\banswer(?:\s+is)?)\s*:?\s*\**\s*\(?([A-J])\)?\**(?![A-Za-z])")


def _marked(text: str, choice: re.Pattern[str]) -> tuple[bool, str | None]:
    """(whether `text` marks a final answer, that answer): a choice letter matched by
    `choice`, else a JSON "answer" field, else the last \\boxed{...}."""
    letters = choice.findall(text)
    if letters:
        return True, str(letters[-1])
    fields = _JSON_ANSWER.findall(text)
    if fields:
        raw = fields[-1].strip()
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        return True, str(value).strip() or None
    boxed = _last_boxed(text)
    if boxed is not None:
        return True, boxed.strip() or None
    return False, None


def stated_answer(text: str) -> str | None:
    """The final answer `text` states explicitly, or None when it states none.

    Tried in order: a multiple-choice letter after "answer is" / "Answer:", a JSON
    "answer" field, the last \\boxed{...}. Prose with none of these has no final answer.
    """
    return _marked(text, _STATED_CHOICE)[1]


def final_answer(text: str) -> str:
    """The comparable final answer `text` states ("" when it states none)."""
    return normalise(stated_answer(text))


def final_answers_agree(first: str, second: str) -> bool:
    """Whether two answers' texts state the same final answer; one that states none never
    agrees."""
    left = final_answer(first)
    return bool(left) and left == final_answer(second)


def extract_answer(text: str) -> str | None:
    """The final answer stated in `text`, or None when it states none.

    Tried in order: "the answer is (X)" (multiple choice), a JSON "answer" field, the last
    \\boxed{...}, then the last non-empty line.
    """
    found, answer = _marked(text, _MCQ)
    if found:
        return answer
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return re.sub(r"^(final answer|answer)\s*[:=]\s*", "", lines[-1], flags=re.IGNORECASE)


def normalise(answer: str | None) -> str:
    """A comparable form of an extracted answer; "" means no answer."""
    if answer is None:
        return ""
    text = answer.strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        text = boxed
    text = text.strip().strip("$").strip().rstrip(".").strip()
    if len(text) == 3 and text[0] == "(" and text[2] == ")":
        text = text[1]
    compact = text.replace(",", "").replace("$", "").replace("%", "").replace(" ", "")
    if _INTEGER.fullmatch(compact):
        # Integers compare exactly: floats would merge large distinct values.
        return str(int(compact))
    if _NUMBER.fullmatch(compact):
        value = float(compact)
        return str(int(value)) if value.is_integer() else repr(value)
    return re.sub(r"\s+", " ", text).lower()


def answers_agree(a: str | None, b: str | None) -> bool:
    """Whether two extracted answers name the same thing; a missing answer never agrees."""
    left, right = normalise(a), normalise(b)
    return bool(left) and left == right
