"""COVIDx CXR (Wang et al., COVID-Net): chest radiographs with COVID-19 / pneumonia / normal labels.

On-disk layout (the Kaggle / GitHub release)::

    <root>/                          (default: $MEDVLP_DATA/covidx)
      train.txt  test.txt  [val.txt] one image per line: ``patient_id filename label source``
                                     (whitespace-separated; e.g. ``3 SARS-10.1148...-e1.png COVID-19 cohen``)
      train/<filename>  test/<filename>  [val/<filename>]

Labels: releases v1-v7 use three classes ``normal`` / ``pneumonia`` / ``COVID-19`` (the Adaptor paper's
3-class accuracy task, :data:`COVIDX_CLASSES`); COVIDx CXR-3 and later use ``positive`` / ``negative``
(:data:`COVIDX_BINARY`). The label set is detected from the split file (matching is case-insensitive);
mixing the two vocabularies raises ``ValueError``. Lines whose image file is missing are skipped and
counted (``dataset.skipped``, logged). Malformed lines (fewer than 4 fields, unknown label) raise
``ValueError`` naming the file and line number. A corrupt image stops with an error naming it when read
(``check=True``: at construction); see :mod:`medvlp_lib.data.real.common`.

Items: ``dict(image=FloatTensor[1, size, size] in [0, 1], label=LongTensor[] (class index), index=int,
uid=str (filename), patient_id=str, source=str)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .common import RealImageDataset, dataset_root

__all__ = ["COVIDx", "COVIDX_CLASSES", "COVIDX_BINARY", "CovidxEntry", "read_covidx_split", "LAYOUT"]

COVIDX_CLASSES = ("normal", "pneumonia", "covid-19")
COVIDX_BINARY = ("negative", "positive")
SPLITS = ("train", "val", "test")
LAYOUT = ("<root>/{train,val,test}.txt (lines 'patient_id filename label source') and images "
          "<root>/{train,val,test}/<filename>; download: https://www.kaggle.com/datasets/andyczhao/covidx-cxr2")


@dataclass(frozen=True)
class CovidxEntry:
    patient_id: str
    filename: str
    label: str
    source: str


def read_covidx_split(path: str | os.PathLike) -> tuple[list[CovidxEntry], tuple[str, ...]]:
    """Parse a COVIDx split file; returns the entries (labels lower-cased) and the detected class tuple."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"COVIDx split file {path} not found; expected layout {LAYOUT}")
    entries = []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 4:
            raise ValueError(f"{path}:{ln}: expected 'patient_id filename label source', got {line!r}")
        pid, fname, label = parts[0], parts[1], parts[2].lower()
        source = " ".join(parts[3:])
        entries.append(CovidxEntry(pid, fname, label, source))
    labels = {e.label for e in entries}
    if labels <= set(COVIDX_BINARY):
        classes = COVIDX_BINARY
    elif labels <= set(COVIDX_CLASSES):
        classes = COVIDX_CLASSES
    else:
        bad = sorted(labels - set(COVIDX_CLASSES) - set(COVIDX_BINARY))
        mixed = not bad
        raise ValueError(f"{path}: labels must be all in {COVIDX_CLASSES} or all in {COVIDX_BINARY}; "
                         + ("the file mixes both vocabularies" if mixed else f"unknown label(s) {bad}"))
    return entries, classes


class COVIDx(RealImageDataset):
    """COVIDx images of one split (see the module docstring). ``check``: decode every image at construction.
    Attributes: ``classes``, ``labels`` (int64 [N]), ``uids`` (filenames), ``patient_ids``, ``sources``,
    ``files``, ``skipped``."""

    ITEM_FIELDS = ("uids", "files", "patient_ids", "sources", "labels")

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", size: int = 224,
                 check: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = dataset_root(root, "covidx", LAYOUT, "COVIDx")
        entries, self.classes = read_covidx_split(root / f"{split}.txt")
        image_dir = root / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COVIDx image folder {image_dir} not found; expected layout {LAYOUT}")
        keep = [e for e in entries if (image_dir / e.filename).is_file()]
        self.split, self.size = split, int(size)
        self.uids = [e.filename for e in keep]
        self.patient_ids = [e.patient_id for e in keep]
        self.sources = [e.source for e in keep]
        self.files = [image_dir / e.filename for e in keep]
        self.labels = np.asarray([self.classes.index(e.label) for e in keep], np.int64)
        self._finish(listed=len(entries), where=image_dir, check=check,
                     empty=f"none of the {len(entries)} images listed in {root / (split + '.txt')} is in "
                           f"{image_dir}; expected layout {LAYOUT}")

    def __getitem__(self, i: int) -> dict:
        i = self._index(i)
        return {"image": torch.from_numpy(self._image(i))[None],
                "label": torch.tensor(int(self.labels[i])), "index": i, "uid": self.uids[i],
                "patient_id": self.patient_ids[i], "source": self.sources[i]}
