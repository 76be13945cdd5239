"""InfoNCE and the symmetric CLIP loss as pure functions (tensors in, tensor out).

Notation: queries ``q_i`` ([B, D]), keys ``k_j`` ([K, D]; the other modality's batch, possibly followed by
a queue of older keys), scale ``s = 1 / tau``. With one positive ``p(i)`` per query

    L_InfoNCE = -1/B sum_i log( exp(s q_i.k_p(i)) / sum_{j not masked} exp(s q_i.k_j) )     (van den Oord 2018)

and the CLIP loss (Radford et al., 2021) averages both directions on a batch of pairs (k = texts for
images and vice versa, positives on the diagonal):

    L_CLIP = ( L_InfoNCE(img -> txt) + L_InfoNCE(txt -> img) ) / 2.

Inputs are used as given: pass L2-normalised embeddings for cosine similarities (``DualEncoder`` does).

Temperature convention (one for the whole library): every loss takes the multiplier ``scale = s = 1/tau =
exp(logit_scale)`` -- what a model's ``scale`` property returns (capped at
:data:`medvlp_lib.models.encoders.MAX_SCALE`) -- never its log. :func:`as_scale` validates it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "clip_loss", "similarity_logits", "as_scale"]


def as_scale(scale, ref: torch.Tensor) -> torch.Tensor:
    """The similarity multiplier ``scale`` (= 1/temperature = ``exp(logit_scale)``) as a 0-d tensor on ``ref``'s
    device: a positive finite float or scalar tensor (gradient kept), else a ``TypeError`` / ``ValueError``
    naming ``scale``."""
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"scale must be a scalar, got shape {tuple(scale.shape)}")
        s = scale.reshape(()).to(ref.device)
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        s = torch.tensor(float(scale), dtype=ref.dtype, device=ref.device)
    else:
        raise TypeError(f"scale must be a float or scalar tensor (the multiplier 1/temperature), got "
                        f"{type(scale).__name__}")
    if not torch.isfinite(s).all() or float(s.detach()) <= 0:
        raise ValueError(f"scale must be a finite positive multiplier 1/temperature = exp(logit_scale), got "
                         f"{float(s.detach())}")
    return s


def _check_embeddings(a_name: str, a, b_name: str, b) -> None:
    """Both are 2-D tensors [N, D] with the same D; the errors name the argument."""
    for name, t in ((a_name, a), (b_name, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{a_name} and {b_name} must share the embedding dim: {a_name} {tuple(a.shape)}, "
                         f"{b_name} {tuple(b.shape)}")


def similarity_logits(query: torch.Tensor, keys: torch.Tensor, scale=1.0 / 0.07) -> torch.Tensor:
    """``s * query @ keys.T`` with shape checks: query [B, D], keys [K, D] -> [B, K]."""
    _check_embeddings("query", query, "keys", keys)
    return as_scale(scale, query) * query @ keys.t()


def info_nce(query: torch.Tensor, keys: torch.Tensor, positive_index: torch.Tensor | None = None,
             scale=1.0 / 0.07, mask: torch.Tensor | None = None, targets: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """General InfoNCE of ``query`` [B, D] against ``keys`` [K, D] (K >= B allowed: batch keys + queue).

    Positives, one of:
      * ``positive_index`` (LongTensor [B]): one positive key per query; default ``arange(B)`` (pairs on the
        diagonal, the first B keys being the batch);
      * ``targets`` ([B, K] float or bool): a target distribution per query -- soft targets (e.g. MSD /
        ALBEF momentum distillation) or several positives (bool, or 0/1: uniform over the positives).
        Rows are normalised to sum to 1; the loss is the cross-entropy ``-sum_j t_ij log p_ij``.
    ``mask`` ([B, K] bool, True = excluded): keys removed from the softmax denominator (e.g. queue entries
    that duplicate the query's own sample). A positive may not be masked. ``scale`` is the
    multiplier ``s = 1/tau = exp(logit_scale)`` (not its log). ``reduction``: ``"mean"`` | ``"sum"`` | ``"none"``.
    """
    logits = similarity_logits(query, keys, scale)
    B, K = logits.shape
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if positive_index is not None and targets is not None:
        raise ValueError("pass either positive_index or targets, not both")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != (B, K):
            raise ValueError(f"mask must be a bool tensor of shape [B, K] = {(B, K)}, got "
                             f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        mask = mask.to(device=logits.device, dtype=torch.bool)
        if mask.all(dim=1).any():
            raise ValueError("mask excludes every key for at least one query")
        logits = logits.masked_fill(mask, float("-inf"))
    log_p = F.log_softmax(logits, dim=1)
    if targets is None:
        if positive_index is None:
            if K < B:
                raise ValueError(f"default positives are the diagonal and need K >= B keys, got B={B}, K={K}")
            positive_index = torch.arange(B, device=logits.device)
        positive_index = torch.as_tensor(positive_index, device=logits.device).long()
        if positive_index.shape != (B,):
            raise ValueError(f"positive_index must have shape [B] = [{B}], got {tuple(positive_index.shape)}")
        if (positive_index < 0).any() or (positive_index >= K).any():
            raise ValueError(f"positive_index values must be in [0, {K}), got min {int(positive_index.min())} "
                             f"max {int(positive_index.max())}")
        if mask is not None and mask.gather(1, positive_index[:, None]).any():
            raise ValueError("mask excludes a positive key (positive_index points at a masked key)")
        loss = -log_p.gather(1, positive_index[:, None]).squeeze(1)
    else:
        if not isinstance(targets, torch.Tensor) or targets.shape != (B, K):
            raise ValueError(f"targets must be a tensor of shape [B, K] = {(B, K)}, got "
                             f"{tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
        t = targets.to(device=logits.device, dtype=log_p.dtype)
        if (t < 0).any():
            raise ValueError("targets must be non-negative")
        rows = t.sum(1, keepdim=True)
        if (rows <= 0).any():
            raise ValueError("every row of targets needs at least one positive (row sums must be > 0)")
        t = t / rows
        if mask is not None and (t.masked_select(mask) > 0).any():
            raise ValueError("mask excludes a key that has positive target mass")
        loss = -(t * log_p.masked_fill(t == 0, 0.0)).sum(1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale=1.0 / 0.07,
              image_weight: float = 0.5) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted symmetric InfoNCE on B matched pairs (CLIP; the Adaptor's loss with its weights):

        S = scale * I T^T  [B, B],   L = w CE(S, diag) + (1 - w) CE(S^T, diag),   w = image_weight

    ``image_emb``, ``text_emb``: [B, D] (L2-normalised for cosine similarities); ``scale`` the multiplier
    ``exp(logit_scale)`` (a model's ``scale`` property). ``image_weight=0.5`` is CLIP; the Adaptor's public
    code weights the image->text direction (softmax over texts per image) by 0.75 (see
    :mod:`medvlp_lib.methods.adaptor`). Returns ``(loss, parts)`` with parts ``i2t``, ``t2i`` (the two
    directional losses), ``acc_i2t`` / ``acc_t2i`` (in-batch top-1 accuracy) and ``scale`` (the multiplier used).
    """
    _check_embeddings("image_emb", image_emb, "text_emb", text_emb)
    if image_emb.shape[0] != text_emb.shape[0]:
        raise ValueError(f"image_emb and text_emb must have the same batch size, got {image_emb.shape[0]} "
                         f"and {text_emb.shape[0]}")
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    logits = similarity_logits(image_emb, text_emb, scale)
    target = torch.arange(logits.shape[0], device=logits.device)
    l_i2t = F.cross_entropy(logits, target)
    l_t2i = F.cross_entropy(logits.t(), target)
    loss = image_weight * l_i2t + (1.0 - image_weight) * l_t2i
    with torch.no_grad():
        parts = {"i2t": float(l_i2t), "t2i": float(l_t2i),
                 "acc_i2t": float((logits.argmax(1) == target).float().mean()),
                 "acc_t2i": float((logits.argmax(0) == target).float().mean()),
                 "scale": float(as_scale(scale, logits))}
    return loss, parts
