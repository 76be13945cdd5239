"""Unlabeled natural-image crops: the offline stand-in for ImageNet in VLCD's predistillation stage.

VLCD (arXiv 2506.02229) first trains each student to mimic the teacher's image features on ImageNet
("unsupervised predistillation") before any medical data. Offline we draw random crops from the
photographs that ship *inside* scikit-image's package data folder (no download ever: we read the files
from disk and never call ``skimage.data.<name>()``, which may fetch missing images):

    astronaut, brick, camera, chelsea, clock_motion, coffee, coins, grass, gravel, horse,
    hubble_deep_field, moon, motorcycle_left, motorcycle_right, rocket

(microscopy / retina / document images that also ship with scikit-image are left out on purpose).
:class:`NaturalCrops` is a map-style torch ``Dataset`` of ``n`` crops; crop ``i`` is a pure function of
``(seed, i)`` -- source image, random resized crop (area fraction ``scale``, aspect ``ratio``, as in
torchvision's ``RandomResizedCrop``), horizontal flip, colour jitter (brightness, contrast, saturation)
and optional grayscale -- so any crop is reproducible in any order and by any worker.

:class:`ImageFolderCrops` applies the same augmentation to an ImageNet-style folder
``root/<class>/*.JPEG`` for workstation users who hold ImageNet (or any folder of photographs).

Items: ``dict(image=FloatTensor[C, size, size] in [0, 1], index=int, source=int)`` where ``C = 1`` with
``grayscale=True`` (radiograph students) else 3, and ``source`` indexes ``dataset.sources``
(:class:`ImageFolderCrops` adds ``label`` = class index).
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..utils import check_seed
from .real.common import check_index, read_pil

__all__ = ["NATURAL_IMAGES", "skimage_data_dir", "available_natural_images", "CropAugment", "NaturalCrops",
           "ImageFolderCrops", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)

NATURAL_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "chelsea", "clock_motion", "coffee", "coins", "grass", "gravel", "horse",
    "hubble_deep_field", "moon", "motorcycle_left", "motorcycle_right", "rocket",
)
"""Photographs bundled with scikit-image used by default (file stem in ``skimage/data``)."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def skimage_data_dir() -> Path:
    """The folder holding scikit-image's bundled images (found without importing ``skimage.data``)."""
    spec = importlib.util.find_spec("skimage.data")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed (pip install scikit-image); its bundled photographs "
                                "are the offline natural-image source")
    return Path(list(spec.submodule_search_locations)[0])


