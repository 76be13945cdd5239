"""The CLIP baseline method: a dual encoder trained with the symmetric InfoNCE loss on in-batch pairs.

    L = ( CE(s I T^T, diag) + CE(s T I^T, diag) ) / 2,   s = exp(logit_scale) <= 100

(Radford et al., 2021; ConVIRT, Zhang et al., 2020 for the medical version). Every negative comes from the
current batch, so the signal weakens at small batch sizes -- the problem MSD and RFBE address.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .contrastive import clip_loss

__all__ = ["CLIP", "image_text_batch"]


def image_text_batch(batch: dict, device: torch.device,
                     augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, list[str]]:
    """``(images [B, C, H, W] on device (augmented if augment is given), texts: B strings)`` of an image-report
    batch ``dict(image=[B, C, H, W], text=list[str], ...)``; the error names what is missing or mismatched."""
    if not isinstance(batch, dict) or "image" not in batch or "text" not in batch:
        raise ValueError("batch must be a dict with keys 'image' ([B, C, H, W] tensor) and 'text' (list[str]), "
                         f"got {type(batch).__name__} with keys {list(batch) if isinstance(batch, dict) else None}")
    images = batch["image"].to(device)
    texts = list(batch["text"])
    if images.shape[0] != len(texts):
        raise ValueError(f"batch has {images.shape[0]} images but {len(texts)} texts")
    return (images if augment is None else augment(images)), texts


class CLIP(nn.Module):
    """CLIP training method around a :class:`~medvlp_lib.models.encoders.DualEncoder` (``self.model``).

    ``training_step(batch)`` with ``batch = dict(image=[B, 1, H, W], text=list[str], ...)`` returns
    ``{"loss": tensor, "scale": float (the multiplier 1/temperature), "i2t", "t2i", "acc_i2t", "acc_t2i"}``.
    ``augment`` (optional)
    maps an image batch to an augmented one inside the step (it may use the global torch RNG: the trainer
    reseeds it per step, so resumed runs are identical). ``image_weight`` weights the image->text direction.
    """

    def __init__(self, model: nn.Module, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 image_weight: float = 0.5):
        super().__init__()
        for attr in ("encode_image", "encode_text", "scale"):
            if not hasattr(model, attr):
                raise TypeError(f"model must be a DualEncoder-like module with .{attr}, got {type(model).__name__}")
        self.model = model
        self.augment = augment
        self.image_weight = image_weight

    def training_step(self, batch: dict) -> dict:
        images, texts = image_text_batch(batch, self.model.device, self.augment)
        img, txt = self.model.encode_image(images), self.model.encode_text(texts)
        loss, parts = clip_loss(img.float(), txt.float(), self.model.scale, image_weight=self.image_weight)
        return {"loss": loss, **parts}

    def forward(self, batch: dict) -> dict:
        return self.training_step(batch)
