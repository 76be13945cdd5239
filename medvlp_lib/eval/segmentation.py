"""Segmentation and localisation metrics: Dice, pointing game, attention mass inside a mask.

Dice
----
``Dice(P, G) = 2 |P & G| / (|P| + |G|)`` for binary masks.

* per image: :func:`dice_per_image`. **Empty-mask convention** (SIIM-ACR Kaggle's): if both the prediction
  and the ground truth are empty the image scores 1 (a correct "no finding"); if exactly one is empty it
  scores 0. ``empty="nan"`` instead returns NaN for empty/empty images so that :func:`dice_summary`'s mean
  covers only images with something to find or something predicted (its count is reported).
* aggregate (dataset-level, "global" Dice): ``2 sum_i |P_i & G_i| / (sum_i |P_i| + sum_i |G_i|)``, which
  weights images by mask size and is undefined (returned as 1.0) only when everything is empty.

Localisation of attention maps (e.g. the Adaptor's word -> image attention)
---------------------------------------------------------------------------
Maps ``[N, h, w]`` (any non-negative scores) are upsampled bilinearly to the mask size ``[N, H, W]``.

* pointing game (Zhang et al., 2016): a hit when the map's maximum falls inside the ground-truth mask
  (ties: the first maximum in row-major order); accuracy = hits / images with a non-empty mask. Images whose
  mask is empty cannot be scored and are counted in ``skipped``.
* attention mass in mask: fraction of the (normalised) map inside the mask; ``lift`` = mass / mask area
  fraction, so a uniform map has lift 1 and a perfectly concentrated map has lift 1 / area.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["dice_per_image", "dice_aggregate", "dice_summary", "pointing_game", "attention_mass_in_mask", "resize_maps"]


def _as_bool(x, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.dtype != torch.bool:
        if t.is_floating_point():
            raise TypeError(f"{name} must be a boolean (or 0/1 integer) mask; threshold probabilities first")
        if bool(((t != 0) & (t != 1)).any()):
            raise ValueError(f"{name} must contain only 0/1 values")
        t = t.bool()
    return t


def _pair(pred, target):
    p, g = _as_bool(pred, "pred"), _as_bool(target, "target")
    if p.shape != g.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    if p.ndim < 2:
        raise ValueError(f"masks must be [H, W] or [N, ..., H, W], got shape {tuple(p.shape)}")
    if p.ndim == 2:
        p, g = p[None], g[None]
    return p.reshape(p.shape[0], -1), g.reshape(g.shape[0], -1)


def dice_per_image(pred, target, empty: str = "one") -> torch.Tensor:
    """Dice of each image (first axis); masks bool/0-1 of shape [N, H, W] (or [H, W]). ``empty``: ``"one"``
    (both empty -> 1, the default convention) or ``"nan"`` (both empty -> NaN). Returns float64 [N]."""
    if empty not in ("one", "nan"):
        raise ValueError(f"empty must be 'one' or 'nan', got {empty!r}")
    p, g = _pair(pred, target)
    inter = (p & g).sum(1).double()
    denom = p.sum(1).double() + g.sum(1).double()
    both_empty = denom == 0
    d = torch.where(both_empty, torch.zeros_like(denom), 2 * inter / denom.clamp_min(1))
    return torch.where(both_empty, torch.full_like(d, 1.0 if empty == "one" else float("nan")), d)


def dice_aggregate(pred, target) -> float:
    """Dataset-level Dice ``2 sum|P&G| / (sum|P| + sum|G|)`` (1.0 if all masks and predictions are empty)."""
    p, g = _pair(pred, target)
    denom = float(p.sum() + g.sum())
    return 1.0 if denom == 0 else 2.0 * float((p & g).sum()) / denom


def dice_summary(pred, target) -> dict:
    """``dict(dice_mean, dice_mean_nonempty, dice_aggregate, n, n_empty_gt, n_both_empty)``.

    ``dice_mean``: mean per-image Dice with the empty/empty = 1 convention; ``dice_mean_nonempty``: mean over
    images whose ground truth is non-empty (NaN if there are none).
    """
    d = dice_per_image(pred, target, "one")
    p, g = _pair(pred, target)
    gt_empty = g.sum(1) == 0
    both = gt_empty & (p.sum(1) == 0)
    nonempty = d[~gt_empty]
    return {"dice_mean": float(d.mean()),
            "dice_mean_nonempty": float(nonempty.mean()) if len(nonempty) else float("nan"),
            "dice_aggregate": dice_aggregate(pred, target), "n": int(len(d)), "n_empty_gt": int(gt_empty.sum()),
            "n_both_empty": int(both.sum())}


def resize_maps(maps, size) -> torch.Tensor:
    """Non-negative maps ``[N, h, w]`` (or ``[h, w]``) as float ``[N, H, W]`` at ``size = (H, W)``: bilinear,
    ``align_corners=False`` (the resize every attention score here uses)."""
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"maps must be [N, h, w] (or [h, w]), got shape {tuple(m.shape)}")
    if bool((m < 0).any()):
        raise ValueError("maps must be non-negative (attention weights / saliency scores)")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return m


def _masks(masks) -> torch.Tensor:
    g = _as_bool(masks, "masks")
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3:
        raise ValueError(f"masks must be [N, H, W] (or [H, W]), got shape {tuple(g.shape)}")
    return g


def pointing_game(maps, masks) -> dict:
    """``dict(accuracy, hits, n, skipped)``: is each map's argmax inside its (non-empty) mask?"""
    g = _masks(masks)
    m = resize_maps(maps, g.shape[-2:])
    if m.shape[0] != g.shape[0]:
        raise ValueError(f"maps ({m.shape[0]}) and masks ({g.shape[0]}) must have the same number of images")
    flat_m, flat_g = m.reshape(len(m), -1), g.reshape(len(g), -1)
    valid = flat_g.any(1)
    idx = flat_m.argmax(1)
    hit = flat_g[torch.arange(len(idx)), idx] & valid
    n = int(valid.sum())
    return {"accuracy": float(hit.sum()) / n if n else float("nan"), "hits": int(hit.sum()), "n": n,
            "skipped": int((~valid).sum())}


def attention_mass_in_mask(maps, masks) -> dict:
    """``dict(mass, area, lift, n, skipped)`` averaged over images with a non-empty mask (see module doc)."""
    g = _masks(masks)
    m = resize_maps(maps, g.shape[-2:])
    if m.shape[0] != g.shape[0]:
        raise ValueError(f"maps ({m.shape[0]}) and masks ({g.shape[0]}) must have the same number of images")
    flat_m, flat_g = m.reshape(len(m), -1), g.reshape(len(g), -1).float()
    total = flat_m.sum(1)
    valid = (flat_g.sum(1) > 0) & (total > 0)
    mass = (flat_m * flat_g).sum(1) / total.clamp_min(1e-12)
    area = flat_g.mean(1)
    n = int(valid.sum())
    if n == 0:
        return {"mass": float("nan"), "area": float("nan"), "lift": float("nan"), "n": 0, "skipped": len(m)}
    return {"mass": float(mass[valid].mean()), "area": float(area[valid].mean()),
            "lift": float((mass[valid] / area[valid]).mean()), "n": n, "skipped": int((~valid).sum())}
