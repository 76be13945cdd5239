"""VinDr-CXR 1.0.0 (Nguyen et al., 2022): image-level labels of 28 findings/diagnoses from Vietnamese hospitals.

On-disk layout (PhysioNet ``vindr-cxr/1.0.0``)::

    <root>/                                    (default: $MEDVLP_DATA/vindr-cxr)
      annotations/image_labels_train.csv       image_id,rad_id,<label columns...>  (0/1; 3 radiologists per
                                               training image, one row each)
      annotations/image_labels_test.csv        image_id[,rad_id],<label columns...> (consensus of 5, one row)
      train/<image_id>.dicom   test/<image_id>.dicom      DICOM (needs pydicom)
        -- or --
      train/<image_id>.png     test/<image_id>.png        the same images converted to PNG (or .jpg)

The label columns are read from the header (everything but ``image_id`` / ``rad_id``): the release has 22 local
labels (e.g. ``Aortic enlargement``, ``Cardiomegaly``, ``Nodule/Mass``, ``Pleural effusion``) and 6 global ones
(``COPD``, ``Lung tumor``, ``Pneumonia``, ``Tuberculosis``, ``Other diseases``, ``No finding``). Several rows of
one image are combined with ``aggregate="any"`` (positive if any radiologist marked it; what torchxrayvision's
``VinDr_Dataset`` does with the box CSV, the default) or ``"majority"`` (more than half of the rows).

torchxrayvision 1.5.7's ``VinDr_Dataset`` reads the box-level Kaggle CSV (``image_id,class_name,...``; it ships
the 15,000-image training copy ``vinbigdata-train.csv.gz``) and needs pydicom; :func:`read_vindr_box_labels` reads
that format too (``csv_path=`` a box CSV), with the same "any radiologist" rule, and the test checks it against
torchxrayvision's labels.

Labels: ``labels="library"`` (default) maps onto the book's label names (:data:`LIBRARY_MAP`; positive if any
mapped column is), ``labels="vindr"`` keeps the CSV's columns. There are no reports: ``text`` is ``""``
(zero-shot evaluation uses the label prompts; :mod:`medvlp_lib.eval.real`). Images in the CSV but not on disk
are skipped and counted (``dataset.skipped``). Items: ``dict(image, text="", labels, index, uid=image_id)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .common import IMAGE_EXTS, RealCXRDataset, dataset_root, scan_images, xrv_data_file

__all__ = ["VinDrCXR", "read_vindr_image_labels", "read_vindr_box_labels", "LIBRARY_MAP", "LAYOUT"]

LAYOUT = ("<root>/annotations/image_labels_{train,test}.csv (image_id[,rad_id],<labels>) and images "
          "<root>/{train,test}/<image_id>.dicom (pydicom) or .png; download: "
          "https://physionet.org/content/vindr-cxr/1.0.0/")

LIBRARY_MAP: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",),
    "pleural_effusion": ("pleural effusion",),
    "opacity": ("lung opacity", "consolidation", "infiltration", "pneumonia"),
    "atelectasis": ("atelectasis",),
    "nodule": ("nodule/mass",),
    "emphysema": ("emphysema",),
    "edema": ("edema",),
    "pneumothorax": ("pneumothorax",),
    "normal": ("no finding",),
}
"""Book label -> VinDr columns (matched case-insensitively). ``device`` has no VinDr column."""


def read_vindr_image_labels(csv_path: str | os.PathLike, aggregate: str = "any"):
    """``(image_ids, label_names, labels float32 [N, L])`` from an ``image_labels_*.csv`` (CSV order of first
    appearance kept). Raises ``ValueError`` naming the file on a missing ``image_id`` column or non-0/1 values."""
    import pandas as pd

    path = Path(csv_path)
    if not path.exists():
        raise FileNotFoundError(f"VinDr label CSV {path} not found; expected layout {LAYOUT}")
    if aggregate not in ("any", "majority"):
        raise ValueError(f"aggregate must be 'any' or 'majority', got {aggregate!r}")
    df = pd.read_csv(path)
    df.columns = [str(c).strip() for c in df.columns]
    if "image_id" not in df.columns:
        raise ValueError(f"{path}: expected an 'image_id' column, got {list(df.columns)}")
    names = [c for c in df.columns if c not in ("image_id", "rad_id")]
    if not names:
        raise ValueError(f"{path}: no label columns besides image_id / rad_id")
    vals = df[names].apply(pd.to_numeric, errors="coerce")
    if vals.isna().any().any() or not vals.isin([0, 1]).all().all():
        raise ValueError(f"{path}: label columns must hold 0/1 values")
    vals["image_id"] = df["image_id"].astype(str)
    g = vals.groupby("image_id", sort=False)[names]
    lab = g.max() if aggregate == "any" else (g.mean() > 0.5).astype(np.float32)
    return list(lab.index), tuple(names), lab.to_numpy(np.float32)


def read_vindr_box_labels(csv_path: str | os.PathLike | None = None):
    """Image-level labels from the box CSV (``image_id,class_name,...``; default torchxrayvision's
    ``vinbigdata-train.csv.gz``): ``(image_ids, class_names, labels [N, C])``, positive if any row of the image
    has that ``class_name`` (every radiologist's boxes count)."""
    import pandas as pd

    path = Path(csv_path) if csv_path is not None else xrv_data_file("vinbigdata-train.csv.gz")
    df = pd.read_csv(path)
    if not {"image_id", "class_name"} <= set(df.columns):
        raise ValueError(f"{path}: expected columns image_id and class_name, got {list(df.columns)}")
    names = tuple(sorted(df["class_name"].unique()))
    ids = list(pd.unique(df["image_id"].astype(str)))
    pos = {n: j for j, n in enumerate(ids)}
    lab = np.zeros((len(ids), len(names)), np.float32)
    col = {n: j for j, n in enumerate(names)}
    lab[[pos[i] for i in df["image_id"].astype(str)], [col[c] for c in df["class_name"]]] = 1.0
    return ids, names, lab


class VinDrCXR(RealCXRDataset):
    """VinDr-CXR images with image-level labels (layout in the module docstring).

    ``split``: ``"train"`` or ``"test"``; ``csv_path`` overrides ``<root>/annotations/image_labels_<split>.csv``
    (a box CSV with ``class_name`` is detected and read with :func:`read_vindr_box_labels`); ``image_dir``
    overrides ``<root>/<split>``. ``n`` / ``seed``: a seeded subset. ``check``: decode every image at
    construction (a corrupt one raises naming it, see :mod:`medvlp_lib.data.real.common`).
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "test", size: int = 224,
                 labels: str = "library", aggregate: str = "any", csv_path=None, image_dir=None,
                 n: int | None = None, seed: int = 0, check: bool = False):
        import pandas as pd

        root = dataset_root(root, "vindr-cxr", LAYOUT, "VinDr-CXR")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if labels not in ("library", "vindr"):
            raise ValueError(f"labels must be 'library' or 'vindr', got {labels!r}")
        image_dir = Path(image_dir) if image_dir is not None else root / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"VinDr image folder {image_dir} not found; expected layout {LAYOUT}")
        csv_path = Path(csv_path) if csv_path is not None else root / "annotations" / f"image_labels_{split}.csv"
        if csv_path.exists() and "class_name" in pd.read_csv(csv_path, nrows=0).columns:
            ids, names, lab = read_vindr_box_labels(csv_path)
        else:
            ids, names, lab = read_vindr_image_labels(csv_path, aggregate)
        if labels == "library":
            lower = {n.lower(): j for j, n in enumerate(names)}
            keep = [b for b, cols in LIBRARY_MAP.items() if any(c in lower for c in cols)]
            lab = np.stack([lab[:, [lower[c] for c in LIBRARY_MAP[b] if c in lower]].max(1) for b in keep], 1)
            names = tuple(keep)
        on_disk = scan_images(image_dir, IMAGE_EXTS)
        rows = [k for k, i in enumerate(ids) if i in on_disk]
        self.root, self.split, self.size = root, split, int(size)
        self.label_names = names
        self.uids = [ids[k] for k in rows]
        self.files = [on_disk[i] for i in self.uids]
        self.texts = [""] * len(self.uids)
        self.labels = np.ascontiguousarray(lab[rows], np.float32)
        self._finish(listed=len(ids), where=image_dir, n=n, seed=seed, check=check,
                     empty=f"no VinDr image in {image_dir} matches an image_id of {csv_path}; expected layout {LAYOUT}")

    def __repr__(self) -> str:
        return f"VinDrCXR(split={self.split!r}, n={len(self)}, size={self.size}, skipped={self.skipped})"
