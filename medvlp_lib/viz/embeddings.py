"""2-D maps of embeddings (t-SNE, UMAP) and their silhouette scores, drawn one panel per method.

Projection
----------
:func:`project_2d` maps ``x [n, d]`` to ``[n, 2]`` with

* ``"tsne"``: scikit-learn's t-SNE (van der Maaten & Hinton, 2008), PCA initialisation, Euclidean input
  distances, ``perplexity`` clipped to ``(n - 1) / 3`` (scikit-learn requires ``perplexity < n``; a third keeps
  every point's neighbourhood well inside the data). These are the settings of
  :func:`medvlp_lib.experiments.adaptor.silhouettes`, so the same seed gives the same coordinates. It runs
  with OpenMP limited to one thread (``threadpoolctl``): the coordinates are identical, and for the few hundred
  points of a chapter the threaded Barnes-Hut gradient cost about 14x more CPU time on the shared 2-core
  machine (threads spin while waiting for a busy core).
* ``"umap"``: umap-learn (McInnes et al., 2018) with ``n_neighbors`` (clipped to ``n - 1``), ``min_dist`` and
  ``metric``; a fixed ``random_state`` makes it deterministic (and single-threaded). Its warnings are silenced.

Both are *pictures*: distances between clusters and the clusters' sizes in a t-SNE / UMAP plot are not
meaningful, and the layout moves with the seed and with perplexity / ``n_neighbors``.

Silhouette (:func:`medvlp_lib.eval.clusters.silhouette`, re-exported here)
-------------------------------------------------------------------------
For point ``i`` with mean distance ``a_i`` to its own class and ``b_i`` to the nearest other class,
``s_i = (b_i - a_i) / max(a_i, b_i)`` in ``[-1, 1]``; :func:`silhouette` is the mean over labelled points
(labels < 0 are ignored). 1 = tight, well separated classes; 0 = overlapping; < 0 = points closer to another
class than to their own on average. In the embedding space use ``metric="cosine"`` (contrastive embeddings are
compared by cosine); in a 2-D map the Euclidean silhouette describes the picture, not the embedding.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from ..eval.clusters import as_matrix, silhouette

__all__ = ["project_2d", "silhouette", "embedding_panels", "PROJECTIONS"]

PROJECTIONS = ("tsne", "umap")


def project_2d(x, method: str = "tsne", seed: int = 0, perplexity: float = 30.0, n_neighbors: int = 15,
               min_dist: float = 0.1, metric: str = "euclidean") -> np.ndarray:
    """Deterministic 2-D projection of ``x [n, d]`` by ``method`` (``"tsne"`` or ``"umap"``): float64 ``[n, 2]``.

    ``seed`` fixes the layout (same seed, same coordinates). ``perplexity`` is used by t-SNE only (clipped to
    ``(n - 1) / 3``); ``n_neighbors``, ``min_dist`` and ``metric`` by UMAP only (t-SNE uses Euclidean distances,
    as :func:`medvlp_lib.experiments.adaptor.silhouettes`). See the module docstring.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {PROJECTIONS}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    arr = as_matrix(x, "x", min_rows=5 if method == "tsne" else 4)
    n = arr.shape[0]
    if method == "tsne":
        if not perplexity > 0:
            raise ValueError(f"perplexity must be positive, got {perplexity!r}")
        with threadpool_limits(limits=1, user_api="openmp"):
            z = TSNE(2, perplexity=min(float(perplexity), (n - 1) / 3), init="pca",
                     random_state=int(seed)).fit_transform(arr)
        return np.asarray(z, dtype=np.float64)
    if int(n_neighbors) < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors!r}")
    if not 0 <= min_dist:
        raise ValueError(f"min_dist must be >= 0, got {min_dist!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba / "n_jobs overridden by random_state" / spectral-init notices
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(int(n_neighbors), n - 1), min_dist=float(min_dist),
                            metric=metric, random_state=int(seed), n_jobs=1, verbose=False)
        z = reducer.fit_transform(arr)
    return np.asarray(z, dtype=np.float64)


def embedding_panels(coords: Mapping[str, np.ndarray], labels, class_names: Sequence[str],
                     scores: Mapping[str, float] | None = None, titles: Mapping[str, str] | None = None,
                     ncols: int = 3, size: float = 3.0, point_size: float = 9.0, suptitle: str | None = None,
                     colors: Sequence[str] | None = None):
    """One scatter panel per entry of ``coords`` (``name -> [n, 2]``), points coloured by ``labels`` (ints
    ``0..K-1`` indexing ``class_names``; negative labels are drawn as small grey dots). A panel's title is
    ``titles[name]`` (default: the name) followed by ``silhouette = scores[name]`` when given. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if not coords:
        raise ValueError("coords is empty: pass at least one name -> [n, 2] array")
    y = np.asarray(labels)
    for name, z in coords.items():
        z = np.asarray(z)
        if z.ndim != 2 or z.shape[1] != 2:
            raise ValueError(f"coords[{name!r}] must be [n, 2], got shape {z.shape}")
        if z.shape[0] != y.shape[0]:
            raise ValueError(f"coords[{name!r}] has {z.shape[0]} rows but labels has {y.shape[0]}")
    if len(y) and y.max() >= len(class_names):
        raise ValueError(f"labels go up to {int(y.max())} but class_names has {len(class_names)} entries")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}")
    colors = list(colors) if colors is not None else [f"C{i}" for i in range(len(class_names))]
    n = len(coords)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, z) in zip(axes.flat, coords.items()):
        z = np.asarray(z)
        other = y < 0
        if other.any():
            ax.scatter(z[other, 0], z[other, 1], s=point_size / 3, c="0.75", lw=0)
        for k, cname in enumerate(class_names):
            sel = y == k
            ax.scatter(z[sel, 0], z[sel, 1], s=point_size, c=colors[k % len(colors)], lw=0, alpha=0.85, label=cname)
        title = (titles or {}).get(name, name)
        if scores is not None and name in scores:
            title += f"\nsilhouette = {scores[name]:+.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False, fontsize=8, markerscale=1.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.03, 1, 1))
    return fig
