"""Frozen backbones for the Adaptor chapters: by timm / torchxrayvision / Hugging Face name.

The Adaptor (arXiv 2401.01179) keeps a *pretrained* image backbone and a pretrained text backbone frozen.

* :func:`build_frozen_image_backbone` -- a timm model by name (``pretrained=True`` loads timm weights; offline
  they must already be in the Hugging Face cache) or a torchxrayvision model by name (:data:`XRV_BACKBONES`,
  e.g. the paper's ResNet-AE ``"resnet101-elastic"``; weights must already be in torchxrayvision's cache
  folder, nothing is downloaded).
* :func:`build_frozen_text_backbone` -- a Hugging Face encoder by name / local folder; default the packaged
  all-MiniLM-L6-v2 (via :func:`medvlp_lib.models.encoders.build_text_encoder`).

Because a randomly initialised "frozen backbone" would make the Adaptor chapter meaningless and nothing may be
downloaded, the library also pretrains its own image backbone with SimCLR and caches it on disk:
:func:`medvlp_lib.methods.ssl.offline_pretrained_backbone` (a training recipe, so it lives in ``methods``).
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import safe_torch_load
from .encoders import TextEncoder, WeightsNotAvailableError, build_image_encoder, build_text_encoder, freeze

__all__ = ["XRV_BACKBONES", "XRVImageBackbone", "build_frozen_image_backbone", "build_frozen_text_backbone",
           "xrv_weights_file"]


# name -> (kind, torchxrayvision weights name)
XRV_BACKBONES: dict[str, tuple[str, str]] = {
    "resnet101-elastic": ("ae", "101-elastic"),
    "xrv-resnet-ae-101-elastic": ("ae", "101-elastic"),
    "densenet121-res224-all": ("densenet", "densenet121-res224-all"),
    "densenet121-res224-nih": ("densenet", "densenet121-res224-nih"),
    "densenet121-res224-chex": ("densenet", "densenet121-res224-chex"),
    "densenet121-res224-rsna": ("densenet", "densenet121-res224-rsna"),
    "densenet121-res224-mimic_ch": ("densenet", "densenet121-res224-mimic_ch"),
    "resnet50-res512-all": ("resnet", "resnet50-res512-all"),
}


# --------------------------------------------------------------------------------------------------
# torchxrayvision backbones
# --------------------------------------------------------------------------------------------------
def xrv_weights_file(weights: str, kind: str | None = None, cache_dir: str | os.PathLike | None = None
                     ) -> tuple[Path, str]:
    """``(path, url)`` of a torchxrayvision weights file: where the library looks for it (``cache_dir`` or
    torchxrayvision's cache folder) and where it can be downloaded. ``kind``: ``"ae"`` for the autoencoders
    (default: inferred from :data:`XRV_BACKBONES` / the name)."""
    import torchxrayvision as xrv

    if kind is None:
        kind = "ae" if weights in xrv.autoencoders.model_urls else "classifier"

    urls = xrv.autoencoders.model_urls if kind == "ae" else xrv.models.model_urls
    url = urls[weights]["weights_url"]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else Path(xrv.utils.get_cache_dir())
    return folder / os.path.basename(url), url


class XRVImageBackbone(nn.Module):
    """A torchxrayvision model as a frozen image backbone with the :class:`~.encoders.ImageEncoder` interface.

    Input ``x`` [B, 1, H, W] in [0, 1] is mapped to torchxrayvision's range ``[-1024, 1024]`` and resized to
    the model's native resolution (224 or 512; ``resize=False`` keeps the input size). ``forward_features``
    returns the last convolutional map [B, C, h, w] (ResNet-AE: the encoder output ``z``, as the thesis code
    uses); ``pool`` averages it; ``forward = pool(forward_features)``.
    """

    def __init__(self, model: nn.Module, kind: str, name: str, resolution: int, resize: bool = True):
        super().__init__()
        self.model, self.kind, self.name, self.resolution, self.resize = model, kind, name, int(resolution), resize
        with torch.no_grad():
            probe = self._features(torch.zeros(1, 1, 64, 64))
        self.out_dim = int(probe.shape[1])
        freeze(self)

    def train(self, mode: bool = True):  # frozen: always eval (batch-norm statistics never drift)
        return super().train(False)

    def _features(self, x):
        m = self.model
        if self.kind == "ae":
            return m.encode(x, check_resolution=False)
        if self.kind == "densenet":
            return F.relu(m.features(x))
        r = m.model
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must be a [B, 1, H, W] tensor in [0, 1], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if self.resize and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return self._features(x * 2048.0 - 1024.0)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))


def _xrv_safe_globals() -> list:
    """The classes a torchxrayvision DenseNet weights file (a whole pickled model) may name: its own module
    classes and torch's layers. Nothing else is unpickled (``weights_only=True``)."""
    import torchxrayvision as xrv

    m = xrv.models
    return [m.DenseNet, m._DenseBlock, m._DenseLayer, m._Transition, nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
            nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Sequential, nn.ModuleDict, collections.OrderedDict, set]


class _TorchvisionHolder(nn.Module):
    """What :class:`XRVImageBackbone` reads from a torchxrayvision ResNet: its torchvision model as ``.model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


def _load_xrv_classifier(kind: str, weights: str, path: Path) -> nn.Module:
    """torchxrayvision's DenseNet / ResNet with the weights in ``path``, read with ``weights_only=True``.

    torchxrayvision itself unpickles these files without the weights-only restriction, so a crafted file in its
    cache folder would run code; here the ResNet state dict goes through :func:`medvlp_lib.utils.safe_torch_load`
    and the DenseNet file (a pickled model) is unpickled with only :func:`_xrv_safe_globals` allowed."""
    import torchvision
    import torchxrayvision as xrv

    labels = xrv.models.model_urls[weights]["labels"]
    if kind == "resnet":
        arch = torchvision.models.resnet101 if weights.startswith("resnet101") else torchvision.models.resnet50
        net = arch(num_classes=len(labels), weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.load_state_dict(safe_torch_load(path, f"torchxrayvision weights for {weights!r}"))
        return _TorchvisionHolder(net).eval()
    model = xrv.models.DenseNet(num_classes=len(labels))
    with torch.serialization.safe_globals(_xrv_safe_globals()):
        saved = safe_torch_load(path, f"torchxrayvision weights for {weights!r}")
    state = saved.state_dict() if isinstance(saved, nn.Module) else saved
    if not isinstance(state, dict):
        raise ValueError(f"torchxrayvision weights file {path} holds {type(saved).__name__}, not a model or state dict")
    model.load_state_dict(state)
    return model.eval()


def _build_xrv(name: str, cache_dir=None, resize: bool = True) -> XRVImageBackbone:
    import torchxrayvision as xrv

    kind, weights = XRV_BACKBONES[name]
    path, url = xrv_weights_file(weights, kind, cache_dir)
    if not path.is_file():
        raise WeightsNotAvailableError(
            f"torchxrayvision weights for {name!r} are not on disk: expected {path}. Nothing is downloaded at run "
            f"time. On a machine with internet run `wget {url} -O {path}` (or `python -c \"import torchxrayvision "
            f"as xrv; xrv.{'autoencoders.ResNetAE' if kind == 'ae' else 'models.get_model'}(weights='{weights}')\"`) "
            f"and copy the file there, or use medvlp_lib.methods.ssl.offline_pretrained_backbone().")
    if kind == "ae":  # torchxrayvision reads the autoencoder's state dict with weights_only=True itself
        model = xrv.autoencoders.ResNetAE(weights=weights, cache_dir=str(path.parent) + os.sep)
        res = int(xrv.autoencoders.model_urls[weights]["resolution"])
    else:
        model = _load_xrv_classifier(kind, weights, path)
        res = int(xrv.models.model_urls[weights].get("resolution", 224 if kind == "densenet" else 512))
    return XRVImageBackbone(model, kind, name, res, resize=resize)


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------
def build_frozen_image_backbone(name: str, pretrained: bool = True, in_chans: int = 1,
                                cache_dir: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """A frozen image backbone exposing ``forward_features`` / ``pool`` / ``out_dim``.

    * a key of :data:`XRV_BACKBONES` (torchxrayvision; ``cache_dir`` = the folder holding the weights file,
      default torchxrayvision's ``~/.torchxrayvision/models_data``);
    * anything else: a timm name via :func:`~.encoders.build_image_encoder` with ``trainable="none"``.

    Missing weights raise :class:`~.encoders.WeightsNotAvailableError` with the command to fetch them.
    ``pretrained=False`` (timm only) gives a random frozen backbone -- only useful as a control.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if name == "offline-ssl":
        raise ValueError("'offline-ssl' is trained, not loaded: use "
                         "medvlp_lib.methods.ssl.offline_pretrained_backbone()")
    if name in XRV_BACKBONES:
        if in_chans != 1:
            raise ValueError(f"torchxrayvision backbones take one channel, got in_chans={in_chans}")
        return _build_xrv(name, cache_dir=cache_dir, **kwargs)
    if name.startswith("xrv") or name.endswith("elastic"):
        raise ValueError(f"unknown torchxrayvision backbone {name!r}; known: {sorted(XRV_BACKBONES)}")
    enc = build_image_encoder(name, pretrained=pretrained, in_chans=in_chans, trainable="none", **kwargs)
    return enc.eval()


def build_frozen_text_backbone(name_or_path: str | os.PathLike | None = None, max_length: int = 128) -> TextEncoder:
    """A frozen Hugging Face text encoder (``forward_tokens`` for token states); default the packaged MiniLM."""
    return build_text_encoder(name_or_path, trainable="none", max_length=max_length)