def _find_file(folder: Path, stem: str) -> Path | None:
    for ext in (".png", ".jpg", ".jpeg"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def available_natural_images(names: Sequence[str] = NATURAL_IMAGES) -> dict[str, Path]:
    """``name -> file`` for the requested photographs that are present on disk (no download)."""
    folder = skimage_data_dir()
    return {n: p for n in names if (p := _find_file(folder, n)) is not None}


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any PIL image; transparency is composited on white (e.g. the ``horse`` silhouette)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def _load_image(path: Path) -> Image.Image:
    """RGB image of ``path``; a corrupt file raises :class:`~medvlp_lib.data.real.common.CorruptImageError`
    (a ``ValueError``) naming it."""
    return _to_rgb(read_pil(path))


@dataclass(frozen=True)
class CropAugment:
    """Random resized crop + flip + colour jitter + optional grayscale, driven by a numpy ``Generator``.

    * crop: area fraction ``~ U(scale)`` of the image, log-aspect ``~ U(log ratio)``; up to 10 tries, then
      the largest centred crop with the clamped aspect (torchvision's ``RandomResizedCrop`` rule); resized
      to ``size x size`` with PIL's antialiased bilinear filter;
    * ``hflip``: probability of a horizontal flip;
    * ``jitter``: strength ``j`` of brightness (``x *= b``), contrast (``x = m + c (x - m)``, ``m`` the mean
      luminance) and saturation (``x = g + a (x - g)``, ``g`` the per-pixel luminance) with factors
      ``~ U(1 - j, 1 + j)``, applied in that order, then clipped to ``[0, 1]``;
    * ``grayscale``: output one channel (ITU-R 601 luminance ``0.299 R + 0.587 G + 0.114 B``);
      otherwise three channels, converted to gray (replicated) with probability ``random_grayscale``.
    """

    size: int = 64
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    jitter: float = 0.4
    grayscale: bool = True
    random_grayscale: float = 0.0

    def __post_init__(self):
        if not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ValueError(f"size must be a positive integer (output side in pixels), got {self.size!r}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1 (area fractions), got {self.scale!r}")
        rlo, rhi = self.ratio
        if not 0 < rlo <= rhi:
            raise ValueError(f"ratio must satisfy 0 < min <= max (aspect ratios w/h), got {self.ratio!r}")
        for name in ("hflip", "random_grayscale"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def crop_box(self, rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a random resized crop in a ``width x height`` image."""
        area = width * height
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_r))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                x0 = int(rng.integers(0, width - w + 1))
                y0 = int(rng.integers(0, height - h + 1))
                return x0, y0, x0 + w, y0 + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        x0, y0 = (width - w) // 2, (height - h) // 2
        return x0, y0, x0 + w, y0 + h

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """Augment an RGB PIL image into a ``FloatTensor[C, size, size]`` in ``[0, 1]``."""
        box = self.crop_box(rng, *img.size)
        crop = img.resize((self.size, self.size), resample=Image.Resampling.BILINEAR, box=box)
        x = np.asarray(crop, dtype=np.float32) / 255.0  # [H, W, 3]
        if rng.random() < self.hflip:
            x = x[:, ::-1]
        lum_w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if self.jitter > 0:
            b, c, s = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3).astype(np.float32)
            x = np.clip(x * b, 0, 1)
            m = float((x @ lum_w).mean())
            x = np.clip(m + c * (x - m), 0, 1)
            g = (x @ lum_w)[..., None]
            x = np.clip(g + s * (x - g), 0, 1)
        to_gray = rng.random() < self.random_grayscale
        if self.grayscale:
            x = (x @ lum_w)[..., None]
        elif to_gray:
            x = np.repeat((x @ lum_w)[..., None], 3, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)).clamp_(0, 1)


class _CropDataset(Dataset):
    def __init__(self, n: int, seed: int, augment: CropAugment):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer (number of crops), got {n!r}")
        self.n, self.seed, self.augment = int(n), check_seed(seed), augment

    def __len__(self) -> int:
        return self.n

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index)])

    def _check_index(self, index) -> int:
        return check_index(index, self.n, type(self).__name__)


class NaturalCrops(_CropDataset):
    """``n`` augmented crops of scikit-image's bundled photographs (see the module docstring).

    ``names``: which photographs (default :data:`NATURAL_IMAGES`); an explicitly requested name that is
    not on disk raises ``FileNotFoundError``, a missing default is skipped with a logged count
    (``self.missing``). ``size``: output side; ``grayscale``: one output channel (default, for radiograph
    students) or three. Other keywords go to :class:`CropAugment`. Crop ``i`` depends only on ``(seed, i)``.
    """

    def __init__(self, n: int = 1024, size: int = 64, seed: int = 0, grayscale: bool = True,
                 names: Sequence[str] | None = None, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5, jitter: float = 0.4,
                 random_grayscale: float = 0.0):
        super().__init__(n, seed, CropAugment(size=size, scale=scale, ratio=ratio, hflip=hflip, jitter=jitter,
                                              grayscale=grayscale, random_grayscale=random_grayscale))
        explicit = names is not None
        wanted = tuple(NATURAL_IMAGES if names is None else names)
        if isinstance(names, str) or not wanted:
            raise ValueError(f"names must be a non-empty sequence of photograph names, got {names!r}")
        found = available_natural_images(wanted)
        self.missing = [n_ for n_ in wanted if n_ not in found]
        if self.missing and explicit:
            raise FileNotFoundError(
                f"photographs {self.missing} are not bundled in scikit-image's data folder {skimage_data_dir()} "
                f"(only files shipped with the package are used; nothing is downloaded). Available: "
                f"{sorted(available_natural_images(NATURAL_IMAGES))}")
        if self.missing:
            log.warning("NaturalCrops: %d of %d default photographs are not on disk and were skipped: %s",
                        len(self.missing), len(wanted), self.missing)
        if not found:
            raise FileNotFoundError(f"no natural photographs found in {skimage_data_dir()} (looked for {list(wanted)})")
        self.sources: list[str] = list(found)
        self.files: list[Path] = [found[k] for k in self.sources]
        self._images: list[Image.Image] = [_load_image(p) for p in self.files]

    @property
    def size(self) -> int:
        return self.augment.size

    def source_of(self, index: int) -> int:
        """Index (into ``self.sources``) of the photograph crop ``index`` is cut from."""
        return int(self._rng(self._check_index(index)).integers(len(self._images)))

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        rng = self._rng(index)
        src = int(rng.integers(len(self._images)))
        return {"image": self.augment(self._images[src], rng), "index": index, "source": src}

    def __repr__(self) -> str:
        return (f"NaturalCrops(n={self.n}, size={self.size}, seed={self.seed}, channels={self.augment.channels}, "
                f"sources={len(self.sources)})")


class ImageFolderCrops(_CropDataset):
    """Augmented crops from an ImageNet-style folder ``root/<class>/*.JPEG`` (any of :data:`IMAGE_EXTENSIONS`).

    One item per file (sorted by class folder, then file name) unless ``n`` is given, in which case item
    ``i`` uses file ``i % len(files)`` (several crops per image). Each item also carries ``label`` (class
    index into ``self.classes``). Images are decoded lazily; an unreadable file raises ``ValueError`` naming
    it. ``root`` defaults to ``$MEDVLP_DATA/imagenet/train``.
    """

    LAYOUT = ("root/<class>/*.JPEG  (e.g. imagenet/train/n01440764/n01440764_10026.JPEG); ImageNet (ILSVRC2012 train) "
              "after registration at https://image-net.org/download, or any folder of class sub-folders")

    def __init__(self, root: str | os.PathLike | None = None, size: int = 224, seed: int = 0, grayscale: bool = False,
                 n: int | None = None, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5, jitter: float = 0.4,
                 random_grayscale: float = 0.0, extensions: Sequence[str] = IMAGE_EXTENSIONS):
        if root is None:
            base = os.environ.get("MEDVLP_DATA")
            if not base:
                raise FileNotFoundError(f"ImageFolderCrops: no root given and MEDVLP_DATA is not set; expected layout "
                                        f"{self.LAYOUT}")
            root = Path(base) / "imagenet" / "train"
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"ImageFolderCrops: folder {str(root)!r} does not exist; expected layout "
                                    f"{self.LAYOUT}")
        exts = tuple(e.lower() for e in extensions)
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files: list[Path] = []
        labels: list[int] = []
        for ci, c in enumerate(classes):
            for f in sorted((root / c).iterdir()):
                if f.is_file() and f.suffix.lower() in exts:
                    files.append(f)
                    labels.append(ci)
        if not files:
            loose = [f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in exts][:3]
            hint = f" (found images directly in root, e.g. {loose}: put them in class sub-folders)" if loose else ""
            raise FileNotFoundError(f"ImageFolderCrops: no images with extensions {list(exts)} under "
                                    f"{str(root)!r}{hint}; expected layout {self.LAYOUT}")
        super().__init__(len(files) if n is None else n, seed,
                         CropAugment(size=size, scale=scale, ratio=ratio, hflip=hflip, jitter=jitter,
                                     grayscale=grayscale, random_grayscale=random_grayscale))
        self.root, self.classes, self.files, self.labels = root, classes, files, labels
        self.sources = [str(f.relative_to(root)) for f in files]

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        fi = index % len(self.files)
        img = _load_image(self.files[fi])
        return {"image": self.augment(img, self._rng(index)), "index": index, "source": fi,
                "label": self.labels[fi]}

    def __repr__(self) -> str:
        return (f"ImageFolderCrops(root={str(self.root)!r}, files={len(self.files)}, classes={len(self.classes)}, "
                f"n={self.n}, size={self.augment.size})")
