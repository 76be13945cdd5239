"""Class-conditional momentum memory (MoMKD, 2602.21395): slots, losses and memory-guided attention pooling.

The memory holds ``n_slots`` unit vectors per class, ``C = {C^-, C^+}`` (tensor [n_classes, n_slots, D],
class 0 = negative, class 1 = positive). It is the distillation intermediary: omics and WSI features are
aligned to it (never to each other), and patches are scored by their affinity to it.

Update modes (:class:`ClassMemory`):

* ``"momentum"`` (default, the paper's description): slots are buffers, no gradient reaches them; after
  each optimiser step every slot ``c_j`` of class ``y`` that received features ``A_j`` (nearest slot by
  cosine among class ``y``'s slots) moves by an exponential moving average and is re-normalised:
  ``c_j <- normalize(m c_j + (1 - m) mean_{f in A_j} f)``.
* ``"fixed"``: the K-means initialisation is kept for the whole run.
* ``"learned"``: slots are ``nn.Parameter`` trained by the optimiser through the alignment, VQ and
  orthogonality losses (what the public code does: ``VectorQuantize(ema_update=False)``).

All functions here depend on torch only.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ClassMemory", "cosine_kmeans", "soft_angle_loss", "vq_commitment_loss", "orthogonality_loss",
           "MemoryAttentionPool", "MEMORY_MODES"]

MEMORY_MODES = ("momentum", "fixed", "learned")


def _as_slots(memory) -> torch.Tensor:
    slots = memory.normalized() if isinstance(memory, ClassMemory) else memory
    if not isinstance(slots, torch.Tensor) or slots.dim() != 3:
        raise ValueError(f"memory must be a ClassMemory or a tensor [n_classes, n_slots, D], got "
                         f"{getattr(slots, 'shape', type(slots).__name__)}")
    return F.normalize(slots, dim=-1)


def _labels(labels, n: int, device) -> torch.Tensor:
    y = torch.as_tensor(labels, device=device).long().reshape(-1)
    if y.numel() == 1 and n != 1:
        y = y.expand(n)
    if y.numel() != n:
        raise ValueError(f"labels must have one entry per feature ({n}) or be a single label, got {y.numel()}")
    return y


def cosine_kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Spherical K-means: returns ``k`` unit centroids [k, D], deterministic in ``seed``.

    Initial centroids by k-means++ seeding with the distance ``1 - cos`` (seeded generator; with fewer
    than ``k`` points, points are reused with tiny seeded perturbations). Each iteration assigns points to the
    centroid of highest cosine and sets each centroid to the normalised mean of its points; an empty
    cluster is re-seeded with the point currently worst matched to its centroid.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"cosine_kmeans needs a non-empty [N, D] tensor, got {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    g = torch.Generator().manual_seed(int(seed))
    x = F.normalize(x.detach().float().cpu(), dim=-1)
    n = x.shape[0]
    if n >= k:  # k-means++ seeding with the cosine distance 1 - cos
        idx = [int(torch.randint(n, (1,), generator=g))]
        best = x @ x[idx[0]]
        for _ in range(1, k):
            w = (1.0 - best).clamp_min(0) ** 2
            j = int(torch.multinomial(w, 1, generator=g)) if float(w.sum()) > 0 else int(torch.randint(n, (1,), generator=g))
            idx.append(j)
            best = torch.maximum(best, x @ x[j])
        c = x[idx].clone()
    else:
        c = x[torch.randint(n, (k,), generator=g)] + 1e-3 * torch.randn(k, x.shape[1], generator=g)
        c = F.normalize(c, dim=-1)
    for _ in range(iters):
        sim = x @ c.T
        best, assign = sim.max(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        new = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), c)
        for j in torch.nonzero(counts == 0).reshape(-1).tolist():
            worst = int(best.argmin())
            new[j] = x[worst]
            best[worst] = 2.0
        c = new
    return c


class ClassMemory(nn.Module):
    """Class-conditional memory ``[n_classes, n_slots, dim]`` of unit vectors (see module docstring).

    Buffers: ``slots`` (a Parameter in ``"learned"`` mode), ``usage`` [n_classes, n_slots] (number of
    features assigned to each slot since the last :meth:`reset_usage`), ``initialized`` (True after
    :meth:`init_kmeans`). Before K-means initialisation the slots are seeded random unit vectors.
    """

    def __init__(self, dim: int, n_slots: int = 16, n_classes: int = 2, mode: str = "momentum",
                 momentum: float = 0.99, seed: int = 0) -> None:
        super().__init__()
        if mode not in MEMORY_MODES:
            raise ValueError(f"mode must be one of {MEMORY_MODES}, got {mode!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if n_slots < 1 or n_classes < 2 or dim < 1:
            raise ValueError(f"need n_slots >= 1, n_classes >= 2, dim >= 1; got {n_slots}, {n_classes}, {dim}")
        self.dim, self.n_slots, self.n_classes, self.mode, self.momentum = dim, n_slots, n_classes, mode, momentum
        g = torch.Generator().manual_seed(int(seed))
        init = F.normalize(torch.randn(n_classes, n_slots, dim, generator=g), dim=-1)
        if mode == "learned":
            self.slots = nn.Parameter(init)
        else:
            self.register_buffer("slots", init)
        self.register_buffer("usage", torch.zeros(n_classes, n_slots))
        self.register_buffer("initialized", torch.tensor(False))

    def normalized(self) -> torch.Tensor:
        """Unit-norm slots [n_classes, n_slots, dim] (differentiable in ``"learned"`` mode)."""
        return F.normalize(self.slots, dim=-1)

    @torch.no_grad()
    def init_kmeans(self, feats: torch.Tensor, labels, iters: int = 20, max_per_class: int = 50_000,
                    seed: int = 0) -> None:
        """Cosine K-means (``iters`` iterations) on up to ``max_per_class`` features of each class
        (a seeded random subset), one run per class; resets usage. Raises if a class has no features."""
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"feats must be [N, {self.dim}], got {tuple(feats.shape)}")
        y = _labels(labels, feats.shape[0], feats.device)
        g = torch.Generator().manual_seed(int(seed))
        for c in range(self.n_classes):
            fc = feats[y == c]
            if fc.shape[0] == 0:
                raise ValueError(f"init_kmeans: no features with label {c}; every class needs features")
            if fc.shape[0] > max_per_class:
                fc = fc[torch.randperm(fc.shape[0], generator=g)[:max_per_class].to(fc.device)]
            self.slots.data[c] = cosine_kmeans(fc, self.n_slots, iters=iters, seed=seed + c).to(self.slots)
        self.initialized.fill_(True)
        self.reset_usage()

    @torch.no_grad()
    def assign(self, feats: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest slot (by cosine) among each feature's own-class slots: (slot index [N], cosine [N])."""
        y = _labels(labels, feats.shape[0], feats.device)
        slots = self.normalized().detach()[y]  # [N, K, D]
        sim = torch.einsum("nd,nkd->nk", F.normalize(feats.detach(), dim=-1), slots)
        best, idx = sim.max(1)
        return idx, best

    @torch.no_grad()
    def record_usage(self, feats: torch.Tensor, labels) -> None:
        y = _labels(labels, feats.shape[0], feats.device)
        idx, _ = self.assign(feats, y)
        self.usage.index_put_((y, idx), torch.ones_like(idx, dtype=self.usage.dtype), accumulate=True)

    def reset_usage(self) -> None:
        self.usage.zero_()

    @torch.no_grad()
    def momentum_update(self, feats: torch.Tensor, labels, momentum: float | None = None) -> int:
        """EMA update ``c_j <- normalize(m c_j + (1 - m) mean(A_j))`` of every own-class slot that
        received features (``"momentum"`` mode only; a no-op returning 0 otherwise). Records usage in
        every mode. Returns the number of slots moved."""
        if feats.numel() == 0:
            return 0
        if feats.dim() == 1:
            feats = feats[None]
        y = _labels(labels, feats.shape[0], feats.device)
        self.record_usage(feats, y)
        if self.mode != "momentum":
            return 0
        m = self.momentum if momentum is None else momentum
        idx, _ = self.assign(feats, y)
        f = F.normalize(feats.detach().to(self.slots.dtype), dim=-1)
        flat = y * self.n_slots + idx
        total = self.n_classes * self.n_slots
        counts = torch.bincount(flat, minlength=total).to(f.dtype)
        sums = torch.zeros(total, self.dim, dtype=f.dtype, device=f.device).index_add_(0, flat, f)
        hit = counts > 0
        cur = self.slots.data.view(total, self.dim)
        mean = sums[hit] / counts[hit, None]
        cur[hit] = F.normalize(m * cur[hit] + (1 - m) * mean, dim=-1)
        return int(hit.sum())

    def slot_usage(self, min_fraction: float = 0.05) -> dict:
        """Usage statistics from ``usage``: per class the share of assignments per slot, the number of
        *active* slots (share >= ``min_fraction``) and the usage perplexity ``exp(entropy)``."""
        u = self.usage.detach().cpu().double()
        share = u / u.sum(1, keepdim=True).clamp_min(1)
        ent = -(share * share.clamp_min(1e-12).log()).sum(1)
        return {"active": (share >= min_fraction).sum(1).tolist(), "share": share.tolist(),
                "perplexity": ent.exp().tolist(), "counts": u.sum(1).tolist()}

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, n_slots={self.n_slots}, dim={self.dim}, mode={self.mode!r}, momentum={self.momentum}"


