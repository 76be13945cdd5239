"""Small, reusable figures: image galleries with mask overlays, loss curves, mean +/- std bars."""
from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np

__all__ = ["image_grid", "overlay_mask", "loss_curves", "bar_with_errors", "sweep_plot", "forest_plot",
           "VERDICT_COLOURS"]


def overlay_mask(ax, mask: np.ndarray, color=(1.0, 0.15, 0.1), alpha: float = 0.35):
    """Draw a boolean mask over the image already shown on ``ax`` (filled, plus its outline)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    if not mask.any():
        return ax
    rgba = np.zeros((*mask.shape, 4), dtype=float)
    rgba[mask] = (*color, alpha)
    ax.imshow(rgba, interpolation="nearest")
    ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=0.8)
    return ax


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
               captions: Sequence[str] | None = None, masks: Sequence[np.ndarray | None] | None = None,
               ncols: int = 4, size: float = 2.6, caption_width: int = 38, cmap: str = "gray"):
    """A grid of grayscale images with optional titles, wrapped captions below, and mask overlays."""
    import matplotlib.pyplot as plt
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    for name, seq in (("titles", titles), ("captions", captions), ("masks", masks)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries but there are {n} images")
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    extra = 1.1 if captions is not None else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + extra) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.asarray(images[i]), cmap=cmap, vmin=0, vmax=1, interpolation="bilinear")
        if masks is not None and masks[i] is not None:
            overlay_mask(ax, masks[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        if captions is not None:
            ax.text(0.5, -0.03, textwrap.fill(captions[i], caption_width), transform=ax.transAxes,
                    ha="center", va="top", fontsize=6.5, wrap=True)
    fig.tight_layout()
    return fig


def loss_curves(curves: Mapping[str, Sequence[float] | Sequence[Sequence[float]]], xlabel: str = "training progress",
                ylabel: str = "loss", ax=None, normalise_x: bool = True):
    """Plot one curve (or the mean +/- std band of several seeds' curves) per label."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, values in curves.items():
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 1:
            arr = arr[None]
        x = np.linspace(0, 1, arr.shape[1]) if normalise_x else np.arange(arr.shape[1])
        mean = arr.mean(0)
        (line,) = ax.plot(x, mean, label=label)
        if arr.shape[0] > 1:
            std = arr.std(0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel + (" (fraction of training)" if normalise_x else ""))
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    ax.figure.tight_layout()
    return ax.figure


def bar_with_errors(groups: Mapping[str, Mapping[str, Mapping[str, float]]], ylabel: str = "", ax=None,
                    scale: float = 1.0, show_points: bool = True):
    """Grouped bars of mean +/- std: ``groups[metric][condition] = {"mean", "std", "values"}``."""
    import matplotlib.pyplot as plt
    metrics = list(groups)
    conditions = list(dict.fromkeys(c for m in metrics for c in groups[m]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 + 1.1 * len(metrics) * max(1, len(conditions)) / 2, 3.4))
    width = 0.8 / max(1, len(conditions))
    for j, cond in enumerate(conditions):
        xs = np.arange(len(metrics)) + (j - (len(conditions) - 1) / 2) * width
        means = [groups[m].get(cond, {}).get("mean", np.nan) * scale for m in metrics]
        stds = [groups[m].get(cond, {}).get("std", 0.0) * scale for m in metrics]
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=cond)
        if show_points:
            for x, m in zip(xs, metrics):
                vals = groups[m].get(cond, {}).get("values") or []
                ax.scatter([x] * len(vals), np.asarray(vals) * scale, s=8, color="k", zorder=3)
        del bars
    ax.set_xticks(np.arange(len(metrics)))
    ax.set_xticklabels(metrics, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def sweep_plot(xs: Sequence[float], entries: Sequence[Mapping[str, float]], ax=None, label: str | None = None,
               xlabel: str = "", ylabel: str = "", scale: float = 1.0, logx: bool = False,
               xticklabels: Sequence[str] | None = None, offset: float = 0.0):
    """One ablation sweep: mean +/- std (error bars) and the per-seed values (dots) of a metric vs a knob.

    ``entries[i]`` is the summary entry ``{"mean", "std", "values"}`` at knob value ``xs[i]``; ``offset`` shifts
    the points sideways (in data units, or as a factor on a log axis) so several sweeps on one axis stay apart.
    """
    import matplotlib.pyplot as plt
    if len(xs) != len(entries):
        raise ValueError(f"xs and entries must have the same length, got {len(xs)} and {len(entries)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    x = np.asarray(xs, dtype=float)
    x = x * (1.0 + offset) if logx else x + offset
    mean = np.array([e["mean"] for e in entries]) * scale
    std = np.array([e.get("std", 0.0) for e in entries]) * scale
    line = ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    color = line.lines[0].get_color()
    for xi, e in zip(x, entries):
        vals = np.asarray(e.get("values") or [], dtype=float) * scale
        ax.scatter([xi] * len(vals), vals, s=9, color=color, alpha=0.6, zorder=3)
    if logx:
        ax.set_xscale("log")
    if xticklabels is not None:
        ax.set_xticks(np.asarray(xs, dtype=float), list(xticklabels))
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if label is not None:
        ax.legend(frameon=False, fontsize=8)
    return ax.figure


VERDICT_COLOURS = {"reproduced": "#1e7b34", "contradicted": "#b02a37", "inconclusive": "#8a6d00",
                   "not testable here": "#5c636a", "pending": "#6f42c1", "not reproduced": "#b02a37"}
"""One colour per ledger verdict (the ledger table and the forest plot use the same)."""


def forest_plot(rows, ax=None, width: float = 7.5):
    """The claims ledger as a forest plot: per claim, the paired difference (ours, in the claim's unit, e.g. AUC
    points) with its 95 % CI, the paper's effect (a cross) and a non-inferiority margin (a bar at ``-margin``),
    coloured by verdict (:data:`VERDICT_COLOURS`).

    ``rows``: dicts (or a DataFrame's records) with ``id``, ``verdict``, ``diff``, ``lo``, ``hi``, ``effect``,
    ``margin``, ``n`` and ``unit`` as :func:`medvlp_lib.ledger.evaluate_claims` returns them. Claims without a
    paired difference (pending, not testable, measurements) are left out and named in the title. Returns the
    figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = [dict(r) for r in (rows.reset_index().to_dict("records") if hasattr(rows, "reset_index") else rows)]
    shown = [r for r in rows if np.isfinite(r.get("diff", np.nan))]
    left = [r["id"] for r in rows if r not in shown]
    if ax is None:
        with sns.axes_style("whitegrid"):   # a local style: later figures keep the book's defaults
            fig, ax = plt.subplots(figsize=(width, 0.42 * max(len(shown), 1) + 1.6))
    else:
        fig = ax.figure
    for y, r in enumerate(shown):
        colour = VERDICT_COLOURS.get(r["verdict"], "#5c636a")
        lo, hi = r.get("lo", np.nan), r.get("hi", np.nan)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
        ax.plot(r["diff"], y, "o", color=colour, ms=7, zorder=3)
        if np.isfinite(r.get("effect", np.nan)):
            ax.plot(r["effect"], y, "x", color="black", ms=8, mew=2, zorder=4)
        if np.isfinite(r.get("margin", np.nan)):
            ax.plot([-r["margin"]] * 2, [y - 0.3, y + 0.3], color="black", lw=1.5, ls="--")
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"{r['id']} (n={r.get('n', 0)}, {r.get('unit') or 'points'})" for r in shown], fontsize=11)
    ax.tick_params(axis="x", labelsize=11)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference, ours (95 % CI)\nx = the paper's effect; dashed = non-inferiority margin", fontsize=11)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2.2, label=v) for v, c in VERDICT_COLOURS.items()
               if v != "not reproduced" and any(r["verdict"] == v for r in shown)]
    if handles:
        ax.legend(handles=handles, loc="lower right", frameon=True, fontsize=11)
    title = f"{len(shown)} claims with a paired difference"
    if left:
        title += f"; not shown ({len(left)}): " + ", ".join(left)
    ax.set_title("\n".join(textwrap.wrap(title, 75)), fontsize=11, loc="left")
    sns.despine(ax=ax, left=True)
    fig.tight_layout()
    return fig
