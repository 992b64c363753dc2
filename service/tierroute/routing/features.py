"""Query shape signals for the heuristic router and the text the classifier sees.

Both training and serving call `classifier_text`, so the two can never disagree on
lower-casing or on the bounded prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierroute.settings import HeuristicConfig

MULTI_STEP = re.compile(
    r"\b(then|after that|afterwards|next|finally|subsequently|step\s*\d+|first(ly)?,)\b"
)

# Keyword lists for the query-type classifier; the first type with the most hits wins,
# ties go to the order below (coding before analytical before creative before factual).
QUERY_TYPE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "coding": (
        "code",
        "function",
        "python",
        "def ",
        "return",
        "class ",
        "bug",
        "compile",
        "script",
        "javascript",
        "sql",
        "regex",
        "api",
        "assert",
        "stack trace",
        "exception",
        "algorithm",
        "implement",
        "print(",
        "import ",
        "variable",
        "loop",
    ),
    "analytical": (
        "why",
        "analyse",
        "analyze",
        "analysis",
        "analytical",
        "compare",
        "evaluate",
        "explain",
        "calculate",
        "compute",
        "prove",
        "derive",
        "solve",
        "how many",
        "how much",
        "probability",
        "estimate",
        "reason",
        "trade-off",
        "tradeoff",
        "implication",
        "what is the value",
        "find the",
    ),
    "creative": (
        "write a story",
        "poem",
        "story",
        "creative",
        "imagine",
        "slogan",
        "lyrics",
        "brainstorm",
        "fiction",
        "compose",
        "invent",
    ),
}
QUERY_TYPES = ("factual", "analytical", "creative", "coding")


def _keyword_alternatives(words: tuple[str, ...]) -> str:
    # Whole words only ("api" must not match "capital"); a keyword ending in punctuation or
    # a space ("print(", "def ") is matched as written. Longest first, so "how many" wins
    # over a shorter keyword at the same place.
    return "|".join(
        re.escape(w) + (r"\b" if w[-1].isalnum() else "")
        for w in sorted(words, key=len, reverse=True)
    )


# One pass over the text finds every keyword of every type; the group name says which.
_TYPE_PATTERN = re.compile(
    r"\b(?:"
    + "|".join(
        f"(?P<{kind}>{_keyword_alternatives(words)})" for kind, words in QUERY_TYPE_KEYWORDS.items()
    )
    + ")"
)
_TIE_ORDER = ("coding", "analytical", "creative")


@dataclass(frozen=True)
class ShapeFeatures:
    """What the heuristic knows about a query before any model is called."""

    estimated_tokens: int
    has_code_block: bool
    multi_step: bool
    query_type: str


def estimate_tokens(text: str, tokens_per_word: float = 1.3) -> int:
    """Rough token count: words x 1.3, as the published recipe does."""
    return round(len(text.split()) * tokens_per_word)


def query_type(text: str) -> str:
    """Keyword-classify a query as factual, analytical, creative or coding."""
    hits = dict.fromkeys(_TIE_ORDER, 0)
    for match in _TYPE_PATTERN.finditer(text.lower()):
        hits[match.lastgroup or "factual"] += 1
    best = max(_TIE_ORDER, key=lambda kind: (hits[kind], -_TIE_ORDER.index(kind)))
    return best if hits[best] else "factual"


def shape_features(text: str, config: HeuristicConfig) -> ShapeFeatures:
    """Compute the heuristic's shape signals for `text`.

    Length and code fences look at the whole text (C-speed scans); the keyword signals look
    at a bounded prefix so that their cost per query is fixed however long the input.
    """
    # Lower-casing once lets the patterns run case-sensitively, which re does much faster.
    head = text[: config.scan_chars].lower()
    return ShapeFeatures(
        estimated_tokens=estimate_tokens(text, config.tokens_per_word),
        has_code_block="```" in text or "~~~" in text,
        multi_step=bool(MULTI_STEP.search(head)),
        query_type=query_type(head),  # lower() of lower-case text is a cheap copy
    )


def classifier_text(text: str, prefix_chars: int) -> str:
    """The exact string the classifier featurises: a bounded prefix, lower-cased in Python.

    Lower-casing happens here rather than inside the ONNX graph because onnxruntime's
    StringNormalizer needs an installed locale and differs from Python on some characters.
    """
    return text[:prefix_chars].lower()
