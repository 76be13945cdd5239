"""Self-supervised pretraining (SimCLR) of the frozen image encoders the book needs offline.

Two places need a *pretrained* image encoder that nothing may download:

* the Adaptor chapters keep a frozen image backbone; :func:`offline_pretrained_backbone` pretrains a
  ResNet on rendered radiographs and natural crops once and caches it on disk ("load if present, else train");
* the MoMKD chapter's IHC demo embeds tiles of a real tissue picture; :func:`embed_tiles` trains a tiny
  :class:`~medvlp_lib.models.tile_encoder.TileCNN` on the picture's own tiles (seconds, not cached).

Objective: SimCLR's NT-Xent (Chen et al., 2020) between two augmented views of each image, on a projection
head ``g`` (Linear-BN-ReLU-Linear) over the pooled backbone feature, with the multiplier ``s = 1/tau``:

    z = normalize(g(f(aug(x)))),   L = 1/(2N) sum_i [ l(z_i, z'_i) + l(z'_i, z_i) ],
    l(a_i, b_i) = -log exp(s a_i.b_i) / ( sum_j exp(s a_i.b_j) + sum_{j != i} exp(s a_i.a_j) )

(:func:`nt_xent`, ``tau = 0.2``). SimCLR was chosen over SimSiam/BYOL because it cannot collapse and is stable
at the small batch sizes a CPU affords. Both recipes train through the library's one entry point
:func:`medvlp_lib.train.fit` with the :class:`SimCLR` method (views drawn from torch's global RNG, which the
trainer reseeds from ``(seed, step)``, so runs are deterministic and resume exactly).

Offline backbone (:func:`offline_pretrained_backbone`)
------------------------------------------------------
Data, disjoint from evaluation: rendered radiographs whose findings come from the reports of the ``"train"``
split of :func:`medvlp_lib.data.split_ids` (``split_seed``, the evaluation data sets' seed), drawn with a
separate render seed and the key prefix ``"ssl/"``, so no pretraining film is an evaluation film and no
val/test report is ever seen; plus natural-image crops (:class:`medvlp_lib.data.natural.NaturalCrops`,
grayscale). Views: :class:`medvlp_lib.data.augment.ImageAugmenter` defaults (random resized crop, small
rotation / translation, brightness / contrast, noise; no flips).

Cache: ``<MEDVLP_CACHE or ~/.cache/medvlp>/backbones/ssl-<hash>.pt`` with ``hash`` = SHA-256 of the config
(:class:`SSLConfig`) and :data:`SSL_CODE_VERSION` (bump it when the training code changes). The file holds
the backbone ``state_dict``, the config, the loss history and the training time; it is written atomically and
read with ``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only: a crafted file
cannot run code). A file that cannot be read or does not match is retrained (``on_invalid="retrain"``) or
raises.

Tile encoder (:func:`embed_tiles`), our choice, documented
---------------------------------------------------------
Pathology foundation models (UNI, CONCH, Virchow) are self-supervised on tissue tiles; none can be downloaded
here. In the same spirit, and cheaply, :func:`embed_tiles` trains a small CNN (3 conv layers, BN + ReLU,
global average pool, ``dim`` = 64 features) in-domain on the tiles of the image itself, with views made by
:class:`~medvlp_lib.data.augment.ImageAugmenter`: random resized crop (area 0.5-1), any rotation and a
horizontal flip (tissue has no orientation), small brightness / contrast jitter and noise. There is **no hue /
stain jitter** on purpose: stain colour is exactly what separates DAB-positive from negative tissue here, and a
stain-invariant encoder would hide the answer (a real HER2 model would want the opposite). Default budget: 60
steps of 256 tiles, a few CPU-seconds on one thread for the 1,024 tiles of the 16-px grid; no weights are
downloaded and nothing is cached on disk. What it buys, honestly: in a check (ridge / 10-NN regression of
per-tile stain densities from the features, 5-fold, not committed) the SSL features beat the same CNN at random
initialisation (10-NN R^2 for hematoxylin density 0.90 vs 0.67), but a tile's mean RGB colour does as well on
such stain targets: one image is too little to learn much more than colour and texture, and for the
stain-defined task of :func:`medvlp_lib.data.ihc.ihc_cohort` that is enough. Deterministic in ``seed``;
the global RNGs (Python, NumPy, torch) are restored afterwards. Features are z-scored over the image's tiles
(``standardize``).

``encoder`` may instead be a timm model name (e.g. ``"resnet18"``, via
:func:`medvlp_lib.models.backbones.build_frozen_image_backbone` with ``pretrained=True``: the weights must
already be in the local Hugging Face cache, else :class:`~medvlp_lib.models.encoders.WeightsNotAvailableError`
says how to get them) or any ``nn.Module`` mapping ``[B, 3, H, W]`` in [0, 1] to ``[B, D]``. timm models see
the tiles resized to ``input_size`` (default 224) and ImageNet-normalised.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import load_reports, render_batch, split_ids
from ..data.augment import ImageAugmenter
from ..data.cache import cache_root
from ..data.ihc import check_tiles
from ..data.natural import NaturalCrops
from ..models.backbones import build_frozen_image_backbone
from ..models.encoders import ImageEncoder, build_image_encoder, freeze
from ..models.tile_encoder import TileCNN
from ..train import fit
from ..utils import check_seed, get_device, preserved_rng, safe_torch_load, seed_everything

__all__ = ["nt_xent", "SimCLR", "SSLConfig", "SSL_CODE_VERSION", "ssl_cache_path", "ssl_pretraining_images",
           "offline_pretrained_backbone", "embed_tiles"]

SSL_CODE_VERSION = "simclr-v2"  # v2: trained through medvlp_lib.train.fit (AdamW groups, epoch permutations)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, scale: float = 5.0) -> torch.Tensor:
    """SimCLR's NT-Xent on two views ``z1``, ``z2`` [N, D] (normalised inside) with the multiplier ``scale``
    (= 1/temperature; SimCLR's 0.2 is 5.0); see the module docstring. Returns a 0-d loss."""
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor) or z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be [N, D] tensors with the same shape, got "
                         f"{getattr(z1, 'shape', type(z1).__name__)}, {getattr(z2, 'shape', type(z2).__name__)}")
    if z1.shape[0] < 2:
        raise ValueError(f"NT-Xent needs at least 2 samples (the other samples are the negatives), got {z1.shape[0]}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive float (1/temperature), got {scale!r}")
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    sim = (z @ z.t()) * scale
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class SimCLR(nn.Module):
    """Trainer method: NT-Xent between two augmented views of ``batch["image"]`` ([B, C, H, W], float in [0, 1]
    or uint8 in 0..255), through ``encoder`` and a projection head Linear-BN-ReLU-Linear (``proj_dim``).

    ``augment(x) -> x'`` draws its randomness from torch's global RNG (reseeded per step by the trainer).
    Returns ``{"loss": tensor}``. ``encoder`` needs ``out_dim`` (or pass ``feature_dim``)."""

    def __init__(self, encoder: nn.Module, augment: Callable[[torch.Tensor], torch.Tensor], *, proj_dim: int = 128,
                 temperature: float = 0.2, feature_dim: int | None = None):
        super().__init__()
        d = feature_dim or getattr(encoder, "out_dim", None)
        if not isinstance(d, int) or d < 1:
            raise ValueError("encoder must expose an int .out_dim (or pass feature_dim=)")
        if not callable(augment):
            raise TypeError(f"augment must be callable (e.g. ImageAugmenter()), got {type(augment).__name__}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.encoder, self.augment, self.temperature = encoder, augment, float(temperature)
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))

    def training_step(self, batch: dict) -> dict:
        if not isinstance(batch, dict) or "image" not in batch:
            raise ValueError("batch must be a dict with 'image' [B, C, H, W]")
        x = batch["image"].to(next(self.head.parameters()).device)
        x = x.float().div_(255.0) if not x.dtype.is_floating_point else x.float()
        z1 = self.head(self.encoder(self.augment(x)))
        z2 = self.head(self.encoder(self.augment(x)))
        return {"loss": nt_xent(z1, z2, scale=1.0 / self.temperature)}


