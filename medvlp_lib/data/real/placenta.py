"""PlacentaCLIP / VLCD placenta photographs with pathology reports (private data; on-disk loader).

The VLCD paper (arXiv 2506.02229) and its PlacentaCLIP predecessors (Pan et al.) use fetal-side placenta
photographs paired with pathology-report sentences; the data are not public. Readers who hold them can
point this loader at a folder in the PlacentaCLIP layout::

    <root>/                                  (default: $MEDVLP_DATA/placenta)
      fetal_side/<studyid>.jpg               fetal-side photograph (RGB, e.g. 512 x 384)
      fetal_seg/<studyid>.png                optional segmentation mask (non-zero = placenta disc)
      annotation_diagnosis_new.json          {"<studyid>": ["report sentence", ...] | "report text", ...}
      placenta_test_labels.csv               studyid,meconium,fir,mir,chorioamnionitis,insertion

Splits: ``"pretrain"`` = photographs with a report whose study is *not* in the labels CSV (the image-text
pairs VLCD trains on); ``"test"`` = photographs whose study is in the labels CSV (the five
linear-probe tasks); ``"all"`` = every photograph with a report or labels. Photographs with neither, and
reports / labels without a photograph, are skipped and counted in ``dataset.skipped`` (and logged). A corrupt
photograph or mask stops with an error naming the file when read (``check=True``: at construction), the
policy of every loader (:mod:`medvlp_lib.data.real.common`).

Items: ``dict(image=FloatTensor[C, H, W] in [0, 1], text=str, labels=FloatTensor[5] (NaN = unknown),
index=int, uid=str)`` plus ``mask=BoolTensor[H, W]`` with ``with_mask=True``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .common import check_images, check_index, read_pil

__all__ = ["PLACENTA_LABELS", "PlacentaDataset", "LAYOUT", "read_reports", "read_labels", "default_root"]

log = logging.getLogger(__name__)

PLACENTA_LABELS: tuple[str, ...] = ("meconium", "fir", "mir", "chorioamnionitis", "insertion")
"""The five placenta tasks in the labels CSV (fetal / maternal inflammatory response, chorioamnionitis,
meconium, abnormal cord insertion), in column order."""

IMAGE_DIR, MASK_DIR = "fetal_side", "fetal_seg"
REPORTS_FILE, LABELS_FILE = "annotation_diagnosis_new.json", "placenta_test_labels.csv"
LAYOUT = (f"<root>/{IMAGE_DIR}/<studyid>.jpg, <root>/{MASK_DIR}/<studyid>.png (optional), "
          f"<root>/{REPORTS_FILE} ({{studyid: [report sentences]}}), "
          f"<root>/{LABELS_FILE} (columns studyid,{','.join(PLACENTA_LABELS)}); the data are private: ask the "
          f"PlacentaCLIP / VLCD authors (Pan et al.; arXiv 2506.02229)")
_IMAGE_EXTS = (".jpg", ".jpeg")


def default_root() -> Path:
    """``$MEDVLP_DATA/placenta``; raises ``FileNotFoundError`` if ``MEDVLP_DATA`` is not set."""
    base = os.environ.get("MEDVLP_DATA")
    if not base:
        raise FileNotFoundError(f"no placenta root given and MEDVLP_DATA is not set; expected layout {LAYOUT}")
    return Path(base) / "placenta"


def read_reports(path: str | os.PathLike) -> dict[str, str]:
    """Read ``annotation_diagnosis_new.json`` into ``studyid -> report text`` (sentences joined by spaces)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report file {str(path)!r} not found; expected {REPORTS_FILE} mapping study id -> "
                                f"list of report sentences (layout: {LAYOUT})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"report file {str(path)!r} is not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"report file {str(path)!r} must hold a JSON object {{studyid: [sentences]}}, got "
                         f"{type(raw).__name__}")
    out: dict[str, str] = {}
    for key, val in raw.items():
        if isinstance(val, str):
            sentences = [val]
        elif isinstance(val, list) and all(isinstance(s, str) for s in val):
            sentences = val
        else:
            raise ValueError(f"report file {str(path)!r}: entry {key!r} must be a string or a list of strings, got "
                             f"{type(val).__name__}")
        text = " ".join(s.strip() for s in sentences if s.strip())
        out[str(key).strip()] = text
    return out


