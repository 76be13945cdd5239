"""Helpers shared by the real-dataset loaders: the data root, radiograph reading, torchxrayvision's label files.

* :func:`default_root` -- ``$MEDVLP_DATA/<dataset>``, the one root every loader defaults to;
* :func:`load_image_gray` -- a PNG / JPEG / DICOM radiograph as float32 ``[H, W]`` in [0, 1];
* :func:`xrv_data_file` -- a label file shipped inside the ``torchxrayvision`` wheel.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["default_root", "load_image_gray", "xrv_data_file"]


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
    names the expected ``layout``."""
    base = os.environ.get("MEDVLP_DATA")
    if not base:
        raise FileNotFoundError(f"no root given and MEDVLP_DATA is not set; expected layout {layout}")
    return Path(base) / sub


def load_image_gray(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read a PNG / JPEG (PIL) or DICOM (pydicom) radiograph as float32 [H, W] in [0, 1].

    DICOM: ``MONOCHROME1`` is inverted so bone is bright; values are min-max scaled. With ``size``, the image is
    resized (bilinear) to ``size x size`` after padding the short side to a square (GLoRIA / MGCA practice).
    """
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):  # RSNA/SIIM name DICOMs *.dcm, VinDr *.dicom
        try:
            import pydicom
        except ImportError as err:
            raise ImportError(f"reading DICOM {path} needs pydicom (pip install pydicom), or convert the images to "
                              f"PNG with the same file stem") from err
        ds = pydicom.dcmread(str(path))
        a = ds.pixel_array.astype(np.float32)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            a = a.max() - a
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    else:
        try:
            with Image.open(path) as im:
                im = im.convert("I;16") if im.mode in ("I;16", "I;16B", "I") else im.convert("L")
                a = np.asarray(im, dtype=np.float32)
                a = a / (65535.0 if im.mode.startswith("I") else 255.0)
        except UnidentifiedImageError as err:
            raise ValueError(f"{path} is not a readable image file") from err
    if size is not None:
        h, w = a.shape
        s = max(h, w)
        pad = np.zeros((s, s), np.float32)
        pad[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = a
        t = torch.from_numpy(pad)[None, None]
        a = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return a