class _Images(torch.utils.data.Dataset):
    """A tensor of images as a map-style dataset of ``{"image": x[i]}``."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}


# --------------------------------------------------------------------------------------------------
# The offline backbone of the Adaptor chapters
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
        for f, lo in (("size", 1), ("steps", 1), ("batch_size", 1), ("proj_dim", 1), ("n_radiographs", 0),
                      ("n_natural", 0)):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"SSLConfig.{f} must be an integer >= {lo}, got {v!r}")
        for f in ("split_seed", "render_seed", "seed"):
            check_seed(getattr(self, f), f"SSLConfig.{f}")
        if self.n_radiographs + self.n_natural < 2:
            raise ValueError("SSLConfig needs at least 2 images (n_radiographs + n_natural)")
        if not self.temperature > 0 or not self.lr > 0:
            raise ValueError(f"SSLConfig.temperature and lr must be positive, got {self.temperature}, {self.lr}")


def ssl_cache_path(config: SSLConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache root>/backbones/ssl-<sha256(config, SSL_CODE_VERSION)[:16]>.pt``."""
    blob = json.dumps({"config": asdict(config), "code": SSL_CODE_VERSION}, sort_keys=True)
    return cache_root(cache_dir) / "backbones" / f"ssl-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def ssl_pretraining_images(config: SSLConfig, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """The pretraining pool: uint8 [N, 1, size, size] (rendered radiographs, then natural crops) + info.

    Radiographs: findings of the ``"train"`` reports of ``split_ids(seed=config.split_seed)`` (cycled if
    ``n_radiographs`` exceeds them), rendered with ``config.render_seed`` and keys ``"ssl/<uid>/<round>"``.
    """
    parts, info = [], {"radiographs": 0, "natural": 0, "natural_missing": None}
    if config.n_radiographs:
        corpus = load_reports()
        train = split_ids(corpus.uids, config.split_seed)["train"]
        reps, keys = [], []
        for i in range(config.n_radiographs):
            u = train[i % len(train)]
            reps.append(corpus.get(u))
            keys.append(f"ssl/{u}/{i // len(train)}")
        imgs = []
        for i in tqdm(range(0, len(reps), 512), desc="rendering SSL films", disable=not progress, leave=False):
            im, _ = render_batch(reps[i:i + 512], config.render_seed, config.size, keys=keys[i:i + 512])
            imgs.append(torch.from_numpy(np.round(im * 255).astype(np.uint8)))
        parts.append(torch.cat(imgs)[:, None])
        info["radiographs"] = config.n_radiographs
        info["train_uids"] = len(train)
    if config.n_natural:
        nc = NaturalCrops(n=config.n_natural, size=config.size, seed=config.seed, grayscale=True)
        parts.append(torch.stack([(nc[i]["image"] * 255).round().to(torch.uint8) for i in range(len(nc))]))
        info["natural"] = config.n_natural
        info["natural_missing"] = list(nc.missing)
    return torch.cat(parts), info


def _train_ssl(config: SSLConfig, progress: bool = True) -> tuple[dict, dict]:
    device = get_device()
    pool, info = ssl_pretraining_images(config, progress=progress)
    seed_everything(config.seed)
    enc = build_image_encoder(config.arch, pretrained=False, in_chans=1, trainable="all")
    method = SimCLR(enc, ImageAugmenter(), proj_dim=config.proj_dim, temperature=config.temperature)
    t0 = time.perf_counter()
    history = fit(method, _Images(pool), steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                  weight_decay=config.weight_decay, seed=config.seed, device=device, progress=progress)
    enc.eval()
    state = {k: v.detach().cpu() for k, v in enc.backbone.state_dict().items()}
    info.update(history=[h["loss"] for h in history], train_seconds=time.perf_counter() - t0, device=str(device))
    return state, info


def _load_cached(path: Path, config: SSLConfig) -> dict:
    """The cached blob, checked: read with ``weights_only=True`` (:func:`~medvlp_lib.utils.safe_torch_load`; a
    crafted pickle raises :class:`~medvlp_lib.utils.UnsafeFileError` before anything runs); ``ValueError`` naming
    the file when it is not an SSL backbone file of this config and code version."""
    blob = safe_torch_load(path, "cached SSL backbone")
    need = ("state_dict", "config", "code_version")
    if not isinstance(blob, dict) or not set(need) <= set(blob):
        got = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path} is not an SSL backbone file (expected keys {list(need)}, got {got})")
    if blob["config"] != asdict(config) or blob["code_version"] != SSL_CODE_VERSION:
        raise ValueError(f"{path}: config / code version in the file differ from the request")
    if not isinstance(blob["state_dict"], dict):
        raise ValueError(f"{path}: 'state_dict' is a {type(blob['state_dict']).__name__}, expected a dict of tensors")
    return blob


def offline_pretrained_backbone(config: SSLConfig | None = None, cache_dir: str | os.PathLike | None = None,
                                force: bool = False, on_invalid: str = "retrain",
                                progress: bool = True) -> ImageEncoder:
    """The library's own self-supervised image backbone, frozen: load from the cache if present, else train.

    Returns an :class:`~medvlp_lib.models.encoders.ImageEncoder` (``trainable="none"``, eval mode) named
    ``"ssl-<arch>-<hash>"`` with ``.ssl_info`` = dict(path, loaded (bool), config, history, train_seconds,
    radiographs, natural, ...). ``force=True`` retrains and overwrites. ``on_invalid``: ``"retrain"``
    (default) or ``"raise"`` when the cached file is unreadable, unsafe (anything but tensors and plain
    containers) or was written for another config.
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
            blob = _load_cached(path, config)
            enc.backbone.load_state_dict(blob["state_dict"])
            loaded = True
        except Exception as err:  # noqa: BLE001 -- any unreadable file is handled by policy
            if on_invalid == "raise":
                raise RuntimeError(f"cached SSL backbone {path} is invalid ({type(err).__name__}: {err}); delete it "
                                   f"or call offline_pretrained_backbone(..., force=True)") from err
            warnings.warn(f"cached SSL backbone {path} is invalid ({type(err).__name__}: {err}); retraining",
                          stacklevel=2)
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


