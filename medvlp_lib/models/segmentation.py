"""A light U-Net-style decoder on a frozen backbone's multi-scale features (the Adaptor paper's segmentation
protocol: backbone frozen, only the decoder is trained, at 1% / 10% / 100% of the labelled masks).

* :func:`multiscale_features` -- a list of feature maps ``[B, C_k, H/s_k, W/s_k]``, shallow to deep: timm
  backbones via ``forward_intermediates`` (ResNet: strides 2, 4, 8, 16, 32), torchxrayvision ResNet / ResNet-AE /
  DenseNet stages by hand, anything else with only ``forward_features`` as a single (deepest) scale.
* :class:`UNetDecoder` -- from the deepest map up: ``x <- Block(concat(up2(x), skip_k))`` with
  ``Block = (Conv3x3-BN-ReLU) x 2``, then bilinear upsampling to the input resolution and a 1x1 conv to
  ``num_classes`` logits. Decoder widths shrink with depth (``width``, ``width/2``, ...; min 16).
* :class:`FrozenBackboneSegmenter` -- frozen encoder (no gradients, eval mode) + trainable decoder;
  ``forward(x) -> logits [B, K, H, W]`` at the input resolution.

The training loss and method (``BCE + (1 - soft Dice)``) live in :mod:`medvlp_lib.methods.segmentation`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["multiscale_features", "UNetDecoder", "FrozenBackboneSegmenter"]


def multiscale_features(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Feature maps of ``encoder`` on ``x``, shallow to deep (see the module docstring)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be an image batch [B, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    backbone = getattr(encoder, "backbone", None)
    if backbone is not None and hasattr(backbone, "forward_intermediates"):
        feats = backbone.forward_intermediates(x, intermediates_only=True)
        return [f for f in feats if f.ndim == 4]
    kind = getattr(encoder, "kind", None)
    if kind in ("ae", "resnet", "densenet") and hasattr(encoder, "model"):
        return _xrv_multiscale(encoder, x)
    f = encoder.forward_features(x)
    if f.ndim != 4:
        raise ValueError(f"{type(encoder).__name__}.forward_features returned {tuple(f.shape)}; a token sequence "
                         f"has no spatial layout -- use a CNN or a timm model with forward_intermediates")
    return [f]


def _xrv_multiscale(enc, x) -> list[torch.Tensor]:
    if enc.resize and x.shape[-1] != enc.resolution:
        x = F.interpolate(x, size=(enc.resolution, enc.resolution), mode="bilinear", align_corners=False)
    x = x * 2048.0 - 1024.0
    m = enc.model
    out = []
    if enc.kind == "densenet":
        for name, layer in m.features.named_children():
            x = layer(x)
            if name.startswith("denseblock") or name == "relu0":
                out.append(x)
        out[-1] = F.relu(m.features.norm5(out[-1]))
        return out
    r = m if enc.kind == "ae" else m.model
    x = r.relu(r.bn1(r.conv1(x)))
    out.append(x)
    x = r.maxpool(x)
    for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
        x = layer(x)
        out.append(x)
    return out


class _Block(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """U-Net decoder over skip features ``channels`` (shallow to deep) -> ``num_classes`` logits.

    ``forward(features, out_size)``: ``features`` as :func:`multiscale_features` returns (spatial sizes
    non-increasing); output ``[B, num_classes, *out_size]``.
    """

    def __init__(self, channels: Sequence[int], num_classes: int = 1, width: int = 64):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.channels, self.num_classes = channels, num_classes
        n = len(channels)
        widths = [max(16, width // (2 ** (n - 1 - i))) for i in range(n)]  # shallow small, deep wide
        self.bottleneck = _Block(channels[-1], widths[-1])
        self.ups = nn.ModuleList(_Block(widths[i + 1] + channels[i], widths[i]) for i in range(n - 1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        if len(features) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps, got {len(features)}")
        x = self.bottleneck(features[-1])
        for i in range(len(features) - 2, -1, -1):
            skip = features[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.ups[i](torch.cat([x, skip], 1))
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
        return self.head(x)


class FrozenBackboneSegmenter(nn.Module):
    """Frozen ``encoder`` + trainable :class:`UNetDecoder`. ``forward(x [B, C, H, W]) -> logits [B, K, H, W]``.

    Channel counts are probed with one forward pass of a ``probe_size`` image at construction. The encoder's
    parameters are set to ``requires_grad=False`` and it stays in eval mode (frozen batch-norm statistics);
    its features are computed under ``torch.no_grad()``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = 1, width: int = 64, in_chans: int = 1,
                 probe_size: int = 64):
        super().__init__()
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        with torch.no_grad():
            dev = next(encoder.parameters()).device
            feats = multiscale_features(encoder, torch.zeros(1, in_chans, probe_size, probe_size, device=dev))
        self.decoder = UNetDecoder([f.shape[1] for f in feats], num_classes=num_classes, width=width)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = multiscale_features(self.encoder, x)
        return self.decoder([f.float() for f in feats], x.shape[-2:])
