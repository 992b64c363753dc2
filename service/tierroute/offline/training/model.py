"""The classifier pipeline: TF-IDF over word 1-2 grams and a balanced logistic regression.

Text reaches the pipeline already lower-cased and cut to a prefix by
`tierroute.routing.features.classifier_text`, so the vectorizer does not lower-case again: the ONNX
graph then needs no StringNormalizer, whose locale handling differs from Python's.

The 10,000 features are the most frequent 1-2 grams, as `max_features` would pick them, but
chosen here with ties broken unigrams first. scikit-learn breaks ties at the cut-off
arbitrarily and can keep a bigram while dropping one of its words (equal counts); skl2onnx
then cannot split that bigram into known tokens and silently exports a feature that never
fires. A word is always at least as frequent as any bigram containing it, so this order keeps
every bigram's words in the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tierroute.errors import ConfigError

MAX_FEATURES = 10_000
NGRAM_RANGE = (1, 2)
# scikit-learn's default word token; the exporter swaps in an RE2 pattern with equal matches.
WORD_REGEX = r"(?u)\b\w\w+\b"
REGULARISATION_C = 1.0
# lbfgs converges in under 100 iterations on the dev data; the margin keeps it quiet elsewhere.
MAX_ITER = 2000
RANDOM_STATE = 0


def select_vocabulary(texts: Sequence[str], max_features: int = MAX_FEATURES) -> dict[str, int]:
    """The `max_features` most frequent 1-2 grams; ties go to unigrams, then alphabetically."""
    counter = CountVectorizer(
        ngram_range=NGRAM_RANGE, lowercase=False, token_pattern=WORD_REGEX, dtype=np.int64
    )
    try:
        counts = np.asarray(counter.fit_transform(list(texts)).sum(axis=0)).ravel()
    except ValueError as exc:
        # scikit-learn's "empty vocabulary": no text holds a single two-character word.
        raise ConfigError(f"the training texts hold no words to learn from: {exc}") from exc
    terms = counter.get_feature_names_out()
    n_words = np.array([term.count(" ") + 1 for term in terms])
    # get_feature_names_out is sorted, so the position breaks the last ties alphabetically.
    order = np.lexsort((np.arange(len(terms)), n_words, -counts))[:max_features]
    return {term: index for index, term in enumerate(sorted(terms[order].tolist()))}


def build_pipeline(vocabulary: dict[str, int]) -> Pipeline:
    """An unfitted pipeline with the shipped hyperparameters over `vocabulary`."""
    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    ngram_range=NGRAM_RANGE,
                    vocabulary=vocabulary,
                    sublinear_tf=True,
                    lowercase=False,
                    token_pattern=WORD_REGEX,
                    dtype=np.float64,
                ),
            ),
            (
                "logreg",
                LogisticRegression(
                    C=REGULARISATION_C,
                    class_weight="balanced",
                    max_iter=MAX_ITER,
                    random_state=RANDOM_STATE,
                ),
            ),
        ]
    )


def fit_pipeline(texts: Sequence[str], labels: npt.NDArray[np.int64], n_classes: int) -> Pipeline:
    """Fit a pipeline on already-featurised texts; every class must occur in `labels`."""
    pipeline = build_pipeline(select_vocabulary(texts))
    pipeline.fit(list(texts), labels)
    classes = pipeline.named_steps["logreg"].classes_.tolist()
    if classes != list(range(n_classes)):
        # Without every class the probability columns would not line up with the tiers.
        raise ConfigError(f"training labels cover classes {classes}, need 0..{n_classes - 1}")
    return pipeline


def hyperparameters() -> dict[str, Any]:
    """The pipeline's settings as recorded in the bundle's metadata."""
    return {
        "vectorizer": "tfidf",
        "ngram_range": list(NGRAM_RANGE),
        "max_features": MAX_FEATURES,
        "feature_ties": "unigrams first, then alphabetical",
        "sublinear_tf": True,
        "lowercase": "in python, before the model",
        "token_pattern": WORD_REGEX,
        "classifier": "logistic_regression",
        "C": REGULARISATION_C,
        "class_weight": "balanced",
        "solver": "lbfgs",
        "random_state": RANDOM_STATE,
    }


def n_features(pipeline: Pipeline) -> int:
    """Size of the fitted vocabulary."""
    return len(pipeline.named_steps["tfidf"].vocabulary_)
