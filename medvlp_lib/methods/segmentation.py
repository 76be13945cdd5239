"""Training a segmentation decoder on a frozen backbone (the Adaptor paper's segmentation protocol).

* :func:`segmentation_loss` -- ``BCE(logits, y) + dice_weight * (1 - soft Dice)`` (the usual Dice+BCE mix for
  small foregrounds);
* :class:`SegmentationMethod` -- trainer method around a
  :class:`~medvlp_lib.models.segmentation.FrozenBackboneSegmenter` (only the decoder has gradients).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.segmentation import FrozenBackboneSegmenter

__all__ = ["segmentation_loss", "SegmentationMethod"]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                      eps: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``BCEWithLogits(logits, y) + dice_weight * (1 - soft Dice)``.

    Soft Dice per image and class: ``(2 sum p y + eps) / (sum p + sum y + eps)``, ``p = sigmoid(logits)``,
    averaged over images and classes (``eps = 1`` makes an empty target with an empty prediction score 1).
    ``logits`` [B, K, H, W]; ``target`` [B, K, H, W] or [B, H, W] (K = 1), bool or {0, 1}.
    """
    if target.ndim == 3:
        target = target[:, None]
    if logits.ndim != 4 or target.shape != logits.shape:
        raise ValueError(f"logits [B, K, H, W] and target [B, K, H, W] (or [B, H, W]) must match, got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    y = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    inter = (p * y).sum((2, 3))
    dice = (2 * inter + eps) / (p.sum((2, 3)) + y.sum((2, 3)) + eps)
    loss = bce + dice_weight * (1 - dice.mean())
    return loss, {"bce": float(bce.detach()), "soft_dice": float(dice.mean().detach())}


class SegmentationMethod(nn.Module):
    """Trainer method: ``training_step(dict(image [B, C, H, W], mask [B, H, W] or [B, K, H, W]))``."""

    def __init__(self, model: FrozenBackboneSegmenter, dice_weight: float = 1.0):
        super().__init__()
        self.model, self.dice_weight = model, dice_weight

    def training_step(self, batch: dict) -> dict:
        if not isinstance(batch, dict) or "image" not in batch or "mask" not in batch:
            raise ValueError("batch must be a dict with 'image' [B, C, H, W] and 'mask' [B, H, W] or [B, K, H, W]")
        dev = next(self.model.decoder.parameters()).device
        logits = self.model(batch["image"].to(dev))
        loss, parts = segmentation_loss(logits, batch["mask"].to(dev), self.dice_weight)
        return {"loss": loss, **parts}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Boolean masks [B, K, H, W] (``sigmoid(logits) > threshold``), eval mode."""
        was = self.training
        self.eval()
        try:
            dev = next(self.model.decoder.parameters()).device
            return torch.sigmoid(self.model(images.to(dev))) > threshold
        finally:
            self.train(was)

    def forward(self, batch: dict) -> dict:
        return self.training_step(batch)
