"""Multiple-instance-learning baselines for slide classification: gated-attention ABMIL and mean pooling.

Both take one bag of patch features [N, D] and return 2-class logits plus per-patch attention, and
follow the trainer contract (``training_step(batch) -> {"loss", "ce"}``) so they train with
``medvlp_lib.train.Trainer`` on the same :class:`~medvlp_lib.data.pathology.SlideBatches` as MoMKD.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ABMIL", "MeanPoolMIL"]


def _bag(batch_or_features) -> torch.Tensor:
    x = batch_or_features["features"] if isinstance(batch_or_features, dict) else batch_or_features
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"patch features must be a non-empty [N, D] bag, got shape {tuple(x.shape)}")
    return x.float()


class _MILBase(nn.Module):
    in_dim: int

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _hidden(self, x) -> torch.Tensor:
        """``h = ReLU(W x_i)`` [N, hidden] of one bag (checked to be [N, in_dim])."""
        x = _bag(x)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"patch features must be [N, {self.in_dim}], got {tuple(x.shape)}")
        return self.fc(x)

    def training_step(self, batch: dict) -> dict:
        if "label" not in batch:
            raise ValueError("batch needs a 'label' entry (0 or 1)")
        out = self(_bag(batch).to(self._device()))
        y = torch.as_tensor(batch["label"]).long().reshape(1).to(self._device())
        ce = F.cross_entropy(out["logits"][None], y)
        return {"loss": ce, "ce": float(ce.detach())}

    @torch.no_grad()
    def predict(self, slide) -> dict:
        """``slide``: a ``Slide``, batch dict or [N, D] tensor -> ``{"prob", "logits", "attention"}`` (plus
        ``"scores"``, the attention logits, for models that have them)."""
        was = self.training
        self.eval()
        feats = slide.features if hasattr(slide, "features") else slide
        if not isinstance(feats, (dict, torch.Tensor)):
            feats = torch.as_tensor(feats)
        out = self(_bag(feats).to(self._device()))
        self.train(was)
        res = {"prob": float(out["logits"].softmax(-1)[1]), "logits": out["logits"].cpu(),
               "attention": out["attention"].cpu()}
        if "scores" in out:  # pre-softmax attention logits (same ranking as the attention)
            res["scores"] = out["scores"].cpu()
        return res


class ABMIL(_MILBase):
    """Gated-attention MIL (Ilse et al., 2018, Eq. 9).

    ``h_i = ReLU(W x_i)``; ``a_i = softmax_i( w^T (tanh(V h_i) * sigmoid(U h_i)) )``; ``z = sum_i a_i h_i``;
    ``logits = classifier(z)`` (2 classes).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, attn_dim: int = 128, dropout: float = 0.25,
                 n_classes: int = 2) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(hidden_dim, attn_dim)
        self.attn_u = nn.Linear(hidden_dim, attn_dim)
        self.attn_w = nn.Linear(attn_dim, 1)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(self, x: torch.Tensor) -> dict:
        h = self._hidden(x)
        scores = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1)
        a = scores.softmax(0)
        z = (a[:, None] * h).sum(0)
        return {"logits": self.classifier(z), "attention": a, "scores": scores}


class MeanPoolMIL(_MILBase):
    """Mean pooling baseline: ``logits = classifier(mean_i ReLU(W x_i))``; attention is uniform ``1/N``."""

    def __init__(self, in_dim: int, hidden_dim: int = 256, dropout: float = 0.25, n_classes: int = 2) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(self, x: torch.Tensor) -> dict:
        h = self._hidden(x)
        n = h.shape[0]
        return {"logits": self.classifier(h.mean(0)), "attention": torch.full((n,), 1.0 / n, device=h.device)}