# --------------------------------------------------------------------------------------------------
# The tile encoder of the IHC demo
# --------------------------------------------------------------------------------------------------
def _to_tensor(tiles: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
    return x / 255.0 if tiles.dtype == np.uint8 else x


def _train_tile_cnn(x: torch.Tensor, *, dim: int, steps: int, batch_size: int, lr: float, temperature: float,
                    seed: int, progress: bool) -> tuple[nn.Module, dict]:
    aug = ImageAugmenter(scale=(0.5, 1.0), degrees=180.0, translate=0.05, brightness=0.1, contrast=0.1,
                         noise_std=0.02, hflip_p=0.5)
    t0 = time.process_time()
    with preserved_rng():  # deterministic, and the caller's global RNGs are left as they were
        torch.manual_seed(seed)
        enc = TileCNN(dim)
        method = SimCLR(enc, aug, proj_dim=32, temperature=temperature)
        history = fit(method, _Images(x), steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0,
                      warmup_frac=0.0, seed=seed, device="cpu", progress=progress)
    enc.eval()
    return enc, {"encoder": "ssl-cnn", "dim": dim, "steps": steps, "batch_size": min(batch_size, x.shape[0]),
                 "lr": lr, "temperature": temperature, "seed": seed, "ssl_loss": [h["loss"] for h in history],
                 "train_cpu_seconds": time.process_time() - t0}


def _timm_encoder(name: str, input_size: int, device, pretrained: bool):
    enc = build_frozen_image_backbone(name, pretrained=pretrained, in_chans=3).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def run(x):
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
        return enc((x - mean) / std)

    return run, {"encoder": name, "dim": int(enc.out_dim), "input_size": input_size, "pretrained": pretrained}


@torch.no_grad()
def _encode(run, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    return torch.cat([run(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)])


def embed_tiles(tiles, encoder="ssl-cnn", *, seed: int = 0, dim: int = 64, steps: int = 60, batch_size: int = 256,
                lr: float = 3e-3, temperature: float = 0.2, standardize: bool = True, input_size: int = 224,
                pretrained: bool = True, device: str | torch.device = "cpu", progress: bool = False,
                return_info: bool = False):
    """Embed RGB tiles ``[N, p, p, 3]`` (uint8, or float in [0, 1]) into features ``float32 [N, D]``.

    ``encoder``: ``"ssl-cnn"`` (default; a :class:`~medvlp_lib.models.tile_encoder.TileCNN` trained with SimCLR
    on ``tiles`` themselves for ``steps`` steps of ``batch_size`` tiles, see the module docstring), a timm model
    name (pretrained weights from the local cache only, else
    :class:`~medvlp_lib.models.encoders.WeightsNotAvailableError`; ``pretrained=False`` gives a random frozen
    control; tiles resized to ``input_size`` px, ImageNet normalisation; ``device`` e.g. ``"cuda"``) or an
    ``nn.Module`` used as is (``[B, 3, p, p]`` -> ``[B, D]``, eval mode). ``standardize``: z-score every feature
    over the ``N`` tiles. Deterministic in ``seed`` on a given machine. ``return_info=True`` also returns a dict
    with the encoder, its SSL loss history and CPU seconds.
    """
    t = check_tiles(tiles)
    if t.dtype != np.uint8 and (t.min() < 0 or t.max() > 1):
        raise ValueError("float tiles must be in [0, 1] (or pass uint8 tiles in 0..255)")
    for name, v in (("dim", dim), ("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    x = _to_tensor(t)
    device = torch.device(device)
    t0 = time.process_time()
    if isinstance(encoder, torch.nn.Module):
        was = encoder.training
        encoder.eval()
        feats = _encode(encoder, x, batch_size, device)
        encoder.train(was)
        info = {"encoder": type(encoder).__name__, "dim": int(feats.shape[1])}
    elif encoder == "ssl-cnn":
        if t.shape[0] < 2:
            raise ValueError("SimCLR needs at least 2 tiles")
        enc, info = _train_tile_cnn(x, dim=dim, steps=steps, batch_size=batch_size, lr=lr, temperature=temperature,
                                    seed=seed, progress=progress)
        feats = _encode(enc, x, 512, torch.device("cpu"))
        info["model"] = enc
    elif isinstance(encoder, str) and encoder:
        run, info = _timm_encoder(encoder, input_size, device, pretrained)
        feats = _encode(run, x, batch_size, device)
    else:
        raise ValueError(f"encoder must be 'ssl-cnn', a timm model name or an nn.Module, got {encoder!r}")
    f = feats.numpy().astype(np.float32)
    if standardize:
        f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    info["cpu_seconds"] = time.process_time() - t0
    return (f.astype(np.float32), info) if return_info else f.astype(np.float32)
