"""How well attention (or any per-location score) points at the ground truth.

* :func:`attention_scores` -- maps ``[n, h, w]`` (e.g. the Adaptor's word-to-image attention) against binary
  masks: pointing game and its random-map baseline, attention mass in the mask and its lift over a uniform
  map, and the map entropy relative to a uniform map (1 = uniform);
* :func:`attention_quality` -- per-patch scores of bags (e.g. MoMKD's memory affinities or ABMIL's attention
  logits) against ground-truth signal patches: AUROC and precision at k.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .segmentation import attention_mass_in_mask, pointing_game
from .zero_shot import binary_auc

__all__ = ["attention_scores", "attention_quality"]


def attention_scores(att: dict, seed: int = 0, n_random: int = 50) -> dict:
    """Pointing game, attention mass / lift, relative entropy (1 = uniform) and the random-map pointing baseline."""
    maps, masks = att["maps"], att["masks"]
    n = int(maps.shape[0])
    if n == 0:
        return {"n": 0}
    pg = pointing_game(maps, masks)
    mass = attention_mass_in_mask(maps, masks)
    p = maps.flatten(1).clamp_min(1e-12)
    ent = float((-(p * p.log()).sum(1) / math.log(p.shape[1])).mean())
    g = torch.Generator().manual_seed(seed)
    rand = float(np.mean([pointing_game(torch.rand(maps.shape, generator=g), masks)["accuracy"]
                          for _ in range(n_random)]))
    return {"n": n, "pointing": pg["accuracy"], "pointing_random": rand, "mass": mass["mass"], "area": mass["area"],
            "lift": mass["lift"], "relative_entropy": ent, "max_over_uniform": float(maps.flatten(1).max(1).values.mean()
                                                                                      * maps[0].numel())}


def attention_quality(scores, masks) -> dict:
    """Patch-score quality against ground-truth signal patches, averaged over slides that have any:
    ``auroc`` (AUROC of the scores for the signal patches; 0.5 = chance) and ``p_at_k`` (precision of
    the top-k patches, k = number of signal patches of the slide)."""
    au, pk = [], []
    for sc, m in zip(scores, masks):
        m = np.asarray(m, bool)
        if sc is None or not m.any() or m.all():
            continue
        au.append(binary_auc(sc, m))
        k = int(m.sum())
        top = np.argsort(-np.asarray(sc), kind="stable")[:k]
        pk.append(float(m[top].mean()))
    return {"auroc": float(np.mean(au)) if au else float("nan"), "p_at_k": float(np.mean(pk)) if pk else float("nan")}