def soft_angle_loss(feats: torch.Tensor, labels, memory, margin: float = 0.3, lse_scale: float = 5.0,
                    gap_scale: float = 20.0, hard_max: bool = False, reduction: str = "mean") -> torch.Tensor:
    """Soft angle alignment loss (MoMKD Eq. for ``L_align``; constants as in the public code).

    For a unit feature ``f`` and class ``c``: ``s_c(f) = (1/lse_scale) logsumexp_j(lse_scale cos(f, C^c_j))``
    (``max_j cos`` if ``hard_max``); ``Delta = s_own - s_other`` (``s_other`` = max over the other classes,
    i.e. the other class for binary labels); loss ``= softplus(gap_scale (margin - Delta))``.
    Features and slots are L2-normalised inside. ``feats`` [B, D], ``labels`` [B] (or one label),
    ``memory`` a :class:`ClassMemory` or a tensor [n_classes, n_slots, D].
    """
    if feats.dim() == 1:
        feats = feats[None]
    slots = _as_slots(memory)
    if feats.shape[-1] != slots.shape[-1]:
        raise ValueError(f"feats dim {feats.shape[-1]} != memory dim {slots.shape[-1]}")
    y = _labels(labels, feats.shape[0], feats.device)
    if (y < 0).any() or (y >= slots.shape[0]).any():
        raise ValueError(f"labels must be in [0, {slots.shape[0]}), got {y.tolist()}")
    sim = torch.einsum("bd,ckd->bck", F.normalize(feats, dim=-1), slots)
    s = sim.max(-1).values if hard_max else torch.logsumexp(lse_scale * sim, dim=-1) / lse_scale  # [B, C]
    own = s.gather(1, y[:, None]).squeeze(1)
    other = s.masked_fill(F.one_hot(y, s.shape[1]).bool(), float("-inf")).max(1).values
    loss = F.softplus(gap_scale * (margin - (own - other)))
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def vq_commitment_loss(feats: torch.Tensor, labels, memory, codebook_weight: float = 0.0) -> torch.Tensor:
    """VQ regulariser: ``mean ||f - sg(q(f))||^2`` with ``q(f)`` the nearest own-class slot (by cosine),
    plus ``codebook_weight * mean ||sg(f) - q(f)||^2`` (VQ-VAE codebook term; only useful when the slots
    are trainable, ``"learned"`` mode). Squared errors are averaged over elements (``F.mse_loss``)."""
    if feats.dim() == 1:
        feats = feats[None]
    slots = _as_slots(memory)
    y = _labels(labels, feats.shape[0], feats.device)
    f = F.normalize(feats, dim=-1)
    own = slots[y]  # [N, K, D]
    idx = torch.einsum("nd,nkd->nk", f.detach(), own.detach()).argmax(1)
    q = own[torch.arange(f.shape[0], device=f.device), idx]
    loss = F.mse_loss(f, q.detach())
    if codebook_weight:
        loss = loss + codebook_weight * F.mse_loss(q, f.detach())
    return loss


