"""The familiarity signal: how much a prompt looks like the prompts the router learned from.

A TF-IDF model that knows none of a query's n-grams answers with its class prior, which reads
like a confident estimate. The signal says when not to trust it. Over the classifier's own
TF-IDF features (one pass in the served graph, `shared_graph`), it multiplies two parts, each
divided by its median over the training rows and capped at 1:

- the TF-IDF **mass** before normalisation (the row's L2 norm): how much of the prompt the
  vocabulary knows, weighted by rarity. A short question of common words has little;
- the **cosine** of the normalised row to the nearest of `N_CENTROIDS` k-means centroids of
  the training rows: whether the known n-grams come in the shapes training saw.

The threshold below which a prompt counts as unfamiliar flags `FLAG_RATE` of held-out
training rows: per fold, the vocabulary, idf, centroids and medians are fitted on the other
folds and the fold is scored with them; the threshold is that quantile of the out-of-fold
scores. It ships in thresholds.json's `familiarity` section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from tierroute.errors import ModelLoadError
from tierroute.model.classifier import INPUT_NAME
from tierroute.model.value import FAMILIARITY_OUTPUT
from tierroute.offline.training.model import RANDOM_STATE, build_pipeline, select_vocabulary
from tierroute.offline.training.shared_graph import Familiarity
from tierroute.routing import classifier_text

N_CENTROIDS = 16
FLAG_RATE = 0.01
# float32 sums in the graph against float64 here, on values of order 1.
PARITY_TOLERANCE = 1e-4
# k-means starts per fit (seeded, so a bundle rebuilds the same): the centroids need only sit
# near the training prompts' shapes, and every start costs a pass over the rows.
_N_INIT = 2


def _raw_rows(tfidf: TfidfVectorizer, texts: Sequence[str]) -> sparse.csr_matrix:
    """The TF-IDF rows before normalisation: (1 + log tf) x idf, as the graph computes."""
    counts = super(TfidfVectorizer, tfidf).transform(list(texts)).astype(np.float64)
    counts.data = 1.0 + np.log(counts.data)
    raw: sparse.csr_matrix = counts.multiply(tfidf.idf_.reshape(1, -1)).tocsr()
    return raw


def _parts(raw: sparse.csr_matrix) -> tuple[npt.NDArray[np.float64], sparse.csr_matrix]:
    mass = np.sqrt(np.asarray(raw.multiply(raw).sum(axis=1)).ravel())
    scale = 1.0 / np.maximum(mass, 1e-12)
    normalised: sparse.csr_matrix = sparse.diags(scale) @ raw
    return mass, normalised.tocsr()


def _nearest_cosine(
    normalised: sparse.csr_matrix, centroids: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    cosines = np.asarray(normalised @ centroids)
    nearest: npt.NDArray[np.float64] = cosines.max(axis=1) if cosines.size else np.zeros(0)
    return nearest


def fit_familiarity(tfidf: TfidfVectorizer, texts: Sequence[str]) -> Familiarity:
    """The signal's centroids and medians over the fitted `tfidf`'s features."""
    mass, normalised = _parts(_raw_rows(tfidf, texts))
    k = min(N_CENTROIDS, normalised.shape[0])
    kmeans = KMeans(n_clusters=k, n_init=_N_INIT, random_state=RANDOM_STATE).fit(normalised)
    centers = np.asarray(kmeans.cluster_centers_, dtype=np.float64)
    centers /= np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
    centroids = centers.T  # (n_features, k): the graph multiplies a row by it
    cos = _nearest_cosine(normalised, centroids)
    return Familiarity(
        centroids=centroids.astype(np.float32),
        mass_ref=float(np.median(mass)) or 1.0,
        cos_ref=float(np.median(cos)) or 1.0,
    )


def score(
    tfidf: TfidfVectorizer, familiarity: Familiarity, texts: Sequence[str]
) -> npt.NDArray[np.float64]:
    """The familiarity of each text, in [0, 1], as the served graph computes it."""
    mass, normalised = _parts(_raw_rows(tfidf, texts))
    cos = _nearest_cosine(normalised, familiarity.centroids.astype(np.float64))
    mass_part = np.minimum(mass / familiarity.mass_ref, 1.0)
    cos_part = np.minimum(cos / familiarity.cos_ref, 1.0)
    scores: npt.NDArray[np.float64] = mass_part * cos_part
    return scores


def _tfidf(texts: Sequence[str]) -> TfidfVectorizer:
    """The classifier's TF-IDF step, fitted on `texts` (its vocabulary and idf)."""
    tfidf: TfidfVectorizer = build_pipeline(select_vocabulary(texts)).named_steps["tfidf"]
    tfidf.fit(list(texts))
    return tfidf


def out_of_fold(texts: Sequence[str], folds: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Every text's familiarity under a signal fitted without its fold."""
    scores = np.zeros(len(texts), dtype=np.float64)
    for fold in range(int(folds.max()) + 1):
        held = folds == fold
        train = [t for t, h in zip(texts, held, strict=True) if not h]
        tfidf = _tfidf(train)
        fam = fit_familiarity(tfidf, train)
        scores[held] = score(tfidf, fam, [t for t, h in zip(texts, held, strict=True) if h])
    return scores


def check_parity(
    model: bytes,
    tfidf: TfidfVectorizer,
    familiarity: Familiarity,
    prompts: Sequence[str],
    *,
    prefix_chars: int,
) -> float:
    """The largest difference between the served graph's familiarity and `score` on
    `prompts`; ModelLoadError at PARITY_TOLERANCE or more."""
    from tierroute.model import create_session

    session = create_session(model)
    texts = [classifier_text(p, prefix_chars) for p in prompts]
    expected = score(tfidf, familiarity, texts)
    worst = 0.0
    for text, want in zip(texts, expected, strict=True):
        feed = {INPUT_NAME: np.array([[text]], dtype=object)}
        (got,) = session.run([FAMILIARITY_OUTPUT], feed)
        worst = max(worst, abs(float(got.reshape(-1)[0]) - float(want)))
    if not worst < PARITY_TOLERANCE:
        raise ModelLoadError(
            f"the graph's familiarity differs from scikit-learn's by {worst:.3g} "
            f"(tolerance {PARITY_TOLERANCE:g})"
        )
    return worst


def threshold_section(
    oof: npt.NDArray[np.float64], familiarity: Familiarity, flag_rate: float = FLAG_RATE
) -> dict[str, Any]:
    """thresholds.json's `familiarity` section: the threshold that flags `flag_rate` of the
    held-out rows, and what it means."""
    threshold = float(np.quantile(oof, flag_rate))
    return {
        "threshold": round(threshold, 6),
        "flag_rate": flag_rate,
        "held_out_flagged": round(float(np.mean(oof < threshold)), 6),
        "held_out_quantiles": {
            q: round(float(np.quantile(oof, float(q))), 6) for q in ("0.01", "0.05", "0.5")
        },
        "rows": len(oof),
        "centroids": int(familiarity.centroids.shape[1]),
        "mass_ref": round(familiarity.mass_ref, 6),
        "cos_ref": round(familiarity.cos_ref, 6),
        "what": (
            "a query whose familiarity (the graph's `familiarity` output, 0-1) is below "
            "threshold is unfamiliar: reason UNFAMILIAR_QUERY, served by routing.on_unfamiliar. "
            "The threshold flags flag_rate of held-out training rows (per fold, the signal "
            "fitted on the other folds)"
        ),
    }


__all__ = [
    "FLAG_RATE",
    "N_CENTROIDS",
    "check_parity",
    "fit_familiarity",
    "out_of_fold",
    "score",
    "threshold_section",
]
