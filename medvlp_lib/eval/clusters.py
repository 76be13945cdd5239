"""Cluster separation of embeddings: the silhouette score.

For point ``i`` with mean distance ``a_i`` to its own class and ``b_i`` to the nearest other class,
``s_i = (b_i - a_i) / max(a_i, b_i)`` in ``[-1, 1]``; :func:`silhouette` is the mean over labelled points
(labels < 0 are ignored). 1 = tight, well separated classes; 0 = overlapping; < 0 = points closer to another
class than to their own on average. In an embedding space use ``metric="cosine"`` (contrastive embeddings are
compared by cosine); in a 2-D t-SNE / UMAP map the Euclidean silhouette describes the picture, not the embedding.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score

__all__ = ["silhouette", "as_matrix"]


def as_matrix(x, name: str = "x", min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 ``[n, d]`` array with at least ``min_rows`` rows (else a ``ValueError`` naming
    ``name``)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, d], got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def silhouette(x, labels, metric: str = "euclidean") -> float:
    """Mean silhouette of ``x [n, d]`` under ``labels [n]`` (ints; rows with a negative label are ignored).

    Needs at least two classes among the labelled rows and fewer classes than labelled rows."""
    arr = as_matrix(x)
    y = np.asarray(labels)
    if y.shape != (arr.shape[0],):
        raise ValueError(f"labels must have shape ({arr.shape[0]},) to match x, got {y.shape}")
    keep = y >= 0
    k = len(np.unique(y[keep]))
    if k < 2 or k >= keep.sum():
        raise ValueError(f"labels must give 2 <= classes < labelled rows, got {k} classes in {int(keep.sum())} rows")
    return float(silhouette_score(arr[keep], y[keep], metric=metric))
