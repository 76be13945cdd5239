"""Image <-> text retrieval Recall@K, instance-level and report-text-aware.

``R@K`` (image -> text) = fraction of images whose paired report is among the K texts most similar to
the image (cosine on the given embeddings); text -> image symmetrically.

Text-aware reading (the default reported number when ``texts`` is given): IU X-Ray has many verbatim
identical reports (about a third are near-boilerplate "normal" reports). Retrieving *another* study's
report whose text is identical -- after lower-casing and collapsing whitespace -- to the query's own report
is indistinguishable from retrieving the right one, so it counts as a hit; likewise an image whose report
text equals the query text counts for text -> image. The strict instance-level numbers (only the paired
index is a hit) are always returned too, under ``*_strict`` keys.

Class-level retrieval (:func:`class_precision_at_k`, MGCA's CheXpert 5x200 protocol generalised to finding
sets): an item is relevant to a query when its finding set (its binary label vector) equals the query's.
``P@K`` is the mean over queries of the fraction of the top ``K`` items that are relevant. Instance-level R@1 on
a few hundred films sits near chance for every method here, so it cannot separate methods; P@K can, and it comes
with two reference points computed from the labels alone: ``chance`` (a random ranking: the share of relevant
items) and ``oracle`` (a perfect ranking: ``min(K, n_relevant) / K``).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

__all__ = ["retrieval_recall", "normalise_text", "recall_at_k", "class_precision_at_k"]


def normalise_text(text: str) -> str:
    """Lower-case and collapse whitespace (the identity used for text-aware hits)."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def _emb(x, name) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    return x.detach().float().cpu()


def recall_at_k(sim: torch.Tensor, query_group: torch.Tensor, item_group: torch.Tensor, ks: Sequence[int],
                chunk: int = 1024) -> dict[int, float]:
    """Fraction of rows of ``sim`` [Q, M] whose top-K items include one with ``item_group == query_group``."""
    kmax = max(ks)
    hits = {k: 0 for k in ks}
    for a in range(0, sim.shape[0], chunk):
        top = sim[a:a + chunk].topk(kmax, dim=1).indices  # ties: torch's order (stable for distinct scores)
        match = item_group[top] == query_group[a:a + chunk, None]
        for k in ks:
            hits[k] += int(match[:, :k].any(dim=1).sum())
    return {k: hits[k] / sim.shape[0] for k in ks}


def retrieval_recall(image_emb, text_emb, texts: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@K both ways for N paired embeddings (row i of each = sample i).

    Returns fractions in [0, 1]: ``i2t_R@K`` and ``t2i_R@K`` (text-aware when ``texts`` is given, else
    strict), ``i2t_R@K_strict`` / ``t2i_R@K_strict`` (instance-level), and ``n_unique_texts``.
    """
    img, txt = _emb(image_emb, "image_emb"), _emb(text_emb, "text_emb")
    if img.shape[0] != txt.shape[0]:
        raise ValueError(f"image_emb and text_emb must pair row by row, got {img.shape[0]} and {txt.shape[0]} rows")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"image_emb and text_emb must share the embedding dim, got {img.shape[1]} and {txt.shape[1]}")
    n = img.shape[0]
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if ks[-1] > n:
        raise ValueError(f"K={ks[-1]} exceeds the number of items N={n}")
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()
    ident = torch.arange(n)
    out: dict = {}
    strict_i2t = recall_at_k(sim, ident, ident, ks)
    strict_t2i = recall_at_k(sim.t(), ident, ident, ks)
    if texts is not None:
        texts = list(texts)
        if len(texts) != n:
            raise ValueError(f"texts must have one entry per row ({n}), got {len(texts)}")
        keys: dict[str, int] = {}
        group = torch.tensor([keys.setdefault(normalise_text(t), len(keys)) for t in texts])
        aware_i2t = recall_at_k(sim, group, group, ks)
        aware_t2i = recall_at_k(sim.t(), group, group, ks)
        out["n_unique_texts"] = len(keys)
    else:
        aware_i2t, aware_t2i = strict_i2t, strict_t2i
        out["n_unique_texts"] = n
    for k in ks:
        out[f"i2t_R@{k}"] = aware_i2t[k]
        out[f"t2i_R@{k}"] = aware_t2i[k]
        out[f"i2t_R@{k}_strict"] = strict_i2t[k]
        out[f"t2i_R@{k}_strict"] = strict_t2i[k]
    return out


def _label_groups(labels, n: int) -> torch.Tensor:
    y = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"labels must be [N={n}] or [N={n}, L] (one finding set per row), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0/1 or bool): an item's finding set")
    _, group = np.unique(y.astype(np.int8), axis=0, return_inverse=True)
    return torch.from_numpy(group.reshape(-1).astype(np.int64))


def class_precision_at_k(image_emb, text_emb, labels, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict:
    """Class-level precision@K both ways for N paired embeddings; ``labels`` [N, L] binary finding sets (or [N]).

    Returns fractions in [0, 1]: ``i2t_P@K`` (image queries over the N texts), ``t2i_P@K`` (text queries over the
    N images), ``chance_P@K`` (mean share of relevant items: a random ranking's expected precision) and
    ``oracle_P@K`` (mean ``min(K, n_relevant) / K``: a perfect ranking), plus ``n_groups`` (distinct finding
    sets). Cosine similarity; the query's own pair is in the pool and counts when it is retrieved.
    """
    img, txt = _emb(image_emb, "image_emb"), _emb(text_emb, "text_emb")
    if img.shape != txt.shape:
        raise ValueError(f"image_emb and text_emb must pair row by row with one dim, got {tuple(img.shape)} and "
                         f"{tuple(txt.shape)}")
    n = img.shape[0]
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"ks must be integers in [1, N={n}], got {ks}")
    group = _label_groups(labels, n)
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()
    counts = torch.bincount(group)
    n_rel = counts[group].double()
    out: dict = {"n_groups": int(counts.numel())}
    for name, s in (("i2t", sim), ("t2i", sim.t())):
        hits = {k: 0.0 for k in ks}
        for a in range(0, n, chunk):
            top = s[a:a + chunk].topk(ks[-1], dim=1).indices
            rel = (group[top] == group[a:a + chunk, None]).double()
            for k in ks:
                hits[k] += float(rel[:, :k].mean(dim=1).sum())
        for k in ks:
            out[f"{name}_P@{k}"] = hits[k] / n
    for k in ks:
        out[f"chance_P@{k}"] = float((n_rel / n).mean())
        out[f"oracle_P@{k}"] = float((n_rel.clamp(max=k) / k).mean())
    return out
