"""Frozen backbones for the Adaptor chapter: by timm / torchxrayvision / Hugging Face name, or pretrained here.

The Adaptor (arXiv 2401.01179) keeps a *pretrained* image backbone and a pretrained text backbone frozen.

* :func:`build_frozen_image_backbone` -- a timm model by name (``pretrained=True`` loads timm weights; offline
  they must already be in the Hugging Face cache), a torchxrayvision model by name (:data:`XRV_BACKBONES`,
  e.g. the paper's ResNet-AE ``"resnet101-elastic"``; weights must already be in torchxrayvision's cache
  folder, nothing is downloaded), or ``"offline-ssl"`` = :func:`offline_pretrained_backbone`.
* :func:`build_frozen_text_backbone` -- a Hugging Face encoder by name / local folder; default the packaged
  all-MiniLM-L6-v2 (via :func:`medvlp_lib.models.encoders.build_text_encoder`).
* :func:`offline_pretrained_backbone` -- because a randomly initialised "frozen backbone" would make the
  Adaptor chapter meaningless and nothing may be downloaded, the library pretrains its own image backbone
  with a self-supervised objective and caches it on disk ("load if present, else train").

Offline self-supervised pretraining (our choice, documented)
-----------------------------------------------------------
Objective: SimCLR's NT-Xent (Chen et al., 2020) between two augmented views of each image, on a projection
head ``g`` (Linear-BN-ReLU-Linear) over the pooled backbone feature:

    z = normalize(g(f(aug(x)))),   L = 1/(2N) sum_i [ l(z_i, z'_i) + l(z'_i, z_i) ],
    l(a_i, b_i) = -log exp(a_i.b_i / tau) / ( sum_j exp(a_i.b_j / tau) + sum_{j != i} exp(a_i.a_j / tau) )

(``tau = 0.2``). SimCLR was chosen over SimSiam/BYOL because it cannot collapse and is stable at the small
batch sizes a CPU affords; it trains a ResNet-18 at 64 px in a few CPU minutes.

Data, disjoint from evaluation: rendered radiographs whose findings come from the reports of the
``"train"`` split of :func:`medvlp_lib.data.split_ids` (``split_seed``, the evaluation data sets' seed), drawn
with a separate render seed and the key prefix ``"ssl/"``, so no pretraining film is an evaluation film
and no val/test report is ever seen; plus natural-image crops (:class:`medvlp_lib.data.natural.NaturalCrops`,
grayscale) when that module is available. Views: :func:`medvlp_lib.data.augment.augment_images` (random
resized crop, small rotation / translation, brightness / contrast, noise; no flips).

Cache: ``<MEDVLP_CACHE or ~/.cache/medvlp>/backbones/ssl-<hash>.pt`` with ``hash`` = SHA-256 of the config
(:class:`SSLConfig`) and :data:`SSL_CODE_VERSION` (bump it when the training code changes). The file holds
the backbone ``state_dict``, the config, the loss history and the training time; it is written atomically.
A file that cannot be read or does not match is retrained (``on_invalid="retrain"``) or raises.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoders import (ImageEncoder, TextEncoder, WeightsNotAvailableError, build_image_encoder,
                       build_text_encoder)

__all__ = ["XRV_BACKBONES", "XRVImageBackbone", "build_frozen_image_backbone", "build_frozen_text_backbone",
           "SSLConfig", "SSL_CODE_VERSION", "offline_pretrained_backbone", "ssl_cache_path", "nt_xent",
           "ssl_pretraining_images", "freeze"]

log = logging.getLogger(__name__)

SSL_CODE_VERSION = "simclr-v1"

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


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` on every parameter and eval mode; returns the module."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


# --------------------------------------------------------------------------------------------------
# torchxrayvision backbones
# --------------------------------------------------------------------------------------------------
def _xrv_weights_file(weights: str, kind: str, cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    import torchxrayvision as xrv

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


def _build_xrv(name: str, cache_dir=None, resize: bool = True) -> XRVImageBackbone:
    import torchxrayvision as xrv

    kind, weights = XRV_BACKBONES[name]
    path, url = _xrv_weights_file(weights, kind, cache_dir)
    if not path.is_file():
        raise WeightsNotAvailableError(
            f"torchxrayvision weights for {name!r} are not on disk: expected {path}. Nothing is downloaded at run "
            f"time. On a machine with internet run `wget {url} -O {path}` (or `python -c \"import torchxrayvision "
            f"as xrv; xrv.{'autoencoders.ResNetAE' if kind == 'ae' else 'models.get_model'}(weights='{weights}')\"`) "
            f"and copy the file there, or use build_frozen_image_backbone('offline-ssl').")
    cd = str(path.parent) + os.sep
    if kind == "ae":
        model = xrv.autoencoders.ResNetAE(weights=weights, cache_dir=cd)
        res = int(xrv.autoencoders.model_urls[weights]["resolution"])
    else:
        model = xrv.models.get_model(weights, cache_dir=cd)
        res = int(xrv.models.model_urls[weights].get("resolution", 224 if kind == "densenet" else 512))
    return XRVImageBackbone(model, kind, name, res, resize=resize)


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------
def build_frozen_image_backbone(name: str = "offline-ssl", pretrained: bool = True, in_chans: int = 1,
                                cache_dir: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """A frozen image backbone exposing ``forward_features`` / ``pool`` / ``out_dim``.

    * ``"offline-ssl"``: :func:`offline_pretrained_backbone` (``kwargs`` go to :class:`SSLConfig`;
      ``cache_dir`` = its cache root);
    * a key of :data:`XRV_BACKBONES` (torchxrayvision; ``cache_dir`` = the folder holding the weights file,
      default torchxrayvision's ``~/.torchxrayvision/models_data``);
    * anything else: a timm name via :func:`~.encoders.build_image_encoder` with ``trainable="none"``.

    Missing weights raise :class:`~.encoders.WeightsNotAvailableError` with the command to fetch them.
    ``pretrained=False`` (timm only) gives a random frozen backbone -- only useful as a control.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if name == "offline-ssl":
        return offline_pretrained_backbone(SSLConfig(**kwargs), cache_dir=cache_dir)
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


# --------------------------------------------------------------------------------------------------
# Offline self-supervised pretraining
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSLConfig:
    """What :func:`offline_pretrained_backbone` trains (every field enters the cache hash).

    Defaults take about 3-5 CPU minutes (2 cores) for a ResNet-18 at 64 px.
    """
    arch: str = "resnet18"
    size: int = 64
    n_radiographs: int = 3000
    n_natural: int = 600
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    proj_dim: int = 128
    split_seed: int = 0
    render_seed: int = 104729
    seed: int = 0

    def __post_init__(self):
        for f in ("size", "steps", "batch_size", "proj_dim"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"SSLConfig.{f} must be a positive integer, got {v!r}")
        for f in ("n_radiographs", "n_natural"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"SSLConfig.{f} must be a non-negative integer, got {v!r}")
        if self.n_radiographs + self.n_natural < 2:
            raise ValueError("SSLConfig needs at least 2 images (n_radiographs + n_natural)")
        if not self.temperature > 0 or not self.lr > 0:
            raise ValueError(f"SSLConfig.temperature and lr must be positive, got {self.temperature}, {self.lr}")


def ssl_cache_path(config: SSLConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache root>/backbones/ssl-<sha256(config, SSL_CODE_VERSION)[:16]>.pt``."""
    from ..data.cache import cache_root

    blob = json.dumps({"config": asdict(config), "code": SSL_CODE_VERSION}, sort_keys=True)
    return cache_root(cache_dir) / "backbones" / f"ssl-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent on two views ``z1``, ``z2`` [N, D] (normalised inside); see the module docstring."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be [N, D] with the same shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def ssl_pretraining_images(config: SSLConfig, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """The pretraining pool: uint8 [N, 1, size, size] (rendered radiographs, then natural crops) + info.

    Radiographs: findings of the ``"train"`` reports of ``split_ids(seed=config.split_seed)`` (cycled if
    ``n_radiographs`` exceeds them), rendered with ``config.render_seed`` and keys ``"ssl/<uid>/<round>"``.
    """
    from ..data import load_reports, render_batch, split_ids

    parts, info = [], {"radiographs": 0, "natural": 0, "natural_missing": None}
    if config.n_radiographs:
        corpus = load_reports()
        train = split_ids(corpus.uids, config.split_seed)["train"]
        reps, keys = [], []
        for i in range(config.n_radiographs):
            u = train[i % len(train)]
            reps.append(corpus.get(u))
            keys.append(f"ssl/{u}/{i // len(train)}")
        from tqdm.auto import tqdm

        imgs = []
        for i in tqdm(range(0, len(reps), 512), desc="rendering SSL films", disable=not progress, leave=False):
            im, _ = render_batch(reps[i:i + 512], config.render_seed, config.size, keys=keys[i:i + 512])
            imgs.append(torch.from_numpy(np.round(im * 255).astype(np.uint8)))
        parts.append(torch.cat(imgs)[:, None])
        info["radiographs"] = config.n_radiographs
        info["train_uids"] = len(train)
    if config.n_natural:
        try:
            from ..data.natural import NaturalCrops
        except ImportError:  # pragma: no cover - the module ships with the library
            NaturalCrops = None
            warnings.warn("medvlp_lib.data.natural is not available: SSL pretraining uses radiographs only")
        if NaturalCrops is not None:
            nc = NaturalCrops(n=config.n_natural, size=config.size, seed=config.seed, grayscale=True)
            parts.append(torch.stack([(nc[i]["image"] * 255).round().to(torch.uint8) for i in range(len(nc))]))
            info["natural"] = config.n_natural
            info["natural_missing"] = list(nc.missing)
    return torch.cat(parts), info


def _train_ssl(config: SSLConfig, progress: bool = True) -> tuple[dict, dict]:
    from tqdm.auto import tqdm

    from ..data.augment import augment_images
    from ..utils import get_device, seed_everything

    device = get_device()
    pool, info = ssl_pretraining_images(config, progress=progress)
    seed_everything(config.seed)
    enc = build_image_encoder(config.arch, pretrained=False, in_chans=1, trainable="all").to(device)
    d = enc.out_dim
    head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True),
                         nn.Linear(d, config.proj_dim)).to(device)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, config.steps - warm))))
    g = torch.Generator().manual_seed(config.seed)
    bs = min(config.batch_size, len(pool))
    history = []
    enc.train()
    head.train()
    t0 = time.perf_counter()
    bar = tqdm(range(config.steps), desc=f"SSL pretraining {config.arch}", disable=not progress, leave=False)
    for step in bar:
        idx = torch.randint(len(pool), (bs,), generator=g)
        x = pool[idx].float().div_(255.0).to(device)
        v1 = augment_images(x, generator=g) if x.device.type == "cpu" else augment_images(x)
        v2 = augment_images(x, generator=g) if x.device.type == "cpu" else augment_images(x)
        loss = nt_xent(head(enc(v1)), head(enc(v2)), config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{history[-1]:.3f}")
    enc.eval()
    state = {k: v.detach().cpu() for k, v in enc.backbone.state_dict().items()}
    info.update(history=history, train_seconds=time.perf_counter() - t0, device=str(device))
    return state, info


def offline_pretrained_backbone(config: SSLConfig | None = None, cache_dir: str | os.PathLike | None = None,
                                force: bool = False, on_invalid: str = "retrain",
                                progress: bool = True) -> ImageEncoder:
    """The library's own self-supervised image backbone, frozen: load from the cache if present, else train.

    Returns an :class:`~.encoders.ImageEncoder` (``trainable="none"``, eval mode) named
    ``"ssl-<arch>-<hash>"`` with ``.ssl_info`` = dict(path, loaded (bool), config, history, train_seconds,
    radiographs, natural, ...). ``force=True`` retrains and overwrites. ``on_invalid``: ``"retrain"``
    (default) or ``"raise"`` when the cached file is unreadable or was written for another config.
    """
    config = config or SSLConfig()
    if not isinstance(config, SSLConfig):
        raise TypeError(f"config must be an SSLConfig, got {type(config).__name__}")
    if on_invalid not in ("retrain", "raise"):
        raise ValueError(f"on_invalid must be 'retrain' or 'raise', got {on_invalid!r}")
    path = ssl_cache_path(config, cache_dir)
    enc = build_image_encoder(config.arch, pretrained=False, in_chans=1, trainable="none")
    enc.name = f"ssl-{config.arch}-{path.stem[4:14]}"
    blob, loaded = None, False
    if path.exists() and not force:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            if blob.get("config") != asdict(config) or blob.get("code_version") != SSL_CODE_VERSION:
                raise ValueError("config / code version in the file differ from the request")
            enc.backbone.load_state_dict(blob["state_dict"])
            loaded = True
        except Exception as err:  # noqa: BLE001 -- any unreadable file is handled by policy
            if on_invalid == "raise":
                raise RuntimeError(f"cached SSL backbone {path} is invalid ({type(err).__name__}: {err}); delete it "
                                   f"or call offline_pretrained_backbone(..., force=True)") from err
            warnings.warn(f"cached SSL backbone {path} is invalid ({err}); retraining", stacklevel=2)
            blob = None
    if blob is None:
        state, info = _train_ssl(config, progress=progress)
        blob = {"state_dict": state, "config": asdict(config), "code_version": SSL_CODE_VERSION, "info": info}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        enc.backbone.load_state_dict(state)
    freeze(enc)
    enc.ssl_info = {"path": str(path), "loaded": loaded, "config": asdict(config), **blob.get("info", {})}
    return enc
