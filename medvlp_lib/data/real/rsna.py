"""RSNA Pneumonia Detection Challenge (Kaggle 2018) -- binary pneumonia classification with boxes.

On-disk layout (the Kaggle download)::

    <root>/                                   (default: $MEDVLP_DATA/rsna)
      stage_2_train_labels.csv                patientId,x,y,width,height,Target  (one row per box;
                                              Target 0 rows have empty x,y,width,height)
      stage_2_train_images/<patientId>.dcm    1024 x 1024 DICOM (needs pydicom)
        -- or --
      stage_2_train_images/<patientId>.png    the same images converted to PNG (any size; boxes are
                                              rescaled from the 1024 grid)

The labels CSV also ships inside torchxrayvision (``torchxrayvision/data/kaggle_stage_2_train_labels.csv.zip``,
what ``xrv.datasets.RSNA_Pneumonia_Dataset`` reads); when ``<root>/stage_2_train_labels.csv`` is missing that
copy is used (``csv_path`` overrides both). Patients listed in the CSV whose image is not on disk are
skipped and counted (``dataset.skipped``, logged), so a partial download works; a corrupt image stops with an
error naming it (``check=True``: at construction). The policies: :mod:`medvlp_lib.data.real.common`.

Items: ``dict(image=FloatTensor[1, size, size] in [0, 1], label=FloatTensor[1] (Target), boxes=FloatTensor[K, 4]
(x, y, w, h on the 1024 grid), mask=BoolTensor[size, size] (union of boxes), index=int, uid=str)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .common import RealImageDataset, dataset_root, load_image_gray, scan_images, xrv_data_file

__all__ = ["RSNAPneumonia", "read_rsna_labels", "load_image_gray", "xrv_data_file", "LAYOUT", "GRID"]

GRID = 1024
LABELS_FILE = "stage_2_train_labels.csv"
IMAGE_DIR = "stage_2_train_images"
LAYOUT = (f"<root>/{LABELS_FILE} (patientId,x,y,width,height,Target) and <root>/{IMAGE_DIR}/<patientId>.dcm "
          f"or .png; download: https://www.kaggle.com/c/rsna-pneumonia-detection-challenge")
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def read_rsna_labels(csv_path: str | os.PathLike | None = None):
    """Parse the RSNA labels CSV into ``{patientId: (target:int, boxes float32 [K, 4])}`` (CSV order kept).

    A patient's target is the max over its rows; boxes come from rows with Target 1. Raises ``ValueError``
    naming the file when the columns differ from ``patientId,x,y,width,height,Target``.
    """
    import pandas as pd

    path = Path(csv_path) if csv_path is not None else xrv_data_file("kaggle_stage_2_train_labels.csv.zip")
    if not path.exists():
        raise FileNotFoundError(f"RSNA labels CSV {path} not found; expected layout {LAYOUT}")
    df = pd.read_csv(path)
    if tuple(df.columns) != COLUMNS:
        raise ValueError(f"{path}: expected columns {','.join(COLUMNS)}, got {','.join(map(str, df.columns))}")
    df["patientId"] = df["patientId"].astype(str)
    target = df.groupby("patientId", sort=False)["Target"].max().astype(int).to_dict()
    pos = df[df["Target"] == 1]
    coords = pos[["x", "y", "width", "height"]]
    if coords.isna().any().any():
        pid = pos["patientId"][coords.isna().any(axis=1)].iloc[0]
        raise ValueError(f"{path}: patient {pid} has Target=1 rows with missing box coordinates")
    boxes: dict[str, list] = {}
    for pid, b in zip(pos["patientId"].to_numpy(), coords.to_numpy(np.float32)):
        boxes.setdefault(pid, []).append(b)
    out: dict[str, tuple[int, np.ndarray]] = {}
    for pid in pd.unique(df["patientId"]):
        out[pid] = (int(target[pid]), np.asarray(boxes.get(pid, []), np.float32).reshape(-1, 4))
    return out


def boxes_to_mask(boxes: np.ndarray, size: int, grid: int = GRID) -> np.ndarray:
    """Union of ``(x, y, w, h)`` boxes on the ``grid`` as a bool mask [size, size]."""
    m = np.zeros((size, size), bool)
    s = size / grid
    for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
        x0, y0 = int(np.floor(x * s)), int(np.floor(y * s))
        x1, y1 = int(np.ceil((x + w) * s)), int(np.ceil((y + h) * s))
        m[max(0, y0):min(size, y1), max(0, x0):min(size, x1)] = True
    return m


class RSNAPneumonia(RealImageDataset):
    """RSNA pneumonia images with Target labels and boxes (see the module docstring for the layout).

    ``size``: output side (images padded to square and resized). ``csv_path``: labels CSV (default
    ``<root>/stage_2_train_labels.csv``, else torchxrayvision's copy). ``image_dir``: default
    ``<root>/stage_2_train_images``. ``check``: decode every image at construction. Attributes: ``uids``,
    ``labels`` (float32 [N]), ``boxes`` (list of [K, 4]), ``files``, ``skipped`` (CSV patients without an image).
    """

    ITEM_FIELDS = ("uids", "files", "labels", "boxes")

    def __init__(self, root: str | os.PathLike | None = None, size: int = 224, csv_path=None, image_dir=None,
                 check: bool = False):
        root = dataset_root(root, "rsna", LAYOUT, "RSNA Pneumonia")
        image_dir = Path(image_dir) if image_dir is not None else root / IMAGE_DIR
        if not image_dir.is_dir():
            raise FileNotFoundError(f"RSNA image folder {image_dir} not found; expected layout {LAYOUT}")
        if csv_path is None and (root / LABELS_FILE).exists():
            csv_path = root / LABELS_FILE
        table = read_rsna_labels(csv_path)
        on_disk = scan_images(image_dir)
        self.size = int(size)
        self.uids = [pid for pid in table if pid in on_disk]
        self.files = [on_disk[pid] for pid in self.uids]
        self.labels = np.asarray([table[pid][0] for pid in self.uids], np.float32)
        self.boxes = [table[pid][1] for pid in self.uids]
        self.unlabelled_images = len(set(on_disk) - set(table))
        self._finish(listed=len(table), where=image_dir, check=check,
                     empty=f"no RSNA image in {image_dir} matches a patientId of the labels CSV; expected layout "
                           f"{LAYOUT}")

    def __getitem__(self, i: int) -> dict:
        i = self._index(i)
        return {"image": torch.from_numpy(self._image(i))[None], "label": torch.tensor([self.labels[i]]),
                "boxes": torch.from_numpy(self.boxes[i]),
                "mask": torch.from_numpy(boxes_to_mask(self.boxes[i], self.size)),
                "index": i, "uid": self.uids[i]}
