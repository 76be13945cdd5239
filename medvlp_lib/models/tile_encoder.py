"""A small tile encoder for real histology pictures (the IHC demo of chapter 05).

:class:`TileCNN` maps RGB tiles ``[B, 3, p, p]`` in [0, 1] to features ``[B, dim]``.
:func:`medvlp_lib.methods.ssl.embed_tiles` trains it with SimCLR on the tiles of one picture (from
:func:`medvlp_lib.data.ihc.tile_image`) and returns their features; :func:`medvlp_lib.data.ihc.ihc_cohort`
then builds MIL bags from them. Why a tiny in-domain CNN and not a pathology foundation model: see
:mod:`medvlp_lib.methods.ssl`.
"""
from __future__ import annotations

import torch

__all__ = ["TileCNN"]


class TileCNN(torch.nn.Module):
    """The default small tile encoder: 3 conv layers (3x3; strides 1, 2, 2; BN + ReLU) and global average
    pooling, ``[B, 3, p, p]`` in [0, 1] -> ``[B, dim]`` (about 60 k parameters at ``dim=64``)."""

    def __init__(self, dim: int = 64, width: int = 32):
        super().__init__()
        nn = torch.nn

        def block(i, o, s):
            return [nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(*block(3, width, 1), *block(width, 2 * width, 2), *block(2 * width, dim, 2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
