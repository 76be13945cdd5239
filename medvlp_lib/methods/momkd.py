"""MoMKD: genomics-to-pathology knowledge distillation through a class-conditional momentum memory.

Paper: "Momentum Memory for Knowledge Distillation in Computational Pathology" (CVPR 2026,
arXiv 2602.21395); public code CAIR-LAB-WFUSM/MoMKD. One step on one slide (batch size 1):

1. slide branch: ``H = GATv2(X, E)`` [N, 256] on the k-NN patch graph; patch projections
   ``p_i = normalize(P_patch h_i)``; memory-guided attention ``a = softmax((max_j cos(p_i, C+_j) -
   max_j cos(p_i, C-_j)) / tau)`` (memory detached); ``v = sum_i a_i h_i``; ``logits = MLP(v)``;
   slide projection ``w = normalize(P_pool v)``;
2. omics branch (training only): ``z = Enc(o)``, ``u = normalize(P_omics z)``, ``o_hat = Dec(z)``;
3. losses ``L = 0.5 CE(logits, y) + 0.01 MSE(o_hat, o) + 0.2 L_align(w) + 0.05 L_align(u) + 0.1 L_mem``
   with ``L_align`` the soft angle loss against the memory and ``L_mem = VQ commitment of the patch
   projections (+ ortho_weight * orthogonality of the slots in "learned" mode, the only mode where the
   slots get gradients; public code: orthogonality weight 10, commitment 1)``;
   the public code's reconstruction weight is 0.05 (``recon_weight=0.05``), the paper's 0.01;
4. after the optimiser step (``"momentum"`` memory), the slots of class ``y`` move towards the aligned
   features by EMA: the omics projection ``u`` (semantic anchoring) and the slide projection ``w``
   (if the respective alignment is on; ``memory_sources`` overrides, ``"patches"`` adds the patch
   projections as in an EMA-VQ codebook).

Gradient decoupling holds by construction: the two branches share no module, only the memory, which
receives no gradient in ``"momentum"``/``"fixed"`` mode (and is a leaf parameter in ``"learned"``
mode); the pooling uses a detached memory, so the classification loss never reaches the memory.
Inference (:meth:`MoMKD.predict`) uses the slide only.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.wsi import EDGE_DIRECTIONS, GATv2SlideEncoder, OmicsDecoder, OmicsEncoder, ProjectionHead, knn_graph
from .memory import (MEMORY_MODES, ClassMemory, MemoryAttentionPool, orthogonality_loss, soft_angle_loss,
                     vq_commitment_loss)

__all__ = ["MoMKD", "VARIANTS"]

#: named ablation variants -> constructor overrides
VARIANTS: dict[str, dict] = {
    "full": {},
    "wsi_baseline": dict(align_wsi=False, align_omics=False, recon=False, memory_mode="fixed", mem_weight=0.0),
    "wsi_align_only": dict(align_omics=False, recon=False),
    "omics_align_only": dict(align_wsi=False),
    "no_recon": dict(recon=False),
    "hard_max": dict(hard_max=True),
    "fixed_memory": dict(memory_mode="fixed"),
    "learned_memory": dict(memory_mode="learned"),
    # EMA-VQ reading: the patch projections move the slots too, so the memory holds patch-level anchors
    "patch_memory": dict(memory_sources=("omics", "wsi", "patches")),
}


class MoMKD(nn.Module):
    """The MoMKD method (see module docstring). Follows the trainer contract.

    Args:
        in_dim: patch feature dimension (128 simulated, 1536 UNI v2).
        omics_dim: number of genes (0 if no omics branch is wanted).
        hidden_dim: GATv2 width ``D`` (paper 256); shared_dim: shared space ``D_N`` (paper 128, code 64).
        n_slots: memory slots per class (code: 16); memory_mode: ``"momentum" | "fixed" | "learned"``.
        weights: ``ce_weight`` 0.5, ``recon_weight`` 0.01 (paper; 0.05 = code), ``align_wsi_weight`` 0.2,
            ``align_omics_weight`` 0.05, ``mem_weight`` 0.1, ``ortho_weight`` 10 (inside ``L_mem``).
        switches: ``align_wsi``, ``align_omics``, ``recon``, ``hard_max`` (max instead of LogSumExp).
        memory_sources: features that move the momentum memory (default: the aligned modalities).
        k, edge_direction: neighbours and direction (:func:`~medvlp_lib.models.wsi.knn_graph`: ``"gather"`` =
            the paper's reading, ``"public_code"`` = the public code's edges) of the patch graph when a batch
            has ``coords`` but no ``edge_index``.
    """
    def __init__(self, in_dim: int, omics_dim: int, *, hidden_dim: int = 256, shared_dim: int = 128,
                 omics_hidden: int = 512, n_slots: int = 16, memory_mode: str = "momentum",
                 momentum: float = 0.99, margin: float = 0.3, tau_init: float = 0.2, dropout: float = 0.25,
                 ce_weight: float = 0.5, recon_weight: float = 0.01, align_wsi_weight: float = 0.2,
                 align_omics_weight: float = 0.05, mem_weight: float = 0.1, ortho_weight: float = 10.0,
                 align_wsi: bool = True, align_omics: bool = True, recon: bool = True, hard_max: bool = False,
                 memory_sources: Iterable[str] | None = None, k: int = 8, edge_direction: str = "gather",
                 seed: int = 0) -> None:
        super().__init__()

        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}")
        self.use_omics = bool(align_omics or recon)
        if self.use_omics and omics_dim < 1:
            raise ValueError("omics_dim must be >= 1 when align_omics or recon is on")
        if memory_sources is None:
            memory_sources = [s for s, on in (("omics", align_omics), ("wsi", align_wsi)) if on]
        memory_sources = tuple(memory_sources)
        bad = set(memory_sources) - {"omics", "wsi", "patches"}
        if bad:
            raise ValueError(f"memory_sources must be a subset of ('omics', 'wsi', 'patches'), got {sorted(bad)}")
        if edge_direction not in EDGE_DIRECTIONS:
            raise ValueError(f"edge_direction must be one of {EDGE_DIRECTIONS}, got {edge_direction!r}")
        self.in_dim, self.omics_dim, self.k, self.edge_direction = in_dim, omics_dim, k, edge_direction
        self.memory_sources = memory_sources
        self.margin, self.hard_max = margin, hard_max
        self.align_wsi, self.align_omics, self.recon = align_wsi, align_omics, recon
        self.weights = dict(ce=ce_weight, mse=recon_weight, align_wsi=align_wsi_weight,
                            align_omics=align_omics_weight, mem=mem_weight)
        self.ortho_weight = ortho_weight
        self.slide_encoder = GATv2SlideEncoder(in_dim, hidden_dim, heads=2, dropout=dropout)
        self.patch_proj = ProjectionHead(hidden_dim, shared_dim)
        self.pool_proj = ProjectionHead(hidden_dim, shared_dim)
        self.pool = MemoryAttentionPool(tau_init)
        self.classifier = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, 128), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(128, 2))
        if self.use_omics:
            self.omics_encoder = OmicsEncoder(omics_dim, hidden_dim, omics_hidden, dropout)
            self.omics_decoder = OmicsDecoder(omics_dim, hidden_dim, omics_hidden, dropout)
            self.omics_proj = ProjectionHead(hidden_dim, shared_dim)
        self.memory = ClassMemory(shared_dim, n_slots, 2, mode=memory_mode, momentum=momentum, seed=seed)
        self._pending: list[tuple[torch.Tensor, int]] = []
        self._warned = False

    @classmethod
    def variant(cls, name: str, in_dim: int, omics_dim: int, **kwargs) -> "MoMKD":
        """Build a named ablation (:data:`VARIANTS`); ``kwargs`` override on top."""
        if name not in VARIANTS:
            raise ValueError(f"unknown MoMKD variant {name!r}; known: {sorted(VARIANTS)}")
        return cls(in_dim, omics_dim, **{**VARIANTS[name], **kwargs})

    # ----------------------------------------------------------------- helpers
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _slide_inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, dict):  # a Slide
            batch = batch.to_batch()
        if "features" not in batch:
            raise ValueError(f"batch needs 'features' [N, {self.in_dim}]; got keys {sorted(batch)}")
        x = torch.as_tensor(batch["features"]).float()
        if x.dim() == 3 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] != self.in_dim:
            raise ValueError(f"features must be a non-empty [N, {self.in_dim}] tensor, got {tuple(x.shape)}")
        if batch.get("edge_index") is not None:
            ei = torch.as_tensor(batch["edge_index"]).long()
        elif batch.get("coords") is not None:
            ei = knn_graph(batch["coords"], self.k, direction=self.edge_direction)
        else:
            raise ValueError("batch needs 'edge_index' [2, E] or 'coords' [N, 2] to build the patch graph")
        dev = self._device()
        return x.to(dev), ei.to(dev)

    def encode_slide(self, batch, chunk_size: int | None = None) -> dict:
        """Slide branch: contextual features, patch projections, attention, logits, slide projection.
        ``chunk_size``: run the GATv2 layers on that many patches at a time (inference on huge slides)."""
        x, ei = self._slide_inputs(batch)
        h = self.slide_encoder(x, ei, chunk_size=chunk_size)
        p = self.patch_proj(h)
        pooled = self.pool(p, self.memory.normalized(), h)
        v = pooled["pooled"]
        return {"h": h, "patch_proj": p, "attention": pooled["attention"], "scores": pooled["scores"],
                "logits": self.classifier(v), "slide_proj": self.pool_proj(v)}

    def encode_omics(self, omics: torch.Tensor) -> dict:
        if not self.use_omics:
            raise RuntimeError("this MoMKD variant has no omics branch (align_omics=False and recon=False)")
        o = torch.as_tensor(omics).float().reshape(1, -1).to(self._device())
        if o.shape[1] != self.omics_dim:
            raise ValueError(f"omics must have {self.omics_dim} genes, got {o.shape[1]}")
        z = self.omics_encoder(o)
        return {"omics_proj": self.omics_proj(z), "recon": self.omics_decoder(z), "omics": o}

    # ----------------------------------------------------------------- memory init
    @torch.no_grad()
    def init_memory(self, slides: Iterable, max_per_class: int = 50_000, iters: int = 20, seed: int = 0,
                    max_patches_per_slide: int | None = 2_000) -> dict:
        """Cosine K-means initialisation of each class's slots on patch projections of ``slides``
        (``Slide`` objects or batch dicts with a label). Returns ``{"n_features": [neg, pos]}``."""
        was = self.training
        self.eval()
        feats, labels = [], []
        g = torch.Generator().manual_seed(int(seed))
        for s in slides:
            b = s if isinstance(s, dict) else s.to_batch()
            p = self.encode_slide(b)["patch_proj"].cpu()
            if max_patches_per_slide is not None and p.shape[0] > max_patches_per_slide:
                p = p[torch.randperm(p.shape[0], generator=g)[:max_patches_per_slide]]
            feats.append(p)
            labels.append(torch.full((p.shape[0],), int(torch.as_tensor(b["label"])), dtype=torch.long))
        self.train(was)
        if not feats:
            raise ValueError("init_memory needs at least one slide")
        f, y = torch.cat(feats), torch.cat(labels)
        self.memory.init_kmeans(f.to(self._device()), y.to(self._device()), iters=iters,
                                max_per_class=max_per_class, seed=seed)
        return {"n_features": [int((y == c).sum()) for c in range(2)]}

    # ----------------------------------------------------------------- trainer contract
    def losses(self, batch: dict) -> dict:
        """All loss terms for one slide, as tensors: ``ce, mse, align_wsi, align_omics, mem, loss`` (and the
        detached ``ortho`` for logging)."""
        if "label" not in batch:
            raise ValueError("batch needs a 'label' entry (0 or 1)")
        y = int(torch.as_tensor(batch["label"]).reshape(-1)[0])
        if y not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {y}")
        dev = self._device()
        yt = torch.tensor([y], device=dev)
        out = self.encode_slide(batch)
        mem = self.memory.normalized()
        zero = torch.zeros((), device=dev)
        parts = {"ce": F.cross_entropy(out["logits"][None], yt)}
        parts["align_wsi"] = (soft_angle_loss(out["slide_proj"][None], yt, mem, self.margin, hard_max=self.hard_max)
                              if self.align_wsi else zero)
        mem_loss = vq_commitment_loss(out["patch_proj"], yt, mem,
                                      codebook_weight=1.0 if self.memory.mode == "learned" else 0.0)
        ortho = orthogonality_loss(mem)
        # orthogonality only has a gradient when the slots are trainable; logged in every mode
        parts["mem"] = mem_loss + (self.ortho_weight * ortho if self.memory.mode == "learned" else 0.0)
        parts["ortho"] = ortho.detach()
        parts["mse"], parts["align_omics"] = zero, zero
        om = None
        if self.use_omics:
            if batch.get("omics") is None or torch.as_tensor(batch["omics"]).numel() == 0:
                raise ValueError("this MoMKD variant needs batch['omics'] during training (omics vector [G])")
            om = self.encode_omics(batch["omics"])
            if self.recon:
                parts["mse"] = F.mse_loss(om["recon"], om["omics"])
            if self.align_omics:
                parts["align_omics"] = soft_angle_loss(om["omics_proj"], yt, mem, self.margin, hard_max=self.hard_max)
        w = self.weights
        parts["loss"] = (w["ce"] * parts["ce"] + w["mse"] * parts["mse"] + w["align_wsi"] * parts["align_wsi"]
                         + w["align_omics"] * parts["align_omics"] + w["mem"] * parts["mem"])
        pending = []
        if "wsi" in self.memory_sources:
            pending.append(out["slide_proj"].detach()[None])
        if "omics" in self.memory_sources and om is not None:
            pending.append(om["omics_proj"].detach())
        if "patches" in self.memory_sources:
            pending.append(out["patch_proj"].detach())
        self._pending = [(torch.cat(pending), y)] if pending else []
        parts["_out"] = out
        return parts

    def training_step(self, batch: dict) -> dict:
        if not bool(self.memory.initialized) and not self._warned:
            warnings.warn("MoMKD memory is not K-means initialised (call init_memory(train_slides) first); "
                          "training from random slots", stacklevel=2)
            self._warned = True
        parts = self.losses(batch)
        out = parts.pop("_out")
        log = {k: float(v.detach()) for k, v in parts.items() if k != "loss"}
        log["tau"] = float(self.pool.tau.detach())
        log["prob"] = float(out["logits"].detach().softmax(-1)[1])
        return {"loss": parts["loss"], **log}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Momentum update of the memory with the features stashed by the last ``training_step``."""
        for feats, y in self._pending:
            self.memory.momentum_update(feats, y)
        self._pending = []

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(self, slide, chunk_size: int | None = 8192) -> dict:
        """WSI-only inference (no omics): ``{"prob", "logits", "attention" [N], "scores" [N]}`` on CPU.
        ``slide``: a ``Slide`` or a batch dict with ``features`` and ``edge_index`` or ``coords``.
        Slides above ``chunk_size`` patches run the graph layers in chunks (same result, less memory)."""
        was = self.training
        self.eval()
        out = self.encode_slide(slide, chunk_size=chunk_size)
        self.train(was)
        return {"prob": float(out["logits"].softmax(-1)[1]), "logits": out["logits"].cpu(),
                "attention": out["attention"].cpu(), "scores": out["scores"].cpu()}
