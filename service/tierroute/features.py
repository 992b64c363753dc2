"""Query shape signals for the heuristic router and the text the classifier sees.

Both training and serving call `classifier_text`, so the two can never disagree on
lower-casing or on the bounded prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierroute.settings import HeuristicConfig

CODE_FENCE = re.compile(r"```|~~~")
MULTI_STEP = re.compile(
    r"\b(then|after that|afterwards|next|finally|subsequently|step\s*\d+|first(ly)?,)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"\S+")

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
        "analyse", "analyze", "analysis", "analytical",
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


def _keyword_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    # Whole words only ("api" must not match "capital"); a keyword ending in punctuation or
    # a space ("print(", "def ") is matched as written.
    parts = [
        re.escape(w.strip()) + (r"\b" if w[-1].isalnum() else "")
        for w in sorted(words, key=len, reverse=True)
    ]
    return re.compile(r"\b(?:" + "|".join(parts) + ")", re.IGNORECASE)


_TYPE_PATTERNS = {kind: _keyword_pattern(words) for kind, words in QUERY_TYPE_KEYWORDS.items()}


@dataclass(frozen=True)
class ShapeFeatures:
    """What the heuristic knows about a query before any model is called."""

    estimated_tokens: int
    has_code_block: bool
    multi_step: bool
    query_type: str


def estimate_tokens(text: str, tokens_per_word: float = 1.3) -> int:
    """Rough token count: words x 1.3, as the published recipe does."""
    return round(len(_WORD.findall(text)) * tokens_per_word)


def query_type(text: str) -> str:
    """Keyword-classify a query as factual, analytical, creative or coding."""
    best, best_hits = "factual", 0
    for kind in ("coding", "analytical", "creative"):
        hits = len(_TYPE_PATTERNS[kind].findall(text))
        if hits > best_hits:
            best, best_hits = kind, hits
    return best


def shape_features(text: str, config: HeuristicConfig) -> ShapeFeatures:
    """Compute the heuristic's shape signals for `text`."""
    return ShapeFeatures(
        estimated_tokens=estimate_tokens(text, config.tokens_per_word),
        has_code_block=bool(CODE_FENCE.search(text)),
        multi_step=bool(MULTI_STEP.search(text)),
        query_type=query_type(text),
    )


def classifier_text(text: str, prefix_chars: int) -> str:
    """The exact string the classifier featurises: a bounded prefix, lower-cased in Python.

    Lower-casing happens here rather than inside the ONNX graph because onnxruntime's
    StringNormalizer needs an installed locale and differs from Python on some characters.
    """
    return text[:prefix_chars].lower()
