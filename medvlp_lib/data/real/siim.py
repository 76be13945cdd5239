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

Bad inputs (policies in :mod:`medvlp_lib.data.real.common`): a malformed RLE row (``5 x``) raises ``ValueError``
naming the ImageId and the CSV when the dataset is built (it never becomes a label); images missing on disk are
skipped and counted; a corrupt image stops with its path.

Items: ``dict(image=FloatTensor[1, size, size], mask=BoolTensor[size, size] (nearest-neighbour resize of the
1024 mask), label=FloatTensor[1] (1 = pneumothorax), index=int, uid=str)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .common import RealImageDataset, dataset_root, scan_images, xrv_data_file

__all__ = ["SIIMPneumothorax", "rle_decode", "rle_encode", "rle_runs", "read_siim_rle", "LAYOUT", "GRID"]

GRID = 1024
RLE_FILE = "train-rle.csv"
IMAGE_DIRS = ("dicom-images-train", "png_images", "images")
LAYOUT = (f"<root>/{RLE_FILE} (ImageId, EncodedPixels) and images <root>/dicom-images-train/**/<ImageId>.dcm or "
          f"<root>/png_images/<ImageId>.png; download: https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation")


def rle_runs(rle: str, height: int = GRID, width: int = GRID) -> list[tuple[int, int]]:
    """Parse a relative RLE (see module docstring) into absolute ``(start, length)`` runs on the column-major
    ``height x width`` grid, checking it without building a mask. ``"-1"`` / ``""`` -> ``[]``.

    ``ValueError`` when it is not space-separated integers, has an odd count, a negative number, or a run past
    the grid."""
    if not isinstance(rle, str):
        raise TypeError(f"rle must be a string, got {type(rle).__name__}")
    s = rle.strip()
    if s in ("", "-1"):
        return []
    try:
        nums = [int(v) for v in s.split()]
    except ValueError as err:
        raise ValueError(f"rle must be space-separated integers 'offset length ...', got {s[:40]!r}") from err
    if len(nums) % 2:
        raise ValueError(f"rle must have an even number of integers (offset/length pairs), got {len(nums)}")
    runs, pos = [], 0
    for off, ln in zip(nums[0::2], nums[1::2]):
        if off < 0 or ln < 0:
            raise ValueError(f"rle offsets and lengths must be non-negative, got {off} {ln}")
        pos += off
        if pos + ln > height * width:
            raise ValueError(f"rle run ends at pixel {pos + ln} beyond the {height}x{width} grid")
        runs.append((pos, ln))
        pos += ln
    return runs


def rle_decode(rle: str, height: int = GRID, width: int = GRID) -> np.ndarray:
    """Relative RLE (see module docstring) -> bool mask [height, width]. ``"-1"`` / ``""`` -> all False."""
    flat = np.zeros(height * width, bool)
    for start, ln in rle_runs(rle, height, width):
        flat[start:start + ln] = True
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
    whitespace, so both ``" EncodedPixels"`` (Kaggle) and ``"EncodedPixels"`` work.

    Every row is checked here (:func:`rle_runs`, no mask is built): a malformed ``EncodedPixels`` (e.g. ``5 x``,
    an odd count, a run past the 1024 grid) or an empty ImageId raises ``ValueError`` naming the CSV, the line
    and the ImageId, so a bad row can never become a (wrong) label."""
    import pandas as pd

    path = Path(csv_path) if csv_path is not None else xrv_data_file("siim-pneumothorax-train-rle.csv.gz")
    if not path.exists():
        raise FileNotFoundError(f"SIIM RLE CSV {path} not found; expected layout {LAYOUT}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = {c.strip(): c for c in df.columns}
    if set(cols) != {"ImageId", "EncodedPixels"}:
        raise ValueError(f"{path}: expected columns 'ImageId' and ' EncodedPixels', got {list(df.columns)}")
    out: dict[str, list[str]] = {}
    for line, (iid, rle) in enumerate(zip(df[cols["ImageId"]], df[cols["EncodedPixels"]]), start=2):
        iid, rle = iid.strip(), rle.strip()
        if not iid:
            raise ValueError(f"{path}, line {line}: empty ImageId")
        try:
            rle_runs(rle)
        except ValueError as err:
            raise ValueError(f"{path}, line {line}: ImageId {iid}: malformed EncodedPixels {rle[:40]!r} ({err}); "
                             f"expected '-1' or 'offset length' integer pairs on the {GRID}x{GRID} grid") from None
        out.setdefault(iid, []).append(rle)
    return out


def mask_from_rles(rles: list[str], height: int = GRID, width: int = GRID) -> np.ndarray:
    """OR of the decoded masks of one image's rows."""
    m = np.zeros((height, width), bool)
    for r in rles:
        m |= rle_decode(r, height, width)
    return m


class SIIMPneumothorax(RealImageDataset):
    """SIIM pneumothorax images with decoded masks (see the module docstring for layout and RLE).

    Images listed in the CSV but not on disk are skipped and counted (``dataset.skipped``, logged); a malformed
    RLE row stops construction with an error naming the ImageId and the CSV (:func:`read_siim_rle`); a corrupt
    image stops with an error naming it when read (``check=True``: at construction). Attributes: ``uids``,
    ``files``, ``labels`` (float32 [N]), ``rles`` (list of row lists), ``skipped``.
    """

    ITEM_FIELDS = ("uids", "files", "rles", "labels")

    def __init__(self, root: str | os.PathLike | None = None, size: int = 224, csv_path=None, image_dir=None,
                 check: bool = False):
        root = dataset_root(root, "siim", LAYOUT, "SIIM-ACR Pneumothorax")
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
        on_disk = scan_images(image_dir, recursive=True)
        self.size = int(size)
        self.uids = [iid for iid in table if iid in on_disk]
        self.files = [on_disk[iid] for iid in self.uids]
        self.rles = [table[iid] for iid in self.uids]
        self.labels = np.asarray([any(r not in ("", "-1") for r in rr) for rr in self.rles], np.float32)
        self._finish(listed=len(table), where=image_dir, check=check,
                     empty=f"no SIIM image in {image_dir} matches an ImageId of the CSV; expected layout {LAYOUT}")

    def mask(self, i: int, size: int | None = None) -> np.ndarray:
        """The OR-ed mask of image ``i`` at ``size`` (default the dataset's; ``GRID`` = native)."""
        m = mask_from_rles(self.rles[i])
        size = self.size if size is None else size
        if size != GRID:
            idx = (np.arange(size) * GRID / size + GRID / size / 2).astype(int).clip(0, GRID - 1)
            m = m[np.ix_(idx, idx)]
        return m

    def __getitem__(self, i: int) -> dict:
        i = self._index(i)
        return {"image": torch.from_numpy(self._image(i))[None], "mask": torch.from_numpy(self.mask(i)),
                "label": torch.tensor([self.labels[i]]), "index": i, "uid": self.uids[i]}
