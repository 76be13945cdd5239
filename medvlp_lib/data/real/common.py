"""Helpers shared by the real-dataset loaders: roots, image reading and its one corrupt-file policy, a base class.

* :func:`default_root` / :func:`dataset_root` -- ``$MEDVLP_DATA/<dataset>``, the one root every loader defaults
  to; a missing root raises ``FileNotFoundError`` naming the expected layout and where to obtain the data;
* :func:`read_pil` / :func:`load_image_gray` -- an image file (PNG / JPEG / DICOM radiograph) decoded in full;
* :func:`scan_images` -- ``{file stem: path}`` of the images in a folder;
* :func:`check_index` -- the ``dataset[i]`` index rule of every dataset of the library;
* :class:`RealImageDataset` / :class:`RealCXRDataset` -- length, indexing, image cache, seeded subsets,
  skip-and-count and the corrupt-image check shared by the loaders;
* :func:`xrv_data_file` -- a label file shipped inside the ``torchxrayvision`` wheel.

Bad inputs, one policy for every loader
---------------------------------------
* **Listed but missing on disk** (an image named in the label table that is not in the image folder): skipped and
  counted (``dataset.skipped``, logged), so a partial download works; no image at all is an error naming the
  layout.
* **Corrupt image** (truncated JPEG / PNG, not an image, unreadable DICOM): *stop*. Reading it raises
  :class:`CorruptImageError` (a ``ValueError``) naming the file; it is never skipped silently, so a metric is
  never computed on a blank or NaN picture. Decoding happens when an item is read; ``check=True`` (or
  :meth:`RealImageDataset.check_images`) decodes every image when the dataset is built and raises one error
  listing every corrupt file, so a long run cannot stop half-way on one.
* **Malformed tables** (wrong columns, bad values, a malformed RLE row): ``ValueError`` naming the file (and the
  row / id) when the dataset is built.
"""
from __future__ import annotations

import importlib.util
import logging
import operator
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ...utils import check_seed

__all__ = ["default_root", "dataset_root", "load_image_gray", "read_pil", "scan_images", "check_index", "check_images",
           "xrv_data_file", "CorruptImageError", "RealImageDataset", "RealCXRDataset", "IMAGE_EXTS"]

log = logging.getLogger(__name__)

