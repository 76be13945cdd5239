"""MIMIC-CXR-JPG 2.0.0 (Johnson et al., 2019): frontal chest radiographs paired with report sections.

On-disk layout (PhysioNet ``mimic-cxr-jpg/2.0.0`` plus the sectioned reports)::

    <root>/                                        (default: $MEDVLP_DATA/mimic-cxr-jpg)
      mimic-cxr-2.0.0-metadata.csv[.gz]            dicom_id,subject_id,study_id,...,ViewPosition,...
      mimic-cxr-2.0.0-split.csv[.gz]               dicom_id,study_id,subject_id,split  (train/validate/test)
      mimic-cxr-2.0.0-chexpert.csv[.gz]            subject_id,study_id,<14 CheXpert labels> (1, 0, -1, blank)
      mimic_cxr_sectioned.csv[.gz]                 study,impression,findings,last_paragraph,comparison
      files/p10/p10000032/s50414267/<dicom_id>.jpg images: files/p<first 2 digits of subject>/p<subject>/
                                                   s<study>/<dicom_id>.jpg

``mimic_cxr_sectioned.csv`` is written by ``create_section_files.py`` of the MIMIC-CXR code repository
(https://github.com/MIT-LCP/mimic-cxr, ``txt/``) from ``mimic-cxr-reports.zip``; its ``study`` column holds
``s50414267`` (a bare ``50414267`` is accepted too). Download: https://physionet.org/content/mimic-cxr-jpg/2.0.0/
(credentialed access).

What is kept: frontal views (``ViewPosition`` in ``views``, default PA and AP), the official split
(``split="train" | "validate" | "test"``; ``"val"`` is an alias), images whose study has a non-empty report text
(``text="findings+impression"`` by default: the findings then the impression, as the embedded benchmark does;
or ``"impression"`` / ``"findings"``); images listed in the CSVs but not on disk are skipped and counted
(``dataset.skipped``), so a partial download works.

Labels (CheXpert labeler on the report, study level): ``labels="chexpert"`` gives the 14 CheXpert columns;
``labels="library"`` (default) maps them onto the book's label names (:data:`LIBRARY_MAP`) so the shared
zero-shot prompts and :func:`medvlp_lib.pipeline.evaluate_dual_encoder` apply. Uncertain (-1) follows
``uncertain="zero"`` (U-Zeros, default) or ``"one"`` (U-Ones) (Irvin et al., 2019); blank = 0.

Items match :class:`medvlp_lib.data.CXRDataset`: ``dict(image=FloatTensor[1, size, size] in [0, 1], text=str,
labels=FloatTensor[L], index=int, uid=str (dicom_id))``; attributes ``texts``, ``labels`` (float32 [N, L]),
``label_names``, ``uids``, ``files``, and ``images`` (uint8 [N, size, size], read on first access with a
progress bar -- for subsets; ``n=`` takes a seeded subset).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import RealCXRDataset, dataset_root, load_image_gray

__all__ = ["MIMICCXR", "RealCXRDataset", "load_image", "read_mimic_tables", "mimic_image_path", "CHEXPERT_LABELS",
           "LIBRARY_MAP", "LAYOUT", "find_table"]

CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices")

LIBRARY_MAP: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "pleural_effusion": ("Pleural Effusion",),
    "opacity": ("Lung Opacity", "Consolidation", "Pneumonia"),
    "atelectasis": ("Atelectasis",),
    "nodule": ("Lung Lesion",),
    "edema": ("Edema",),
    "pneumothorax": ("Pneumothorax",),
    "device": ("Support Devices",),
    "normal": ("No Finding",),
}
"""Book label -> CheXpert columns (positive if any is). ``emphysema`` has no CheXpert column and is absent."""

METADATA = "mimic-cxr-2.0.0-metadata.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
SECTIONS = "mimic_cxr_sectioned.csv"
LAYOUT = (f"<root>/{{{METADATA},{SPLIT},{CHEXPERT}}}[.gz], <root>/{SECTIONS}[.gz] (study,impression,findings,...) "
          f"and images <root>/files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg; "
          f"download: https://physionet.org/content/mimic-cxr-jpg/2.0.0/")
SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}
TEXT_MODES = ("findings+impression", "impression", "findings")


def find_table(root: Path, name: str, layout: str) -> Path:
    """``root/name`` or ``root/name.gz``; a clear error naming both and the expected layout otherwise."""
    for cand in (root / name, root / f"{name}.gz"):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"{root / name} (or .gz) not found; expected layout {layout}")


def mimic_image_path(root: Path, subject_id, study_id, dicom_id: str) -> Path:
    s = str(int(subject_id))
    return Path(root) / "files" / f"p{s[:2]}" / f"p{s}" / f"s{int(study_id)}" / f"{dicom_id}.jpg"


def _require(df, path: Path, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; got {list(df.columns)}")


def read_mimic_tables(root: str | os.PathLike):
    """The four CSVs of ``root`` as pandas DataFrames ``(metadata, split, chexpert, sections)``, validated."""
    import pandas as pd

    root = Path(root)
    paths = [find_table(root, n, LAYOUT) for n in (METADATA, SPLIT, CHEXPERT, SECTIONS)]
    meta, split, chex = (pd.read_csv(p, dtype={"dicom_id": str}) for p in paths[:3])
    sect = pd.read_csv(paths[3], dtype=str, keep_default_na=False)
    _require(meta, paths[0], ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    _require(split, paths[1], ("dicom_id", "study_id", "subject_id", "split"))
    _require(chex, paths[2], ("subject_id", "study_id", *CHEXPERT_LABELS))
    _require(sect, paths[3], ("study", "impression", "findings"))
    bad = sorted(set(split["split"]) - {"train", "validate", "test"})
    if bad:
        raise ValueError(f"{paths[1]}: unknown split values {bad}; expected train, validate, test")
    sect = sect.assign(study_id=sect["study"].str.strip().str.lstrip("s"))
    if not sect["study_id"].str.fullmatch(r"\d+").all():
        row = sect.loc[~sect["study_id"].str.fullmatch(r"\d+"), "study"].iloc[0]
        raise ValueError(f"{paths[3]}: column 'study' must hold study ids like s50414267, got {row!r}")
    sect["study_id"] = sect["study_id"].astype(np.int64)
    return meta, split, chex, sect


def _compose_text(findings: str, impression: str, mode: str) -> str:
    f, i = (findings or "").strip(), (impression or "").strip()
    if mode == "impression":
        return i
    if mode == "findings":
        return f
    return " ".join(t for t in (f, i) if t)


def load_image(path: Path, size: int) -> np.ndarray:
    """float32 [size, size] in [0, 1] from a PNG / JPEG / DICOM (``*.dcm`` or VinDr's ``*.dicom``) radiograph;
    see :func:`~medvlp_lib.data.real.common.load_image_gray` (DICOM needs pydicom; a clear ImportError says so)."""
    return load_image_gray(path, size)


class MIMICCXR(RealCXRDataset):
    """MIMIC-CXR-JPG frontal images with report text and CheXpert labels (layout in the module docstring).

    Parameters: ``root`` (default ``$MEDVLP_DATA/mimic-cxr-jpg``), ``split`` (official), ``size`` (output side;
    images padded to square then resized), ``views`` (``ViewPosition`` values kept), ``text``, ``labels``
    (``"library"`` or ``"chexpert"``), ``uncertain`` (``"zero"`` / ``"one"``), ``one_per_study`` (keep the
    first frontal image of each study), ``n`` / ``seed`` (a seeded subset), ``check`` (decode every image at
    construction; a corrupt one raises naming it, see :mod:`medvlp_lib.data.real.common`).
    """

    ITEM_FIELDS = ("uids", "files", "texts", "labels", "study_ids", "subject_ids", "views")

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", size: int = 224,
                 views: Sequence[str] = ("PA", "AP"), text: str = "findings+impression", labels: str = "library",
                 uncertain: str = "zero", one_per_study: bool = False, n: int | None = None, seed: int = 0,
                 check: bool = False):
        root = dataset_root(root, "mimic-cxr-jpg", LAYOUT, "MIMIC-CXR-JPG")
        split = SPLIT_ALIASES.get(split, split)
        if split not in ("train", "validate", "test"):
            raise ValueError(f"split must be train, validate (val) or test, got {split!r}")
        if text not in TEXT_MODES:
            raise ValueError(f"text must be one of {TEXT_MODES}, got {text!r}")
        if labels not in ("library", "chexpert"):
            raise ValueError(f"labels must be 'library' or 'chexpert', got {labels!r}")
        if uncertain not in ("zero", "one"):
            raise ValueError(f"uncertain must be 'zero' (U-Zeros) or 'one' (U-Ones), got {uncertain!r}")
        if not (root / "files").is_dir():
            raise FileNotFoundError(f"MIMIC-CXR image folder {root / 'files'} not found; expected layout {LAYOUT}")
        meta, split_df, chex, sect = read_mimic_tables(root)
        self.root, self.split, self.size = root, split, int(size)
        df = meta.merge(split_df[["dicom_id", "split"]], on="dicom_id", how="inner")
        df = df[(df["split"] == split) & df["ViewPosition"].isin(list(views))]
        df = df.merge(sect[["study_id", "findings", "impression"]], on="study_id", how="left")
        df["text"] = [_compose_text(f if isinstance(f, str) else "", i if isinstance(i, str) else "", text)
                      for f, i in zip(df["findings"], df["impression"])]
        self.no_text = int((df["text"] == "").sum())
        df = df[df["text"] != ""]
        df = df.merge(chex, on=["subject_id", "study_id"], how="left")
        self.no_labels = int(df[list(CHEXPERT_LABELS)].isna().all(axis=1).sum())  # studies without a CheXpert row
        df = df.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
        if one_per_study:
            df = df.drop_duplicates("study_id", keep="first")
        raw = df[list(CHEXPERT_LABELS)].to_numpy(np.float32)  # NaN = not mentioned
        raw = np.nan_to_num(raw, nan=0.0)
        raw[raw == -1] = 1.0 if uncertain == "one" else 0.0
        if labels == "chexpert":
            self.label_names = CHEXPERT_LABELS
            lab = raw
        else:
            self.label_names = tuple(LIBRARY_MAP)
            cols = {c: j for j, c in enumerate(CHEXPERT_LABELS)}
            lab = np.stack([raw[:, [cols[c] for c in LIBRARY_MAP[name]]].max(1) for name in self.label_names], 1)
        files = [mimic_image_path(root, s, t, d) for s, t, d in zip(df["subject_id"], df["study_id"], df["dicom_id"])]
        self.files, self.uids, self.texts = files, list(df["dicom_id"]), list(df["text"])
        self.study_ids = [int(s) for s in df["study_id"]]
        self.subject_ids = [int(s) for s in df["subject_id"]]
        self.views = list(df["ViewPosition"])
        self.labels = np.ascontiguousarray(lab, np.float32)
        self._keep(k for k, f in enumerate(files) if f.exists())
        self._finish(listed=len(files), where=root / "files", n=n, seed=seed, check=check,
                     empty=f"no {split} frontal image with a report was found under {root / 'files'}; expected "
                           f"layout {LAYOUT}")

    def __repr__(self) -> str:
        return f"MIMICCXR(split={self.split!r}, n={len(self)}, size={self.size}, skipped={self.skipped})"
