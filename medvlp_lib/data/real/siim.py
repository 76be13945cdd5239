"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019): RLE masks on the 1024 x 1024 grid.

On-disk layout::

    <root>/                                        (default: $MEDVLP_DATA/siim)
      train-rle.csv                                columns ``ImageId`` and ``" EncodedPixels"`` (note the
                                                   leading space in the Kaggle header); one row per
                                                   pneumothorax region, ``-1`` = no pneumothorax
      dicom-images-train/**/<ImageId>.dcm          1024 x 1024 DICOM (any sub-folder depth; needs pydicom)
        -- or --
      png_images/<ImageId>.png                     the same images converted to PNG

The CSV also ships in torchxrayvision (``siim-pneumothorax-train-rle.csv.gz``, what
``xrv.datasets.SIIM_Pneumothorax_Dataset`` reads) and is used when ``<root>/train-rle.csv`` is missing.

RLE format (the competition's *relative* variant): pixels are numbered column-major (down each column,
then to the next column: the transpose of numpy's row-major order), and the string is pairs
``offset length`` where ``offset`` counts pixels *from the end of the previous run* (from 0 for the
first). :func:`rle_decode` / :func:`rle_encode` are exact inverses on the 1024 grid; several rows for one
image are OR-ed together; ``-1`` (or an empty string) is an empty mask.

Items: ``dict(image=FloatTensor[1, size, size], mask=BoolTensor[size, size] (nearest-neighbour resize of the
1024 mask), label=FloatTensor[1] (1 = pneumothorax), index=int, uid=str)``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import default_root, load_image_gray, xrv_data_file

__all__ = ["SIIMPneumothorax", "rle_decode", "rle_encode", "read_siim_rle", "LAYOUT", "GRID"]

log = logging.getLogger(__name__)

GRID = 1024
RLE_FILE = "train-rle.csv"
IMAGE_DIRS = ("dicom-images-train", "png_images", "images")
LAYOUT = (f"<root>/{RLE_FILE} (ImageId, EncodedPixels) and images <root>/dicom-images-train/**/<ImageId>.dcm or "
          f"<root>/png_images/<ImageId>.png; download: https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation")


def rle_decode(rle: str, height: int = GRID, width: int = GRID) -> np.ndarray:
    """Relative RLE (see module docstring) -> bool mask [height, width]. ``"-1"`` / ``""`` -> all False."""
    if not isinstance(rle, str):
        raise TypeError(f"rle must be a string, got {type(rle).__name__}")
    s = rle.strip()
    flat = np.zeros(height * width, bool)
    if s in ("", "-1"):
        return flat.reshape(width, height).T
    try:
        nums = np.asarray([int(v) for v in s.split()], np.int64)
    except ValueError as err:
        raise ValueError(f"rle must be space-separated integers 'offset length ...', got {s[:40]!r}") from err
    if len(nums) % 2:
        raise ValueError(f"rle must have an even number of integers (offset/length pairs), got {len(nums)}")
    pos = 0
    for off, ln in zip(nums[0::2], nums[1::2]):
        if off < 0 or ln < 0:
            raise ValueError(f"rle offsets and lengths must be non-negative, got {off} {ln}")
        pos += int(off)
        if pos + ln > flat.size:
            raise ValueError(f"rle run ends at pixel {pos + ln} beyond the {height}x{width} grid")
        flat[pos:pos + ln] = True
        pos += int(ln)
    return flat.reshape(width, height).T


def rle_encode(mask: np.ndarray) -> str:
    """Bool mask [H, W] -> relative RLE string (``"-1"`` for an empty mask); inverse of :func:`rle_decode`."""
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {m.shape}")
    flat = m.T.reshape(-1)
    if not flat.any():
        return "-1"
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    out, prev_end = [], 0
    for s, e in zip(starts, ends):
        out += [str(int(s - prev_end)), str(int(e - s))]
        prev_end = e
    return " ".join(out)


def read_siim_rle(csv_path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """``{ImageId: [rle, ...]}`` from the SIIM CSV (CSV order kept); column names are matched after stripping
    whitespace, so both ``" EncodedPixels"`` (Kaggle) and ``"EncodedPixels"`` work."""
    import pandas as pd

    path = Path(csv_path) if csv_path is not None else xrv_data_file("siim-pneumothorax-train-rle.csv.gz")
    if not path.exists():
        raise FileNotFoundError(f"SIIM RLE CSV {path} not found; expected layout {LAYOUT}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = {c.strip(): c for c in df.columns}
    if set(cols) != {"ImageId", "EncodedPixels"}:
        raise ValueError(f"{path}: expected columns 'ImageId' and ' EncodedPixels', got {list(df.columns)}")
    out: dict[str, list[str]] = {}
    for iid, rle in zip(df[cols["ImageId"]], df[cols["EncodedPixels"]]):
        out.setdefault(iid.strip(), []).append(rle.strip())
    return out


def mask_from_rles(rles: list[str], height: int = GRID, width: int = GRID) -> np.ndarray:
    """OR of the decoded masks of one image's rows."""
    m = np.zeros((height, width), bool)
    for r in rles:
        m |= rle_decode(r, height, width)
    return m


class SIIMPneumothorax(Dataset):
    """SIIM pneumothorax images with decoded masks (see the module docstring for layout and RLE).

    Images listed in the CSV but not on disk are skipped and counted (``dataset.skipped``, logged).
    Attributes: ``uids``, ``files``, ``labels`` (float32 [N]), ``rles`` (list of row lists), ``skipped``.
    """

    def __init__(self, root: str | os.PathLike | None = None, size: int = 224, csv_path=None, image_dir=None):
        root = Path(root) if root is not None else default_root("siim", LAYOUT)
        if image_dir is None:
            found = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
            if not found:
                raise FileNotFoundError(f"no SIIM image folder ({', '.join(IMAGE_DIRS)}) under {root}; "
                                        f"expected layout {LAYOUT}")
            image_dir = found[0]
        image_dir = Path(image_dir)
        if csv_path is None and (root / RLE_FILE).exists():
            csv_path = root / RLE_FILE
        table = read_siim_rle(csv_path)
        on_disk: dict[str, Path] = {}
        for f in sorted(image_dir.rglob("*")):
            if f.suffix.lower() in (".dcm", ".png", ".jpg", ".jpeg") and f.is_file():
                on_disk.setdefault(f.stem, f)
        self.size = int(size)
        self.uids, self.files, self.rles = [], [], []
        for iid, rles in table.items():
            if iid in on_disk:
                self.uids.append(iid)
                self.files.append(on_disk[iid])
                self.rles.append(rles)
        self.labels = np.asarray([any(r not in ("", "-1") for r in rr) for rr in self.rles], np.float32)
        self.skipped = len(table) - len(self.uids)
        if self.skipped:
            log.info("SIIMPneumothorax: %d of %d CSV images are not in %s (skipped)", self.skipped, len(table),
                     image_dir)
        if not self.uids:
            raise FileNotFoundError(f"no SIIM image in {image_dir} matches an ImageId of the CSV; "
                                    f"expected layout {LAYOUT}")

    def __len__(self) -> int:
        return len(self.uids)

    def mask(self, i: int, size: int | None = None) -> np.ndarray:
        """The OR-ed mask of image ``i`` at ``size`` (default the dataset's; ``GRID`` = native)."""
        m = mask_from_rles(self.rles[i])
        size = self.size if size is None else size
        if size != GRID:
            idx = (np.arange(size) * GRID / size + GRID / size / 2).astype(int).clip(0, GRID - 1)
            m = m[np.ix_(idx, idx)]
        return m

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for SIIMPneumothorax of length {len(self)}")
        i = int(i) % len(self)
        img = load_image_gray(self.files[i], self.size)
        return {"image": torch.from_numpy(img)[None], "mask": torch.from_numpy(self.mask(i)),
                "label": torch.tensor([self.labels[i]]), "index": i, "uid": self.uids[i]}