IMAGE_EXTS = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
"""File suffixes the chest X-ray loaders read (matched case-insensitively)."""


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded (truncated, not an image, unreadable DICOM)."""


def xrv_data_file(name: str) -> Path:
    """A file shipped in ``torchxrayvision/data/`` (label CSVs in the datasets' own formats)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"torchxrayvision is not installed; it ships {name}")
    path = Path(spec.origin).parent / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is not in the installed torchxrayvision package")
    return path


def default_root(sub: str, layout: str) -> Path:
    """``$MEDVLP_DATA/<sub>``: the default root of a dataset; without ``MEDVLP_DATA`` a ``FileNotFoundError``
    names the expected ``layout`` (which says where to obtain the data)."""
    base = os.environ.get("MEDVLP_DATA")
    if not base:
        raise FileNotFoundError(f"no root given and MEDVLP_DATA is not set; expected {sub}/ under it, layout {layout}")
    return Path(base) / sub


def dataset_root(root: str | os.PathLike | None, sub: str, layout: str, name: str) -> Path:
    """``root`` (or :func:`default_root`) as a ``Path`` that must be an existing folder; otherwise a
    ``FileNotFoundError`` names the dataset (``name``), the folder and the expected ``layout``."""
    path = Path(root) if root is not None else default_root(sub, layout)
    if not path.is_dir():
        raise FileNotFoundError(f"{name} root {path} does not exist or is not a folder; expected layout {layout}")
    return path


def read_pil(path: str | os.PathLike, mode: str | None = None) -> Image.Image:
    """Open and fully decode an image with PIL (converted to ``mode`` if given).

    Raises ``FileNotFoundError`` if the file is missing and :class:`CorruptImageError` naming it if it cannot be
    decoded (PIL raises ``OSError: image file is truncated`` for a cut JPEG, without the path)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if mode is not None else im.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise CorruptImageError(f"could not read image file {path} ({type(err).__name__}: {err}); the file is corrupt "
                                f"(e.g. truncated) or not an image: replace or delete it") from err


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as err:
        raise ImportError(f"reading DICOM {path} needs pydicom (pip install pydicom), or convert the images to "
                          f"PNG with the same file stem") from err
    try:
        ds = pydicom.dcmread(str(path))
        a = np.asarray(ds.pixel_array, dtype=np.float32)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 -- pydicom raises many types for damaged files
        raise CorruptImageError(f"could not read DICOM {path} ({type(err).__name__}: {err}); the file is corrupt "
                                f"or not a DICOM image: replace or delete it") from err
    if a.ndim != 2:
        raise CorruptImageError(f"DICOM {path} holds pixel data of shape {a.shape}; expected one 2-D radiograph")
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        a = a.max() - a
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def load_image_gray(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read a PNG / JPEG (PIL) or DICOM (pydicom) radiograph as float32 [H, W] in [0, 1].

    DICOM: ``MONOCHROME1`` is inverted so bone is bright; values are min-max scaled. With ``size``, the image is
    resized (bilinear) to ``size x size`` after padding the short side to a square (GLoRIA / MGCA practice).
    A file that cannot be decoded raises :class:`CorruptImageError` naming it (the module's policy).
    """
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):  # RSNA/SIIM name DICOMs *.dcm, VinDr *.dicom
        a = _read_dicom(path)
    else:
        with read_pil(path) as im:
            im = im.convert("I;16") if im.mode in ("I;16", "I;16B", "I") else im.convert("L")
            a = np.asarray(im, dtype=np.float32)
            a = a / (65535.0 if im.mode.startswith("I") else 255.0)
    if size is not None:
        h, w = a.shape
        s = max(h, w)
        pad = np.zeros((s, s), np.float32)
        pad[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = a
        t = torch.from_numpy(pad)[None, None]
        a = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return a


def scan_images(folder: Path, exts: Sequence[str] = IMAGE_EXTS, recursive: bool = False) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` (``recursive``: any depth, in sorted path order) whose suffix
    is in ``exts``; the first file of a stem wins."""
    files = sorted(folder.rglob("*")) if recursive else folder.iterdir()
    out: dict[str, Path] = {}
    for f in files:
        if f.suffix.lower() in exts and f.is_file():
            out.setdefault(f.stem, f)
    return out


def check_index(i, n: int, name: str) -> int:
    """``dataset[i]``: an integer in ``[-n, n)`` (negative counts from the end) as an index in ``[0, n)``;
    ``IndexError`` naming the dataset ``name`` otherwise (``TypeError`` for a non-integer such as ``1.5``)."""
    if isinstance(i, (bool, np.bool_)):
        raise TypeError(f"{name} index must be an integer, got {type(i).__name__}")
    try:
        i = int(operator.index(i))  # int, NumPy / 0-d torch integers
    except TypeError:
        raise TypeError(f"{name} index must be an integer, got {type(i).__name__}") from None
    if not -n <= i < n:
        raise IndexError(f"index {i} out of range for {name} of length {n}")
    return int(i) % n


def check_images(files: Sequence[Path], name: str, read=load_image_gray) -> None:
    """Decode every file with ``read`` (nothing kept); one :class:`CorruptImageError` listing every file that
    cannot be read (the first five, and the count). ``FileNotFoundError`` if a file has vanished."""
    bad = []
    for f in files:
        try:
            read(f)
        except CorruptImageError as err:
            bad.append(err)
    if bad:
        raise CorruptImageError(f"{name}: {len(bad)} of {len(files)} images cannot be read (policy: stop; replace "
                                f"or delete them): " + "; ".join(map(str, bad[:5]))
                                + (f"; ... and {len(bad) - 5} more" if len(bad) > 5 else ""))


class RealImageDataset(Dataset):
    """Base of the real image datasets: ``len``, :func:`check_index`, image reading (optionally from the in-memory
    :attr:`images` cache), the corrupt-image check, seeded subsets and the skip-and-count log.

    Subclasses set ``size``, ``files``, ``uids`` and every per-item attribute named in ``ITEM_FIELDS``
    (lists or arrays indexed by item), then call :meth:`_finish`.
    """

    ITEM_FIELDS: tuple[str, ...] = ("uids", "files")
    size: int
    files: list[Path]
    uids: list[str]
    skipped: int = 0
    _images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.uids)

    def _index(self, i) -> int:
        return check_index(i, len(self), type(self).__name__)

    def _image(self, i: int) -> np.ndarray:
        if self._images is not None:
            return self._images[i].astype(np.float32) / 255.0
        return load_image_gray(self.files[i], self.size)

    @property
    def images(self) -> np.ndarray:
        """All images as uint8 [N, size, size] (read once, with a progress bar; mind the memory for big N)."""
        if self._images is None:
            from tqdm.auto import tqdm

            out = np.empty((len(self), self.size, self.size), np.uint8)
            for i in tqdm(range(len(self)), desc=f"reading {type(self).__name__}", leave=False,
                          disable=len(self) < 256):
                out[i] = np.round(load_image_gray(self.files[i], self.size) * 255).astype(np.uint8)
            self._images = out
        return self._images

    def check_images(self) -> None:
        """Decode every image once (:func:`check_images`)."""
        check_images(self.files, type(self).__name__)

    def _keep(self, rows: Iterable[int]) -> None:
        """Keep the items ``rows`` (in that order) of every attribute in ``ITEM_FIELDS``."""
        rows = list(rows)
        for attr in self.ITEM_FIELDS:
            v = getattr(self, attr)
            setattr(self, attr, np.ascontiguousarray(v[rows]) if isinstance(v, np.ndarray) else [v[k] for k in rows])

    def _subset(self, n: int | None, seed: int) -> None:
        """A seeded subset of ``n`` items (``None`` or ``n >= len``: all), in the original order."""
        seed = check_seed(seed)
        if n is None or n >= len(self.uids):
            return
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int or None, got {n!r}")
        self._keep(np.sort(np.random.default_rng(seed).permutation(len(self.uids))[:n]))

    def _finish(self, *, listed: int, where, empty: str, n: int | None = None, seed: int = 0,
                check: bool = False) -> None:
        """Count and log the ``listed - len`` items skipped (not on disk in ``where``), take the seeded subset,
        raise ``FileNotFoundError(empty)`` if nothing is left, and with ``check`` decode every image."""
        self.skipped = int(listed - len(self.uids))
        if self.skipped:
            log.info("%s: %d of %d listed images are not in %s (skipped)", type(self).__name__, self.skipped, listed,
                     where)
        self._subset(n, seed)
        if not self.uids:
            raise FileNotFoundError(empty)
        if check:
            self.check_images()


class RealCXRDataset(RealImageDataset):
    """A real paired dataset: items ``dict(image=FloatTensor[1, size, size] in [0, 1], text=str,
    labels=FloatTensor[L], index=int, uid=str)`` like :class:`medvlp_lib.data.CXRDataset`."""

    ITEM_FIELDS = ("uids", "files", "texts", "labels")
    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __getitem__(self, i: int) -> dict:
        i = self._index(i)
        return {"image": torch.from_numpy(self._image(i))[None], "text": self.texts[i],
                "labels": torch.from_numpy(self.labels[i].copy()), "index": i, "uid": self.uids[i]}