def read_labels(path: str | os.PathLike, label_names: Sequence[str] = PLACENTA_LABELS) -> dict[str, np.ndarray]:
    """Read ``placenta_test_labels.csv`` into ``studyid -> float32[len(label_names)]`` (blank = NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {str(path)!r} not found; expected {LABELS_FILE} with columns "
                                f"studyid,{','.join(label_names)} (layout: {LAYOUT})")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        need = ["studyid", *label_names]
        missing = [c for c in need if c not in header]
        if missing:
            raise ValueError(f"labels file {str(path)!r} is missing columns {missing}; expected columns {need}, "
                             f"found {header}")
        out: dict[str, np.ndarray] = {}
        for row_no, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            sid = row["studyid"]
            if not sid:
                raise ValueError(f"labels file {str(path)!r} line {row_no}: empty studyid")
            if sid in out:
                raise ValueError(f"labels file {str(path)!r} line {row_no}: duplicate studyid {sid!r}")
            vals = np.full(len(label_names), np.nan, dtype=np.float32)
            for j, name in enumerate(label_names):
                cell = row[name]
                if cell == "" or cell.lower() in ("nan", "na"):
                    continue
                try:
                    vals[j] = float(cell)
                except ValueError:
                    raise ValueError(f"labels file {str(path)!r} line {row_no}: column {name!r} must be numeric "
                                     f"(0/1 or blank), got {cell!r}") from None
                if not math.isfinite(vals[j]):
                    raise ValueError(f"labels file {str(path)!r} line {row_no}: column {name!r} is not finite")
            out[sid] = vals
    return out


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return hw


class PlacentaDataset(Dataset):
    """Fetal-side placenta photographs with report text and the five test labels (see the module docstring).

    ``root``: the PlacentaCLIP folder (default ``$MEDVLP_DATA/placenta``); ``split``: ``"pretrain"`` |
    ``"test"`` | ``"all"``; ``size``: int or ``(H, W)`` output size (bilinear, antialiased; the paper uses
    384 x 512); ``grayscale``: one channel instead of RGB; ``with_mask``: also return ``fetal_seg`` masks
    (every mask file must exist); ``check``: decode every image at construction (fail early on corrupt
    files; otherwise a corrupt image raises ``ValueError`` naming the file when it is read).
    The labels CSV is required for ``split="test"`` and read if present otherwise.
    Attributes: ``uids``, ``texts``, ``labels`` (float32 [N, 5], NaN = unknown), ``files``, ``label_names``,
    ``skipped`` (reason -> count).
    """

    SPLITS = ("pretrain", "test", "all")

    def __init__(self, root: str | os.PathLike | None = None, split: str = "all", size: int | Sequence[int] = 224,
                 grayscale: bool = False, with_mask: bool = False, check: bool = False):
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        root = default_root() if root is None else Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"placenta root {str(root)!r} does not exist; expected layout {LAYOUT}")
        img_dir = root / IMAGE_DIR
        if not img_dir.is_dir():
            raise FileNotFoundError(f"placenta image folder {str(img_dir)!r} not found; expected layout {LAYOUT}")
        self.root, self.split, self.size = root, split, _size_hw(size)
        self.grayscale, self.with_mask = bool(grayscale), bool(with_mask)
        self.label_names = PLACENTA_LABELS

        images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.is_file() and p.suffix.lower() in _IMAGE_EXTS}
        if not images:
            raise FileNotFoundError(f"no .jpg photographs in {str(img_dir)!r}; expected layout {LAYOUT}")
        reports = read_reports(root / REPORTS_FILE)
        labels_path = root / LABELS_FILE
        if labels_path.is_file() or split == "test":
            labels = read_labels(labels_path)
        else:
            labels = {}
            log.info("PlacentaDataset: %s not found; labels are NaN", labels_path)

        skipped = {"no_report_or_label": 0, "report_without_image": 0, "label_without_image": 0,
                   "labelled_study_in_pretrain": 0, "unlabelled_study_in_test": 0}
        keep: list[str] = []
        for sid in images:
            has_r, has_l = sid in reports, sid in labels
            if split == "pretrain":
                if has_l:
                    skipped["labelled_study_in_pretrain"] += 1
                    continue
                if not has_r:
                    skipped["no_report_or_label"] += 1
                    continue
            elif split == "test":
                if not has_l:
                    skipped["unlabelled_study_in_test"] += 1
                    continue
            elif not (has_r or has_l):
                skipped["no_report_or_label"] += 1
                continue
            keep.append(sid)
        skipped["report_without_image"] = sum(1 for sid in reports if sid not in images)
        skipped["label_without_image"] = sum(1 for sid in labels if sid not in images)
        self.skipped = {k: v for k, v in skipped.items() if v}
        if self.skipped:
            log.warning("PlacentaDataset(split=%r): skipped %s", split, self.skipped)
        if not keep:
            raise ValueError(f"placenta split {split!r} under {str(root)!r} is empty (skipped: {self.skipped}); "
                             f"check that photograph names match the study ids in {REPORTS_FILE} / {LABELS_FILE}")

        self.uids: list[str] = keep
        self.files: list[Path] = [images[s] for s in keep]
        self.texts: list[str] = [reports.get(s, "") for s in keep]
        nan = np.full(len(PLACENTA_LABELS), np.nan, dtype=np.float32)
        self.labels = np.stack([labels.get(s, nan) for s in keep]).astype(np.float32)
        self.mask_files: list[Path] | None = None
        if with_mask:
            mask_dir = root / MASK_DIR
            self.mask_files = [mask_dir / f"{s}.png" for s in keep]
            missing = [str(p.name) for p in self.mask_files if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"with_mask=True but {len(missing)} mask file(s) are missing in "
                                        f"{str(mask_dir)!r}, e.g. {missing[:3]}; expected {MASK_DIR}/<studyid>.png")
        if check:
            check_images(self.files + (self.mask_files or []), "PlacentaDataset", read_pil)

    def __len__(self) -> int:
        return len(self.uids)

    def _read(self, path: Path, mode: str) -> Image.Image:
        return read_pil(path, mode)

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self), "PlacentaDataset")
        h, w = self.size
        img = self._read(self.files[index], "L" if self.grayscale else "RGB")
        img = img.resize((w, h), resample=Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / 255.0
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        item = {"image": torch.from_numpy(np.ascontiguousarray(x)), "text": self.texts[index],
                "labels": torch.from_numpy(self.labels[index].copy()), "index": index, "uid": self.uids[index]}
        if self.mask_files is not None:
            m = self._read(self.mask_files[index], "L").resize((w, h), resample=Image.Resampling.NEAREST)
            item["mask"] = torch.from_numpy(np.asarray(m) > 0)
        return item

    def __repr__(self) -> str:
        return (f"PlacentaDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, size={self.size}, "
                f"skipped={self.skipped})")