def orthogonality_loss(memory) -> torch.Tensor:
    """Orthogonality of each class's slots: ``mean_c ||C^c C^c^T - I||_F^2 / n_slots^2`` (unit slots)."""
    slots = _as_slots(memory)
    gram = slots @ slots.transpose(1, 2)
    eye = torch.eye(slots.shape[1], device=slots.device, dtype=slots.dtype)
    return ((gram - eye) ** 2).sum((1, 2)).mean() / slots.shape[1] ** 2


class MemoryAttentionPool(nn.Module):
    """Memory-guided attention pooling (MoMKD Sec. "single-modality inference").

    ``score_i = max_j cos(p_i, C^+_j) - max_j cos(p_i, C^-_j)`` with the memory detached;
    ``a = softmax(score / tau)`` over patches, ``tau = exp(log_tau)`` learnable, init 0.2, clamped to
    [0.01, 2]; pooled ``v = sum_i a_i h_i`` of the values ``h`` (encoder outputs).
    Class 1 is positive and class 0 negative.
    """

    def __init__(self, tau_init: float = 0.2, tau_min: float = 0.01, tau_max: float = 2.0) -> None:
        super().__init__()
        if not tau_min <= tau_init <= tau_max:
            raise ValueError(f"tau_init must be in [{tau_min}, {tau_max}], got {tau_init}")
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau_init)))
        self.tau_min, self.tau_max = tau_min, tau_max

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(self.tau_min, self.tau_max)

    def scores(self, patch_proj: torch.Tensor, memory) -> torch.Tensor:
        slots = _as_slots(memory).detach()
        p = F.normalize(patch_proj, dim=-1)
        return (p @ slots[1].T).max(1).values - (p @ slots[0].T).max(1).values

    def forward(self, patch_proj: torch.Tensor, memory, values: torch.Tensor) -> dict:
        score = self.scores(patch_proj, memory)
        attn = torch.softmax(score / self.tau, dim=0)
        return {"pooled": (attn[:, None] * values).sum(0), "attention": attn, "scores": score}
