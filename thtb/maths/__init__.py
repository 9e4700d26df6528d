"""THTB's formulas as pure, vectorised numpy functions (see docs/METHOD.md).

* :mod:`~thtb.maths.normalize` — :func:`minmax` (constant input → 0.5), :func:`quality_normalized`,
  :func:`bloom_normalized`;
* :mod:`~thtb.maths.hardness` — IC (:func:`ic_scores`), :func:`ihs`, :func:`irei`,
  :func:`silhouette_component`, :func:`ehs`;
* :mod:`~thtb.maths.text` — query preprocessing and TF-IDF;
* :mod:`~thtb.maths.silhouette` — K-Means labels and the exact O(n·k·d) cosine silhouette.

Where two readings differ (docs/METHOD.md "Two readings: fidelity"), ``fidelity="reference"`` (default)
reproduces the authors' code and ``fidelity="paper"`` the paper's text.
"""

from thtb.maths.hardness import (discipline_distance_means, ehs, ic_scores, ihs, interdisciplinary_complexity, irei,
                                 mean_pairwise_cosine_distance, silhouette_component)
from thtb.maths.normalize import FIDELITIES, bloom_normalized, check_fidelity, minmax, quality_normalized
from thtb.maths.silhouette import (SINGLETON_POLICIES, SilhouetteResult, kmeans_labels, silhouette_samples_cosine,
                                   silhouette_scores, sklearn_zero_row_self_distance)
from thtb.maths.text import ascii_ratio, is_ascii_text, preprocess_queries, preprocess_query, tfidf_matrix

__all__ = ["FIDELITIES", "SINGLETON_POLICIES", "SilhouetteResult", "ascii_ratio", "bloom_normalized", "check_fidelity",
           "discipline_distance_means", "ehs", "ic_scores", "ihs", "interdisciplinary_complexity", "irei",
           "is_ascii_text", "kmeans_labels", "mean_pairwise_cosine_distance", "minmax", "preprocess_queries",
           "preprocess_query", "quality_normalized", "silhouette_component", "silhouette_samples_cosine",
           "silhouette_scores", "sklearn_zero_row_self_distance", "tfidf_matrix"]
