"""Slide heat maps: per-patch scores drawn as tiles over the tissue picture (MoMKD / MIL attention, chapter 05).

A MIL model scores patches given by their level-0 (x, y) top-left coordinates and a patch side ``patch``
(CLAM's convention, :class:`medvlp_lib.data.pathology.Slide`). These helpers put those scores back on the
picture:

* :func:`scores_to_grid` -- scores on the patch lattice as a 2-D array (NaN where there is no patch);
* :func:`rank_normalize` -- scores -> within-slide ranks in [0, 1], so maps of different models (memory
  affinities, attention logits) share one colour scale;
* :func:`mask_outline` -- the outer boundary of a set of patches (e.g. the ground truth) as line segments
  along the patch edges;
* :func:`heatmap_overlay` -- one axis: the image (or a blank canvas for simulated slides) with the score
  tiles on top and an optional mask outline;
* :func:`slide_heatmaps` -- one figure: the image, the ground truth, then one heat map per model.

Coordinates are level-0 pixels; an image given at a lower resolution (a thumbnail) is stretched over the
slide with ``downsample`` = level-0 pixels per image pixel.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["scores_to_grid", "rank_normalize", "mask_outline", "heatmap_overlay", "slide_heatmaps"]


def _check(coords, values=None, patch=None, name="scores") -> tuple[np.ndarray, np.ndarray | None]:
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] == 0:
        raise ValueError(f"coords must be a non-empty [N, 2] array of (x, y), got shape {c.shape}")
    if patch is not None and (isinstance(patch, bool) or not np.isscalar(patch) or not patch > 0):
        raise ValueError(f"patch must be a positive number (patch side in level-0 pixels), got {patch!r}")
    v = None
    if values is not None:
        v = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float).reshape(-1)
        if v.shape[0] != c.shape[0]:
            raise ValueError(f"{name} has {v.shape[0]} values but there are {c.shape[0]} patches (coords)")
    return c, v


def _lattice(coords: np.ndarray, patch: float, origin=None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    o = coords.min(0) if origin is None else np.asarray(origin, dtype=float)
    rc = np.rint((coords[:, ::-1] - o[::-1]) / patch).astype(np.int64)  # (row, col)
    if (rc < 0).any():
        raise ValueError("origin must not lie right of / below any patch")
    return rc, np.asarray(o, dtype=float), (int(rc[:, 0].max()) + 1, int(rc[:, 1].max()) + 1)


def scores_to_grid(coords, scores, patch: float, origin=None) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Per-patch ``scores [N]`` at ``coords [N, 2]`` (x, y of top-left corners, patches of side ``patch`` on a
    regular lattice) -> ``(grid [rows, cols], extent)``: the lattice with NaN where there is no patch (patches
    that fall in the same cell are averaged) and the matplotlib ``extent`` (left, right, bottom, top) in
    level-0 pixels, so ``imshow(grid, extent=extent)`` lands on the slide. ``origin`` defaults to the
    smallest (x, y)."""
    c, v = _check(coords, scores, patch)
    rc, o, (rows, cols) = _lattice(c.astype(float), float(patch), origin)
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    np.add.at(total, (rc[:, 0], rc[:, 1]), v)
    np.add.at(count, (rc[:, 0], rc[:, 1]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    extent = (float(o[0]), float(o[0] + cols * patch), float(o[1] + rows * patch), float(o[1]))
    return grid, extent


def rank_normalize(scores) -> np.ndarray:
    """Within-slide ranks of ``scores`` scaled to [0, 1] (0 = lowest, 1 = highest; ties keep input order):
    puts maps of different models on one colour scale without changing their ordering (and so their AUROC)."""
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=float).reshape(-1)
    if s.size == 0:
        raise ValueError("scores is empty")
    return np.argsort(np.argsort(s, kind="stable"), kind="stable") / max(1, s.size - 1)


def mask_outline(ax, coords, mask, patch: float, color: str = "cyan", lw: float = 1.0, origin=None):
    """Draw the outer boundary of the patches where ``mask`` is True: every patch edge that separates a masked
    patch from a non-masked (or missing) neighbour, as one ``LineCollection`` on ``ax`` (returned; None if the
    mask is empty)."""
    from matplotlib.collections import LineCollection

    c, m = _check(coords, mask, patch, name="mask")
    m = m.astype(bool)
    if not m.any():
        return None
    rc, o, (rows, cols) = _lattice(c.astype(float), float(patch), origin)
    g = np.zeros((rows + 2, cols + 2), bool)
    g[rc[m, 0] + 1, rc[m, 1] + 1] = True
    segs = []
    r, cc = np.nonzero(g)
    for dr, dc, edge in ((-1, 0, ((0, 0), (1, 0))), (1, 0, ((0, 1), (1, 1))),
                         (0, -1, ((0, 0), (0, 1))), (0, 1, ((1, 0), (1, 1)))):
        keep = ~g[r + dr, cc + dc]
        for rr, c2 in zip(r[keep] - 1, cc[keep] - 1):  # (x, y) of the edge's end points in level-0 pixels
            segs.append([(o[0] + (c2 + ex) * patch, o[1] + (rr + ey) * patch) for ex, ey in edge])
    lc = LineCollection(segs, colors=color, linewidths=lw, zorder=4)
    ax.add_collection(lc)
    return lc


def heatmap_overlay(ax, image, coords, scores, patch: float, mask=None, *, alpha: float = 0.55,
                    cmap: str = "inferno", rank: bool = False, vmin: float | None = None, vmax: float | None = None,
                    downsample: float = 1.0, outline: str = "cyan", lw: float = 0.8, title: str | None = None,
                    colorbar: bool = False):
    """Draw one slide heat map on ``ax`` and return the score layer (a matplotlib ``AxesImage``).

    ``image``: the tissue picture ``[H, W(, 3)]`` (uint8 or float in [0, 1]) whose pixel ``(0, 0)`` is level-0
    ``(0, 0)`` and which covers ``downsample`` level-0 pixels per image pixel; ``None`` draws the tiles on a
    blank canvas (simulated slides). ``scores [N]`` at ``coords [N, 2]`` (level-0 x, y of top-left corners)
    are drawn as ``patch``-sized tiles with transparency ``alpha`` (``rank=True``: within-slide ranks,
    :func:`rank_normalize`; colour range ``vmin..vmax``, default the scores' range). ``mask [N]``: outlined
    with :func:`mask_outline` in ``outline``. ``scores=None`` draws only the image and the outline.
    """
    c, _ = _check(coords, None, patch)
    if not downsample > 0:
        raise ValueError(f"downsample must be positive (level-0 pixels per image pixel), got {downsample!r}")
    if image is not None:
        img = np.asarray(image)
        if img.ndim not in (2, 3):
            raise ValueError(f"image must be [H, W] or [H, W, C], got shape {img.shape}")
        h, w = img.shape[:2]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, w * downsample, h * downsample, 0),
                  interpolation="bilinear", zorder=1)
    layer = None
    if scores is not None:
        _, v = _check(c, scores, patch)
        v = rank_normalize(v) if rank else v
        grid, extent = scores_to_grid(c, v, patch, origin=(0, 0) if image is not None else None)
        lo = float(np.nanmin(grid)) if vmin is None else vmin
        hi = float(np.nanmax(grid)) if vmax is None else vmax
        layer = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, alpha=alpha, vmin=lo, vmax=max(hi, lo + 1e-12),
                          extent=extent, interpolation="nearest", zorder=2)
        if colorbar:
            ax.figure.colorbar(layer, ax=ax, fraction=0.046, pad=0.02)
    if mask is not None and outline:
        mask_outline(ax, c, mask, patch, color=outline, lw=lw, origin=(0, 0) if image is not None else None)
    if image is not None:
        ax.set_xlim(0, w * downsample)
        ax.set_ylim(h * downsample, 0)
    else:
        x0, y0 = c.min(0)
        x1, y1 = c.max(0) + patch
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return layer


