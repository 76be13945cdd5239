"""Word -> image attention maps drawn over radiographs (the Adaptor's cross-attention, chapter 08).

The Adaptor's attention lives on the backbone's token grid (4 x 4 cells at 64 px); to draw it over the film
:func:`upsample_maps` resizes it bilinearly with the same call the localisation metrics use
(:func:`medvlp_lib.eval.segmentation.pointing_game`), so the marked maximum in a figure is exactly the point
the pointing game scores.

* :func:`attention_overlays` -- one column per film: the film with its ground-truth mask, then one row per
  model with the (upsampled) map as a heat overlay, the mask's outline and the map's maximum;
* :func:`report_tokens` / :func:`token_attention_maps` -- every token of one report and its map (the
  per-token view of one film);
* :func:`token_attention_grid` -- those maps, one small panel per token.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..eval.segmentation import resize_maps
from ..models.adaptor import word_to_image_attention
from .plots import overlay_mask

__all__ = ["upsample_maps", "attention_overlays", "report_tokens", "token_attention_maps", "token_attention_grid"]


def upsample_maps(maps, size: tuple[int, int]) -> np.ndarray:
    """``maps [N, h, w]`` (or ``[h, w]``, non-negative) -> float ``[N, H, W]``, bilinear (``align_corners=False``):
    the resize :func:`medvlp_lib.eval.segmentation.pointing_game` scores, as a numpy array."""
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive entries, got {size!r}")
    return resize_maps(maps.detach().cpu() if hasattr(maps, "detach") else maps, tuple(int(s) for s in size)).numpy()


def _draw_map(ax, image, amap, mask, alpha, cmap, mark_max, lo, hi, note=None):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    ax.imshow(amap, cmap=cmap, alpha=alpha, vmin=lo, vmax=max(hi, lo + 1e-12), interpolation="nearest")
    if note:
        ax.text(0.03, 0.03, note, transform=ax.transAxes, fontsize=6.5, color="w", va="bottom",
                bbox=dict(boxstyle="round,pad=0.15", fc="k", alpha=0.5, lw=0))
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=["cyan"], linewidths=0.9)
    if mark_max:
        r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
        ax.plot([c], [r], marker="x", color="lime", ms=7, mew=2)
    ax.axis("off")


def attention_overlays(images: Sequence[np.ndarray], maps: Mapping[str, np.ndarray], masks=None,
                       titles: Sequence[str] | None = None, size: float = 2.2, alpha: float = 0.55,
                       cmap: str = "inferno", mark_max: bool = True, mask_label: str = "ground-truth mask"):
    """Columns = films; first row: the film with its ground-truth mask (:func:`~medvlp_lib.viz.overlay_mask`),
    then one row per entry of ``maps`` (``label -> [N, h, w]``): the map upsampled to the film, drawn as a heat
    overlay with the mask's outline (cyan) and the map's maximum (green x; the pointing game's point).

    ``images``: N grayscale films in [0, 1] (``[H, W]`` each); ``masks``: N boolean ``[H, W]`` (or None).
    Each map's colours span its own minimum..maximum, so they show *where* the map is highest even when it is
    nearly flat; *how* peaked it is is written in the corner: ``max x<r>`` = the grid map's largest weight
    divided by the uniform weight ``1 / (h w)`` (1 = flat; ``h w`` = all weight on one cell).
    """
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("images is empty")
    if not maps:
        raise ValueError("maps is empty: pass at least one label -> [N, h, w]")
    if masks is not None and len(masks) != n:
        raise ValueError(f"masks has {len(masks)} entries but there are {n} images")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles has {len(titles)} entries but there are {n} images")
    H, W = np.asarray(images[0]).shape[-2:]
    up = {}
    for label, m in maps.items():
        if len(m) != n:
            raise ValueError(f"maps[{label!r}] has {len(m)} maps but there are {n} images")
        up[label] = upsample_maps(m, (H, W))
    rows = 1 + len(up)
    fig, axes = plt.subplots(rows, n, figsize=(size * n + 0.9, size * rows), squeeze=False)
    for j in range(n):
        img = np.asarray(images[j], dtype=float)
        mk = None if masks is None else np.asarray(masks[j], dtype=bool)
        ax = axes[0, j]
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
        if mk is not None:
            overlay_mask(ax, mk)
        ax.axis("off")
        if titles is not None:
            ax.set_title(titles[j], fontsize=8)
        for i, (label, u) in enumerate(up.items(), start=1):
            g = np.asarray(maps[label][j], dtype=float)
            ratio = float(g.max() / max(g.sum(), 1e-12) * g.size)
            _draw_map(axes[i, j], img, u[j], mk, alpha, cmap, mark_max, float(u[j].min()), float(u[j].max()),
                      note=f"max x{ratio:.2f}")
    for i, label in enumerate([mask_label, *up], start=0):
        axes[i, 0].text(-0.08, 0.5, label, transform=axes[i, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=8)
    fig.tight_layout()
    return fig


def report_tokens(tokenizer, text: str, max_length: int = 128) -> list[str]:
    """The token strings of ``text`` in the order of the cached text tokens (``tokenizer(text, truncation=True,
    max_length=max_length)``, the tokenisation :func:`medvlp_lib.models.adaptor.find_word_tokens` indexes)."""
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    return list(tokenizer.convert_ids_to_tokens(ids))


def token_attention_maps(adaptor, img_tokens, txt_tokens, txt_mask, grid_hw: tuple[int, int],
                         layer: int | str = "mean"):
    """Text->image attention maps of *every* real token of one image-report pair: float ``[T, h, w]``.

    ``img_tokens [1, N_v, d_v]``, ``txt_tokens [1, N_t, d_t]``, ``txt_mask [1, N_t]`` (e.g. ``cache.batch([i])``);
    the Adaptor runs in eval mode without gradients and
    :func:`medvlp_lib.models.adaptor.word_to_image_attention` gives each token's map (``layer``: an index or
    ``"mean"`` over layers). ``T`` is the number of real tokens (``txt_mask`` True).
    """
    import torch

    if img_tokens.shape[0] != 1 or txt_tokens.shape[0] != 1:
        raise ValueError(f"token_attention_maps takes one pair (batch 1), got img_tokens {tuple(img_tokens.shape)} "
                         f"and txt_tokens {tuple(txt_tokens.shape)}")
    mask = torch.ones(txt_tokens.shape[:2], dtype=torch.bool) if txt_mask is None else txt_mask.bool()
    was = adaptor.training
    adaptor.eval()
    dev = adaptor.logit_scale.device
    try:
        with torch.no_grad():
            out = adaptor(img_tokens.float().to(dev), txt_tokens.float().to(dev), mask.to(dev), return_attention=True)
    finally:
        adaptor.train(was)
    T = int(mask[0].sum())
    return torch.cat([word_to_image_attention(out["attentions"], t, grid_hw, layer=layer) for t in range(T)]).cpu()


def token_attention_grid(image: np.ndarray, maps, tokens: Sequence[str], mask: np.ndarray | None = None,
                         ncols: int = 8, size: float = 1.5, alpha: float = 0.55, cmap: str = "inferno",
                         skip: Sequence[str] = ("[CLS]", "[SEP]", "[PAD]", ".", ",", ":", ";"),
                         shared_scale: bool = True):
    """One small panel per token of one report: the film with that token's map (``maps [T, h, w]``, upsampled),
    the ground-truth mask's outline and the map's maximum. Tokens in ``skip`` are left out.

    ``shared_scale``: one colour scale for all panels (minimum..maximum over all shown tokens), so a token whose
    attention is more peaked shows more contrast; ``False`` stretches each panel to its own range."""
    import matplotlib.pyplot as plt

    tokens = list(tokens)
    if len(maps) != len(tokens):
        raise ValueError(f"maps has {len(maps)} entries but tokens has {len(tokens)}")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}")
    img = np.asarray(image, dtype=float)
    keep = [i for i, t in enumerate(tokens) if t not in set(skip)]
    if not keep:
        raise ValueError("every token is in skip; nothing to draw")
    up = upsample_maps(np.asarray(maps)[keep], img.shape[-2:])
    lo_all, hi_all = float(up.min()), float(up.max())
    ncols = min(ncols, len(keep))
    nrows = int(np.ceil(len(keep) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.25) * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k, u in zip(axes.flat, keep, up):
        lo, hi = (lo_all, hi_all) if shared_scale else (float(u.min()), float(u.max()))
        _draw_map(ax, img, u, None if mask is None else np.asarray(mask, bool), alpha, cmap, True, lo, hi)
        ax.set_title(tokens[k], fontsize=8)
    fig.tight_layout()
    return fig