def slide_heatmaps(image, coords, maps: Mapping[str, object], patch: float, mask=None, *, truth=None,
                   truth_label: str = "ground truth", size: float = 3.2, rank: bool = True, alpha: float = 0.55,
                   cmap: str = "inferno", downsample: float = 1.0, notes: Mapping[str, str] | None = None):
    """One row of panels for one slide: the image with the ``mask`` outlined, the ground truth (``truth [N]``
    values drawn as a heat map, default the mask itself), then one heat map per entry of ``maps``
    (``label -> scores [N]``, rank-normalised if ``rank`` so the panels share one scale), each with the mask
    outlined. ``notes``: ``label -> text`` written under that panel's title (e.g. the attention AUROC).
    Returns the figure."""
    import matplotlib.pyplot as plt

    c, _ = _check(coords, None, patch)
    if not maps:
        raise ValueError("maps is empty: pass at least one label -> scores [N]")
    notes = dict(notes or {})
    n = 1 + (mask is not None or truth is not None) + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size + 0.4), squeeze=False)
    axes = axes[0]
    i = 0
    heatmap_overlay(axes[i], image, c, None, patch, mask, downsample=downsample,
                    title="image" + (" (ground truth outlined)" if mask is not None else ""))
    i += 1
    if mask is not None or truth is not None:
        t = truth if truth is not None else np.asarray(mask, float)
        heatmap_overlay(axes[i], image, c, t, patch, None, alpha=alpha, cmap=cmap, rank=False, downsample=downsample,
                        title=truth_label)
        i += 1
    for label, s in maps.items():
        title = label if label not in notes else f"{label}\n{notes[label]}"
        heatmap_overlay(axes[i], image, c, s, patch, mask, alpha=alpha, cmap=cmap, rank=rank, downsample=downsample,
                        title=title, vmin=0.0 if rank else None, vmax=1.0 if rank else None)
        i += 1
    fig.tight_layout()
    return fig
