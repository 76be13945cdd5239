"""Tiny data trees in the datasets' exact official layouts, written deterministically: the real-data code paths run
(tests, ``--smoke``, a GPU check) without the data.

One writer per layout, each ``write_<dataset>(root, n=..., seed=..., size=...) -> Path`` (the path the dataset's
loader takes); the layout each writes is in its docstring and is the one its loader's module documents. With no
``records`` a writer draws ``n`` items from ``seed``; with ``records`` it writes exactly those (the tests' hand-made
trees), so the file formats live in one place. :func:`write_all` writes every tree under one ``MEDVLP_DATA``-style
root, in the folders the loaders default to.

The images are small (``size`` px, 64 by default) synthetic radiographs / photographs with a *weak, learnable*
signal: every finding of the book's label set draws its own faint structure at its own place (a brighter heart for
cardiomegaly, a haze at the bases for effusion, a blob inside an RSNA box, a darker region under a SIIM mask, a
tinted placenta for meconium, ...), on smooth noise; the CLAM cohorts come from the pathology simulator (patch
signal) with omics that carry the label. A model can learn from them; nothing here is real patient data.

Record fields (dicts; an unknown key is an error naming it): ``image`` is ``None`` (draw one from the record's
findings), a uint8 array (written as it is: [H, W] grey or [H, W, 3] RGB) or ``False`` (listed in the tables but
not on disk: the loaders skip and count it). The image format follows the file suffix (``.jpg`` / ``.JPEG``: JPEG
quality 95; ``.png``: PNG).
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from ...utils import check_seed
from ..pathology import Cohort, simulate_cohort
from .chexpert import CHEXPERT_5, META_COLUMNS, RELEASE
from .clam_features import write_clam
from .mimic_cxr import CHEXPERT_LABELS, LIBRARY_MAP, mimic_image_path
from .placenta import LABELS_FILE as PLACENTA_LABELS_FILE
from .placenta import PLACENTA_LABELS, REPORTS_FILE
from .siim import GRID, rle_encode
from .vindr import LIBRARY_MAP as VINDR_MAP

__all__ = ["write_mimic_cxr", "write_chexpert", "write_rsna", "write_siim", "write_vindr", "write_covidx",
           "write_placenta", "write_imagenet", "write_clam_cohort", "write_all", "synthetic_radiograph",
           "FINDINGS", "VINDR_LABELS", "MIMIC_METADATA_COLUMNS", "GENE_TABLE", "TREES"]

FINDINGS: tuple[str, ...] = ("cardiomegaly", "pleural_effusion", "opacity", "atelectasis", "nodule", "emphysema",
                             "edema", "pneumothorax", "device")
"""Book labels that draw a structure in :func:`synthetic_radiograph` (``normal`` draws none)."""

VINDR_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding")
"""The 22 local and 6 global labels of VinDr-CXR 1.0.0's ``image_labels_*.csv``."""

MIMIC_METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning")
"""The header of ``mimic-cxr-2.0.0-metadata.csv``."""

GENE_TABLE = "gene_expression.csv"
"""File name of the genes x cases expression table :func:`write_clam_cohort` writes next to the CLAM folders."""

TREES: dict[str, str] = {
    "mimic": "mimic-cxr-jpg", "chexpert": RELEASE, "rsna": "rsna", "siim": "siim", "vindr": "vindr-cxr",
    "covidx": "covidx", "placenta": "placenta", "imagenet": "imagenet", "clam": "clam/tcga_brca",
    "clam_external": "clam/external"}
"""Folder of each tree under a ``MEDVLP_DATA`` root (the loaders' defaults), as :func:`write_all` writes them."""

_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
_PHRASES = {
    "cardiomegaly": ("The heart is enlarged.", "Moderate cardiomegaly."),
    "pleural_effusion": ("Small left pleural effusion.", "Blunting of the right costophrenic angle."),
    "opacity": ("Patchy opacity in the right lower lobe.", "Focal consolidation at the right base."),
    "atelectasis": ("Linear atelectasis at the left base.", "Bibasilar atelectasis."),
    "nodule": ("A small nodule in the right upper lobe.", "Calcified granuloma in the right upper lobe."),
    "emphysema": ("The lungs are hyperinflated.", "Emphysematous changes."),
    "edema": ("Mild pulmonary edema.", "Pulmonary vascular congestion."),
    "pneumothorax": ("Small left apical pneumothorax.", "Left pneumothorax."),
    "device": ("A central venous catheter is in place.", "Sternotomy wires are present."),
    "normal": ("The lungs are clear.", "Heart size is normal."),
}


# --------------------------------------------------------------------------------------------------- helpers
def _rng(seed, *key) -> np.random.Generator:
    return np.random.default_rng([check_seed(seed), *key])


def _check_n(n, name: str = "n", least: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {n!r}")
    return int(n)


def _records(records, allowed: Sequence[str], required: Sequence[str], where: str) -> list[dict]:
    out = []
    for k, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise TypeError(f"{where}: record {k} must be a dict, got {type(r).__name__}")
        unknown = sorted(set(r) - set(allowed))
        if unknown:
            raise ValueError(f"{where}: record {k} has unknown key(s) {unknown}; allowed: {list(allowed)}")
        absent = [key for key in required if key not in r]
        if absent:
            raise ValueError(f"{where}: record {k} lacks {absent}")
        out.append(dict(r))
    return out


def _save_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"image for {path} must be uint8, got {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"image for {path} must be [H, W] grey or [H, W, 3] RGB, got shape {a.shape}")
    im = Image.fromarray(a)  # uint8 [H, W] -> L, [H, W, 3] -> RGB
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, "JPEG", quality=95)
    else:
        im.save(path)
    return path


def _put_image(path: Path, image, draw) -> None:
    """Write the record's ``image`` (``None``: ``draw()``; ``False``: nothing) to ``path``."""
    if image is False:
        return
    _save_image(path, draw() if image is None else image)


def _write_text(path: Path, text: str, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime 0: the same bytes on every run
            fh.write(text.encode())
    else:
        path.write_text(text, newline="")
    return path


def _csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _label_cell(v) -> str:
    """CheXpert-style cell: ``1.0`` / ``0.0`` / ``-1.0``, blank for ``None`` / ``""``."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return ""
    f = float(v)
    if f not in (1.0, 0.0, -1.0):
        raise ValueError(f"a CheXpert label must be 1, 0, -1 or None (blank), got {v!r}")
    return f"{f:.1f}"


def _hex(rng: np.random.Generator, n: int) -> str:
    return "".join("0123456789abcdef"[d] for d in rng.integers(0, 16, n))


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _blob(yy, xx, cy, cx, r) -> np.ndarray:
    return np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=(size, size)), sigma=sigma, mode="reflect")
    return f / (f.std() + 1e-8)


def synthetic_radiograph(rng: np.random.Generator, size: int = 64, findings: Iterable[str] = (),
                         boxes: Sequence[Sequence[float]] = (), box_finding: str = "opacity") -> np.ndarray:
    """A synthetic frontal chest film, uint8 [size, size]: bright mediastinum and diaphragm, two darker lung
    fields, smooth noise, and a faint structure for every finding in ``findings`` (book labels, :data:`FINDINGS`;
    ``normal`` and unknown names draw nothing). ``boxes`` (fractions ``(x0, y0, x1, y1)`` of the image) draw
    ``box_finding`` there instead of at its usual place: ``"opacity"`` brightens (RSNA boxes), ``"pneumothorax"``
    darkens (SIIM masks)."""
    s = _check_n(size, "size", 8)
    yy, xx = np.mgrid[0:s, 0:s] / (s - 1)
    img = np.full((s, s), 0.62)
    lungs = _ellipse(yy, xx, 0.45, 0.30, 0.32, 0.15) | _ellipse(yy, xx, 0.45, 0.70, 0.32, 0.15)
    img[lungs] = 0.30
    img[yy > 0.80] = 0.70                                          # diaphragm / abdomen
    heart = _ellipse(yy, xx, 0.62, 0.55, 0.14, 0.13)
    amp = 0.22
    f = set(findings)
    if "cardiomegaly" in f:
        heart = _ellipse(yy, xx, 0.62, 0.55, 0.17, 0.21)
    img[heart] = 0.66
    if "pleural_effusion" in f:
        img += amp * (lungs & (yy > 0.62)) * np.clip((yy - 0.62) / 0.15, 0, 1)
    if "opacity" in f and not boxes:
        img += amp * _blob(yy, xx, 0.55, 0.28, 0.07)
    if "atelectasis" in f:
        img += amp * (np.abs(yy - 0.68 - 0.1 * (xx - 0.7)) < 0.02) * (np.abs(xx - 0.7) < 0.1)
    if "nodule" in f:
        img += 1.5 * amp * _blob(yy, xx, 0.28, 0.33, 0.025)
    if "emphysema" in f:
        img -= 0.5 * amp * lungs
    if "edema" in f:
        img += 0.6 * amp * lungs * _blob(yy, xx, 0.50, 0.50, 0.22)
    if "pneumothorax" in f and not boxes:
        img -= amp * _ellipse(yy, xx, 0.20, 0.72, 0.09, 0.10)
    if "device" in f:
        img += 1.5 * amp * (np.abs(xx - 0.40) < 0.012) * (yy > 0.05) * (yy < 0.55)
    for x0, y0, x1, y1 in boxes:
        inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        img += (-1.0 if box_finding == "pneumothorax" else 1.0) * amp * inside
    img += 0.06 * _smooth_noise(rng, s, max(1.0, s / 32)) + 0.02 * rng.normal(size=(s, s))
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _sides(rng: np.random.Generator, centres: Sequence[float], p_both: float, p_any: float = 0.4) -> list[float]:
    """Where a drawn image's regions go: none with probability ``1 - p_any``, else one of ``centres`` (both with
    probability ``p_both``)."""
    if rng.random() >= p_any:
        return []
    return [float(c) for c in rng.choice(centres, 1 + int(rng.random() < p_both), replace=False)]


def _draw_findings(rng: np.random.Generator, among: Sequence[str] = FINDINGS) -> list[str]:
    """A random finding set: ``normal`` with probability 0.3, else one or two of ``among``."""
    if rng.random() < 0.3:
        return ["normal"]
    return sorted(rng.choice(among, size=1 + int(rng.random() < 0.35), replace=False).tolist())


def _report(rng: np.random.Generator, findings: Sequence[str]) -> tuple[str, str]:
    """``(findings section, impression)`` for a finding set."""
    sents = [_PHRASES[f][int(rng.integers(2))] for f in findings if f in _PHRASES and f != "normal"]
    if not sents:
        return "The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax.", \
            "No acute cardiopulmonary process."
    return " ".join(sents), sents[0]


def _library_of(chexpert_values: Mapping[str, object]) -> list[str]:
    """Book labels positive under U-Zeros for a ``{CheXpert column: value}`` dict."""
    pos = {c for c, v in chexpert_values.items() if _label_cell(v) == "1.0"}
    return [b for b, cols in LIBRARY_MAP.items() if pos & set(cols)]


_CHEX_OF = {"cardiomegaly": "Cardiomegaly", "pleural_effusion": "Pleural Effusion", "opacity": "Lung Opacity",
            "atelectasis": "Atelectasis", "nodule": "Lung Lesion", "edema": "Edema", "pneumothorax": "Pneumothorax",
            "device": "Support Devices", "normal": "No Finding"}
_WITH_CHEXPERT = tuple(f for f in FINDINGS if f in _CHEX_OF)


# --------------------------------------------------------------------------------------------------- MIMIC-CXR
def write_mimic_cxr(root: str | os.PathLike, n: int = 24, seed: int = 0, size: int = 64, *,
                    images: Sequence[Mapping] | None = None, studies: Mapping[int, Mapping] | None = None,
                    gz: bool = True) -> Path:
    """MIMIC-CXR-JPG 2.0.0 with sectioned reports (layout of :mod:`~medvlp_lib.data.real.mimic_cxr`)::

        <root>/mimic-cxr-2.0.0-metadata.csv[.gz]   MIMIC_METADATA_COLUMNS (Rows / Columns = the image size)
        <root>/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id,study_id,subject_id,split
        <root>/mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id,study_id,<14 CheXpert labels> (1.0, 0.0, -1.0, blank)
        <root>/mimic_cxr_sectioned.csv             study,impression,findings,last_paragraph,comparison
        <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg

    ``gz``: the three PhysioNet tables gzipped, as PhysioNet serves them. ``images``: records ``dicom_id,
    subject_id, study_id`` (required), ``view`` (``ViewPosition``, default ``"PA"``), ``split`` (default
    ``"train"``), ``image``; ``studies``: ``{study_id: {"labels": {CheXpert column: 1 / 0 / -1 / None} or None (no
    CheXpert row), "findings": str, "impression": str}}`` (a study not in it has neither row). Without ``images``,
    ``n`` images are drawn: studies of a frontal image and sometimes a lateral one, subjects split
    train / validate / test about 6 : 2 : 2 (every split has a frontal image when ``n >= 8``), findings drawn per
    study with a report that names them and some uncertain (-1) labels.
    """
    root = Path(root)
    size = _check_n(size, "size", 8)
    if images is None:
        images, studies = _draw_mimic(_check_n(n), seed)
    images = _records(images, ("dicom_id", "subject_id", "study_id", "view", "split", "image"),
                      ("dicom_id", "subject_id", "study_id"), "write_mimic_cxr(images)")
    studies = dict(studies or {})
    meta = [(r["dicom_id"], r["subject_id"], r["study_id"], "CHEST (PA AND LAT)", r.get("view", "PA"), size, size,
             21800506, "213014.531", "CHEST (PA AND LAT)", _VIEW_MEANING.get(r.get("view", "PA"), ""), "Erect")
            for r in images]
    _write_text(root / "mimic-cxr-2.0.0-metadata.csv", _csv_text(MIMIC_METADATA_COLUMNS, meta), gz)
    _write_text(root / "mimic-cxr-2.0.0-split.csv", _csv_text(
        ("dicom_id", "study_id", "subject_id", "split"),
        [(r["dicom_id"], r["study_id"], r["subject_id"], r.get("split", "train")) for r in images]), gz)
    subject = {int(r["study_id"]): int(r["subject_id"]) for r in images}
    chex, sect = [], []
    for study, st in studies.items():
        unknown = sorted(set(st) - {"labels", "findings", "impression"})
        if unknown:
            raise ValueError(f"write_mimic_cxr(studies): study {study} has unknown key(s) {unknown}")
        if st.get("labels") is not None:
            bad = sorted(set(st["labels"]) - set(CHEXPERT_LABELS))
            if bad:
                raise ValueError(f"write_mimic_cxr: study {study}: unknown CheXpert column(s) {bad}")
            chex.append((subject.get(int(study), 0), study, *[_label_cell(st["labels"].get(c)) for c in CHEXPERT_LABELS]))
        imp, fin = st.get("impression", "") or "", st.get("findings", "") or ""
        sect.append((f"s{int(study)}", imp, fin, imp or fin, ""))
    _write_text(root / "mimic-cxr-2.0.0-chexpert.csv", _csv_text(("subject_id", "study_id", *CHEXPERT_LABELS), chex),
                gz)
    _write_text(root / "mimic_cxr_sectioned.csv",
                _csv_text(("study", "impression", "findings", "last_paragraph", "comparison"), sect))
    (root / "files").mkdir(parents=True, exist_ok=True)
    for k, r in enumerate(images):
        labels = (studies.get(int(r["study_id"])) or studies.get(str(r["study_id"])) or {}).get("labels") or {}
        _put_image(mimic_image_path(root, r["subject_id"], r["study_id"], r["dicom_id"]), r.get("image"),
                   lambda: synthetic_radiograph(_rng(seed, 1, k), size, _library_of(labels)))
    return root


def _draw_mimic(n: int, seed: int) -> tuple[list[dict], dict]:
    rng = _rng(seed, 0)
    pattern = ("train", "test", "validate", "train", "train", "test", "train", "train", "validate", "train")
    images, studies = [], {}
    subject, study = 10000032, 50414267
    k = 0
    while len(images) < n:
        split = pattern[k % len(pattern)]
        for _ in range(1 + int(rng.random() < 0.3)):               # one or two studies per subject
            if len(images) >= n:
                break
            found = _draw_findings(rng, _WITH_CHEXPERT)
            labels: dict = {_CHEX_OF[f]: 1.0 for f in found}
            for c in rng.choice(CHEXPERT_LABELS, 2, replace=False):
                if c not in labels and "No Finding" not in labels:
                    labels[str(c)] = -1.0 if rng.random() < 0.5 else 0.0
            fin, imp = _report(rng, found)
            studies[study] = {"labels": labels, "findings": fin, "impression": imp}
            views = ["PA" if rng.random() < 0.6 else "AP"] + (["LATERAL"] if rng.random() < 0.3 else [])
            for v in views[: n - len(images)]:
                images.append({"dicom_id": "-".join(_hex(rng, 8) for _ in range(5)), "subject_id": subject,
                               "study_id": study, "view": v, "split": split})
            study += int(rng.integers(1000, 90000))
        subject += int(rng.integers(1000, 900000))
        k += 1
    return images, studies


# --------------------------------------------------------------------------------------------------- CheXpert
def write_chexpert(root: str | os.PathLike, n: int = 40, seed: int = 0, size: int = 64, *,
                   records: Sequence[Mapping] | None = None, n_valid: int | None = None) -> Path:
    """CheXpert-v1.0-small (layout of :mod:`~medvlp_lib.data.real.chexpert`); ``root`` is the release folder::

        <root>/train.csv  <root>/valid.csv     Path,Sex,Age,Frontal/Lateral,AP/PA,<14 observations>
        <root>/train/patient00001/study1/view1_frontal.jpg    (CSV Path: CheXpert-v1.0-small/train/...)

    ``records``: ``split`` (``"train"`` / ``"valid"``), ``patient``, ``study``, ``view`` (ints), ``frontal``
    (bool, default True), ``sex``, ``age``, ``projection`` (AP / PA; blank for a lateral), ``labels`` (``{observation:
    1 / 0 / -1 / None}``), ``image``. Drawn (``n`` training frontal images, some with a lateral view too, and
    ``n_valid`` validation images, default ``max(4, n // 5)``, 0 / 1 labels only): every second training image has
    exactly one of the five competition observations positive and the other twelve (but No Finding) blank or 0, so
    :func:`~medvlp_lib.data.real.chexpert.chexpert_5x200` with either rule finds ``n // 10`` per class; the others
    have random findings with uncertain (-1) entries.
    """
    root = Path(root)
    size = _check_n(size, "size", 8)
    if records is None:
        n = _check_n(n)
        records = _draw_chexpert(n, max(4, n // 5) if n_valid is None else _check_n(n_valid, "n_valid"), seed)
    records = _records(records, ("split", "patient", "study", "view", "frontal", "sex", "age", "projection",
                                 "labels", "image"), ("split", "patient"), "write_chexpert(records)")
    rows: dict[str, list] = {"train": [], "valid": []}
    for k, r in enumerate(records):
        split = r["split"]
        if split not in rows:
            raise ValueError(f"write_chexpert: record {k}: split must be 'train' or 'valid', got {split!r}")
        frontal = bool(r.get("frontal", True))
        rel = (f"{split}/patient{int(r['patient']):05d}/study{int(r.get('study', 1))}/"
               f"view{int(r.get('view', 1))}_{'frontal' if frontal else 'lateral'}.jpg")
        labels = dict(r.get("labels") or {})
        bad = sorted(set(labels) - set(CHEXPERT_LABELS))
        if bad:
            raise ValueError(f"write_chexpert: record {k}: unknown observation(s) {bad}")
        rows[split].append((f"{RELEASE}/{rel}", r.get("sex", "Female"), int(r.get("age", 60)),
                            "Frontal" if frontal else "Lateral", (r.get("projection", "AP") if frontal else ""),
                            *[_label_cell(labels.get(c)) for c in _CSV_ORDER]))
        _put_image(root / rel, r.get("image"),
                   lambda: synthetic_radiograph(_rng(seed, 2, k), size, _library_of(labels)))
    for split, rr in rows.items():
        _write_text(root / f"{split}.csv", _csv_text((*META_COLUMNS, *_CSV_ORDER), rr))
    return root


_CSV_ORDER = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
              "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
              "Fracture", "Support Devices")
"""The column order of the released CSVs."""


def _draw_chexpert(n: int, n_valid: int, seed: int) -> list[dict]:
    rng = _rng(seed, 3)
    out = []
    for k in range(n + n_valid):
        split = "train" if k < n else "valid"
        if split == "train" and k % 2 == 0:                        # a 5x200-eligible image of one class
            c = CHEXPERT_5[(k // 2) % 5]
            labels: dict = {c: 1.0}
            for other in rng.choice([x for x in CHEXPERT_LABELS if x not in (c, "No Finding")], 2, replace=False):
                labels[str(other)] = 0.0
        else:
            labels = {_CHEX_OF[f]: 1.0 for f in _draw_findings(rng, _WITH_CHEXPERT)}
            if split == "train" and rng.random() < 0.6:
                extra = str(rng.choice([x for x in CHEXPERT_LABELS if x not in labels and x != "No Finding"]))
                labels[extra] = -1.0
            if split == "valid":
                labels = {c: labels.get(c, 0.0) for c in CHEXPERT_LABELS}
        base = dict(split=split, patient=k + 1 if split == "train" else 64541 + k, study=1,
                    sex="Male" if rng.random() < 0.5 else "Female", age=int(rng.integers(20, 90)), labels=labels)
        out.append(dict(base, view=1, frontal=True, projection="AP" if rng.random() < 0.7 else "PA"))
        if split == "train" and rng.random() < 0.2:
            out.append(dict(base, view=2, frontal=False))
    return out


# --------------------------------------------------------------------------------------------------- RSNA
def write_rsna(root: str | os.PathLike, n: int = 16, seed: int = 0, size: int = 64, *,
               records: Sequence[Mapping] | None = None, ext: str = ".png") -> Path:
    """RSNA Pneumonia, the PNG variant (layout of :mod:`~medvlp_lib.data.real.rsna`)::

        <root>/stage_2_train_labels.csv      patientId,x,y,width,height,Target (a row per box; Target 0: one row,
                                             empty box)
        <root>/stage_2_train_images/<patientId>.png

    ``records``: ``patient_id`` (required), ``boxes`` (``(x, y, width, height)`` on the 1024 grid; none = Target
    0), ``image``. Drawn: about 40 % positive with one or two boxes over the lungs; a positive image is brighter
    inside its boxes.
    """
    root = Path(root)
    size = _check_n(size, "size", 8)
    if records is None:
        rng = _rng(seed, 4)
        records = []
        for k in range(_check_n(n)):
            boxes = [(cx * GRID - w / 2, rng.uniform(250, 550), w, h) for cx in _sides(rng, (0.3, 0.7), 0.5)
                     for w, h in [(rng.uniform(150, 260), rng.uniform(200, 380))]]
            records.append({"patient_id": "-".join(_hex(rng, m) for m in (8, 4, 4, 4, 12)), "boxes": boxes})
    records = _records(records, ("patient_id", "boxes", "image"), ("patient_id",), "write_rsna(records)")
    rows = []
    (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    for k, r in enumerate(records):
        boxes = [tuple(float(v) for v in b) for b in r.get("boxes") or ()]
        rows += [(r["patient_id"], *(f"{v:.1f}" for v in b), 1) for b in boxes] or [(r["patient_id"], "", "", "", "",
                                                                                      0)]
        frac = [(x / GRID, y / GRID, (x + w) / GRID, (y + h) / GRID) for x, y, w, h in boxes]
        _put_image(root / "stage_2_train_images" / f"{r['patient_id']}{ext}", r.get("image"),
                   lambda: synthetic_radiograph(_rng(seed, 5, k), size, boxes=frac, box_finding="opacity"))
    _write_text(root / "stage_2_train_labels.csv", _csv_text(("patientId", "x", "y", "width", "height", "Target"), rows))
    return root


# --------------------------------------------------------------------------------------------------- SIIM
def write_siim(root: str | os.PathLike, n: int = 16, seed: int = 0, size: int = 64, *,
               records: Sequence[Mapping] | None = None, ext: str = ".png") -> Path:
    """SIIM-ACR Pneumothorax, the PNG variant the loader accepts (layout of :mod:`~medvlp_lib.data.real.siim`)::

        <root>/train-rle.csv          header ``ImageId, EncodedPixels`` (leading space), rows ``<ImageId>, <rle>``
                                      (relative column-major RLE on the 1024 grid; `` -1`` = no pneumothorax)
        <root>/png_images/<ImageId>.png

    ``records``: ``image_id`` (required), ``masks`` (a list of bool [1024, 1024] arrays or RLE strings: one CSV
    row each; none = a ``-1`` row), ``image``. Drawn: about 40 % positive with one or two apical / lateral regions;
    the image is darker under the mask (no lung markings).
    """
    root = Path(root)
    size = _check_n(size, "size", 8)
    yy, xx = np.mgrid[0:GRID, 0:GRID] / (GRID - 1)
    if records is None:
        rng = _rng(seed, 6)
        records = []
        for k in range(_check_n(n)):
            masks = [_ellipse(yy, xx, rng.uniform(0.15, 0.3), cx + rng.uniform(-0.05, 0.05), rng.uniform(0.06, 0.14),
                              rng.uniform(0.05, 0.1)) for cx in _sides(rng, (0.25, 0.75), 0.3)]
            records.append({"image_id": f"1.2.276.0.7230010.3.1.4.8323329.{int(rng.integers(1000, 20000))}."
                                        f"{1517875000 + k}.{int(rng.integers(100000, 999999))}", "masks": masks})
    records = _records(records, ("image_id", "masks", "image"), ("image_id",), "write_siim(records)")
    rows = []
    (root / "png_images").mkdir(parents=True, exist_ok=True)
    for k, r in enumerate(records):
        masks = [m if isinstance(m, str) else rle_encode(np.asarray(m, bool)) for m in r.get("masks") or ()]
        rows += [f"{r['image_id']}, {m}\n" for m in masks] or [f"{r['image_id']}, -1\n"]
        boxes = []
        for m in r.get("masks") or ():
            if not isinstance(m, str) and np.asarray(m).any():
                ys, xs = np.nonzero(np.asarray(m, bool))
                boxes.append((xs.min() / GRID, ys.min() / GRID, xs.max() / GRID, ys.max() / GRID))
        _put_image(root / "png_images" / f"{r['image_id']}{ext}", r.get("image"),
                   lambda: synthetic_radiograph(_rng(seed, 7, k), size, boxes=boxes, box_finding="pneumothorax"))
    _write_text(root / "train-rle.csv", "ImageId, EncodedPixels\n" + "".join(rows))
    return root


# --------------------------------------------------------------------------------------------------- VinDr
def write_vindr(root: str | os.PathLike, n: int = 16, seed: int = 0, size: int = 64, *,
                records: Sequence[Mapping] | None = None, label_names: Sequence[str] = VINDR_LABELS,
                ext: str = ".png") -> Path:
    """VinDr-CXR 1.0.0, PNG variant (layout of :mod:`~medvlp_lib.data.real.vindr`)::

        <root>/annotations/image_labels_train.csv    image_id,rad_id,<label_names> (one row per radiologist)
        <root>/annotations/image_labels_test.csv     image_id,<label_names> (the consensus, one row)
        <root>/train/<image_id>.png   <root>/test/<image_id>.png

    ``records``: ``image_id`` (required), ``split`` (default ``"test"``), ``reads`` (a list of ``(rad_id,
    positive label names)``; the test CSV ignores ``rad_id``), ``image``. Drawn: half train (three readers who
    agree on most labels), half test (one consensus read); ``No finding`` when nothing else is positive.
    """
    root = Path(root)
    size = _check_n(size, "size", 8)
    names = tuple(label_names)
    book_of = {c: b for b, cols in VINDR_MAP.items() for c in cols}
    if records is None:
        rng = _rng(seed, 8)
        n = _check_n(n)
        records = []
        for k in range(n):
            found = [f for f in _draw_findings(rng) if f in VINDR_MAP]
            cols = ({c for f in found for c in names if c.lower() == VINDR_MAP[f][0]}
                    or {c for c in names if c.lower() == "no finding"})
            split = "train" if k < n // 2 else "test"
            reads = ([(f"R{int(rng.integers(1, 18))}", cols if j < 2 or rng.random() < 0.5 else {"No finding"})
                      for j in range(3)] if split == "train" else [(None, cols)])
            records.append({"image_id": _hex(rng, 32), "split": split, "reads": reads})
    records = _records(records, ("image_id", "split", "reads", "image"), ("image_id", "reads"),
                       "write_vindr(records)")
    rows: dict[str, list] = {"train": [], "test": []}
    for k, r in enumerate(records):
        split = r.get("split", "test")
        if split not in rows:
            raise ValueError(f"write_vindr: record {k}: split must be 'train' or 'test', got {split!r}")
        positives: set = set()
        for rad, pos in r["reads"]:
            bad = sorted(set(pos) - set(names))
            if bad:
                raise ValueError(f"write_vindr: record {k}: unknown label(s) {bad}; label_names are {list(names)}")
            positives |= set(pos)
            flags = ["1" if c in pos else "0" for c in names]
            rows[split].append((r["image_id"], rad, *flags) if split == "train" else (r["image_id"], *flags))
        found = sorted({book_of[c.lower()] for c in positives if c.lower() in book_of} - {"normal"})
        _put_image(root / split / f"{r['image_id']}{ext}", r.get("image"),
                   lambda: synthetic_radiograph(_rng(seed, 9, k), size, found))
    _write_text(root / "annotations" / "image_labels_train.csv", _csv_text(("image_id", "rad_id", *names),
                                                                           rows["train"]))
    _write_text(root / "annotations" / "image_labels_test.csv", _csv_text(("image_id", *names), rows["test"]))
    for split in rows:
        (root / split).mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------------------------------- COVIDx
def write_covidx(root: str | os.PathLike, n: int = 18, seed: int = 0, size: int = 64, *,
                 records: Sequence[Mapping] | None = None) -> Path:
    """COVIDx CXR (v1-v7 three-class release; layout of :mod:`~medvlp_lib.data.real.covidx`)::

        <root>/train.txt  <root>/test.txt     lines ``patient_id filename label source``
        <root>/train/<filename>  <root>/test/<filename>

    ``records``: ``filename``, ``label`` (required; written as given, e.g. ``COVID-19``), ``patient_id``,
    ``source`` (default ``"rsna"``), ``split`` (``train`` / ``val`` / ``test``; default ``train``), ``image``.
    Drawn: the three classes in turn, two thirds train; pneumonia draws an opacity, COVID-19 an opacity with
    haze.
    """
    root = Path(root)
    size = _check_n(size, "size", 8)
    look = {"normal": (), "pneumonia": ("opacity",), "covid-19": ("opacity", "edema"), "positive": ("opacity",),
            "negative": ()}
    if records is None:
        rng = _rng(seed, 10)
        n = _check_n(n)
        names = ("normal", "pneumonia", "COVID-19")
        records = [{"patient_id": str(100 + k), "filename": f"{_hex(rng, 12)}.png", "label": names[k % 3],
                    "source": ("rsna", "cohen", "sirm")[k % 3], "split": "train" if k < 2 * n // 3 else "test"}
                   for k in range(n)]
    records = _records(records, ("patient_id", "filename", "label", "source", "split", "image"),
                       ("filename", "label"), "write_covidx(records)")
    lines: dict[str, list[str]] = {}
    for k, r in enumerate(records):
        split = r.get("split", "train")
        if split not in ("train", "val", "test"):
            raise ValueError(f"write_covidx: record {k}: split must be train, val or test, got {split!r}")
        lines.setdefault(split, []).append(f"{r.get('patient_id', k)} {r['filename']} {r['label']} "
                                           f"{r.get('source', 'rsna')}\n")
        _put_image(root / split / r["filename"], r.get("image"),
                   lambda: synthetic_radiograph(_rng(seed, 11, k), size, look.get(str(r["label"]).lower(), ())))
    for split, ll in lines.items():
        _write_text(root / f"{split}.txt", "".join(ll))
        (root / split).mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------------------------------- placenta
def _placenta_photo(rng: np.random.Generator, hw: tuple[int, int], labels) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H, W, 3] fetal-side photograph, uint8 mask of the disc)."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / max(h - 1, 1), xx / max(w - 1, 1)
    disc = _ellipse(yy, xx, 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04), 0.36, 0.30)
    lab = [0.0 if v is None or not np.isfinite(v) else float(v) for v in labels] if labels is not None else [0.0] * 5
    colour = np.array([0.55, 0.18, 0.22])                          # dark red disc
    if lab[0] > 0:                                                 # meconium: green-brown staining
        colour = colour + np.array([0.0, 0.18, -0.05])
    if lab[1] > 0 or lab[2] > 0 or lab[3] > 0:                     # inflammation: opaque, paler membranes
        colour = colour + 0.12 * (lab[1] + lab[2] + lab[3]) / 3 + np.array([0.05, 0.05, 0.05])
    img = np.empty((h, w, 3))
    img[:] = np.array([0.15, 0.35, 0.55])                          # blue cloth
    img[disc] = colour
    cx = 0.5 + (0.27 if lab[4] > 0 else 0.0)                       # abnormal (marginal) cord insertion
    cord = _ellipse(yy, xx, 0.5, cx, 0.05, 0.05)
    img[cord] = [0.75, 0.72, 0.65]
    img += 0.04 * rng.normal(size=img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), (disc * 255).astype(np.uint8)


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        return _check_n(size[0], "size[0]", 8), _check_n(size[1], "size[1]", 8)
    s = _check_n(size, "size", 8)
    return max(8, s * 3 // 4), s


def write_placenta(root: str | os.PathLike, n: int = 16, seed: int = 0, size: int | tuple[int, int] = 64, *,
                   records: Sequence[Mapping] | None = None, masks: bool = True) -> Path:
    """The PlacentaCLIP layout (:mod:`~medvlp_lib.data.real.placenta`)::

        <root>/fetal_side/<studyid>.jpg          RGB photograph (``size`` = width, height 3/4 of it, or (H, W))
        <root>/fetal_seg/<studyid>.png           disc mask (``masks=True``)
        <root>/annotation_diagnosis_new.json     {studyid: [report sentences]}
        <root>/placenta_test_labels.csv          studyid,meconium,fir,mir,chorioamnionitis,insertion

    ``records``: ``study_id`` (required), ``report`` (a string, a list of sentences, or ``None``: not in the JSON),
    ``labels`` (five values, ``None`` = blank, in :data:`~medvlp_lib.data.real.placenta.PLACENTA_LABELS` order; the
    record ``labels=None`` = not in the CSV), ``draw_labels`` (what a drawn photograph shows; default ``labels``),
    ``image`` (RGB), ``mask``. Drawn: 60 % report-only studies (the
    pretraining pairs), 40 % labelled studies with a report (the test tasks); meconium tints the disc green,
    inflammation makes it paler, an abnormal insertion moves the cord to the margin, and the report says so.
    """
    root = Path(root)
    hw = _size_hw(size)
    if records is None:
        rng = _rng(seed, 12)
        n = _check_n(n)
        records = []
        for k in range(n):
            lab = [float(rng.random() < p) for p in (0.3, 0.3, 0.3, 0.3, 0.2)]
            sents = [s for s, v in zip(("Meconium-laden macrophages in the membranes.", "Fetal inflammatory "
                                        "response, stage 2.", "Maternal inflammatory response, stage 1.",
                                        "Acute chorioamnionitis.", "Marginal cord insertion."), lab) if v]
            records.append({"study_id": f"P{k + 1:04d}", "report": sents or ["Unremarkable placenta."],
                            "labels": lab if k >= round(0.6 * n) else None, "draw_labels": lab})
    allowed = ("study_id", "report", "labels", "draw_labels", "image", "mask")
    records = _records(records, allowed, ("study_id",), "write_placenta(records)")
    reports, rows = {}, []
    for k, r in enumerate(records):
        sid = str(r["study_id"])
        if r.get("report") is not None:
            reports[sid] = r["report"]
        if r.get("labels") is not None:
            if len(r["labels"]) != len(PLACENTA_LABELS):
                raise ValueError(f"write_placenta: study {sid}: labels need {len(PLACENTA_LABELS)} values "
                                 f"{PLACENTA_LABELS}, got {len(r['labels'])}")
            rows.append((sid, *["" if v is None else str(int(float(v))) for v in r["labels"]]))
        drawn = (_placenta_photo(_rng(seed, 13, k), hw, r.get("draw_labels", r.get("labels")))
                 if r.get("image") is None or (masks and r.get("mask") is None) else (None, None))
        _put_image(root / "fetal_side" / f"{sid}.jpg", r.get("image"), lambda: drawn[0])
        if masks:
            _put_image(root / "fetal_seg" / f"{sid}.png", r.get("mask"), lambda: drawn[1])
    (root / "fetal_side").mkdir(parents=True, exist_ok=True)
    (root / "fetal_seg").mkdir(parents=True, exist_ok=True)
    (root / REPORTS_FILE).write_text(json.dumps(reports, indent=1))
    _write_text(root / PLACENTA_LABELS_FILE, _csv_text(("studyid", *PLACENTA_LABELS), rows))
    return root


# --------------------------------------------------------------------------------------------------- ImageNet
_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041", "n01514668")


def write_imagenet(root: str | os.PathLike, n: int = 24, seed: int = 0, size: int = 64, *,
                   n_classes: int = 4) -> Path:
    """An ImageNet-style folder (ILSVRC2012 train layout)::

        <root>/train/<wnid>/<wnid>_<k>.JPEG      RGB, ``n`` images over ``n_classes`` (<= 8) class folders

    Returns ``<root>/train``, the folder :class:`~medvlp_lib.data.natural.ImageFolderCrops` reads (its default is
    ``$MEDVLP_DATA/imagenet/train``). Each class has its own colour and stripe orientation, plus noise.
    """
    n, n_classes = _check_n(n), _check_n(n_classes, "n_classes")
    if n_classes > len(_WNIDS):
        raise ValueError(f"n_classes must be at most {len(_WNIDS)}, got {n_classes}")
    s = _check_n(size, "size", 8)
    train = Path(root) / "train"
    yy, xx = np.mgrid[0:s, 0:s] / s
    for k in range(n):
        c = k % n_classes
        rng = _rng(seed, 14, k)
        angle = np.pi * c / n_classes
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6))
        hue = np.array([(c * 0.37) % 1, (c * 0.61 + 0.3) % 1, (c * 0.83 + 0.6) % 1])
        img = 0.35 * hue + 0.45 * stripes[..., None] * hue[::-1] + 0.12 * rng.normal(size=(s, s, 3))
        _save_image(train / _WNIDS[c] / f"{_WNIDS[c]}_{k}.JPEG", (np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return train


# --------------------------------------------------------------------------------------------------- CLAM
def write_clam_cohort(root: str | os.PathLike, n: int = 12, seed: int = 0, dim: int = 32, *,
                      n_patches: tuple[int, int] = (40, 120), n_genes: int = 64, shift: float = 0.0,
                      fmt: str = "both", gene_table: bool = True, missing_omics: int = 0) -> Path:
    """CLAM / TRIDENT feature folders of ``n`` cases (layout of :mod:`~medvlp_lib.data.real.clam_features`) with
    a genes x cases expression table (:mod:`~medvlp_lib.data.real.omics`)::

        <root>/h5_files/<slide_id>.h5     features [N, dim] float32, coords [N, 2] int64 (level-0 pixels)
        <root>/pt_files/<slide_id>.pt     features tensor [N, dim] (``fmt="both"``, as CLAM writes)
        <root>/labels.csv                 case_id,slide_id,label
        <root>/gene_expression.csv        gene,<case>-01,... : rows = genes, raw expression >= 0 (TCGA_gene.csv style)

    Cases are TCGA-like (``TCGA-F1-0001``; slides ``TCGA-F1-0001-01Z-00-DX1``, a second slide ``-DX2`` sometimes);
    the table's columns are sample barcodes (``TCGA-F1-0001-01``), matched to the cases by prefix. Features and
    omics come from :func:`~medvlp_lib.data.pathology.simulate_cohort` (world 0, cohort seed ``seed``; ``shift`` a
    site / stain shift for an external cohort); expression = ``2 ** (omics - min) - 1``, so ``log2(x + 1)`` gives
    the simulated omics back up to one offset. ``missing_omics`` leaves the last cases out of the table.
    """
    root = Path(root)
    n = _check_n(n, "n", 4)
    cohort = simulate_cohort(n, seed=check_seed(seed), name="c", feature_dim=_check_n(dim, "dim", 2),
                             n_patches=tuple(n_patches), n_genes=_check_n(n_genes, "n_genes", 2),
                             n_modules=min(8, n_genes), prevalence=0.4, signal_strength=2.0, signal_fraction=0.2,
                             shift=float(shift), world_seed=0)
    site = f"F{check_seed(seed) % 10}" if not shift else f"X{check_seed(seed) % 10}"
    case_of = {c: f"TCGA-{site}-{k + 1:04d}" for k, c in enumerate(dict.fromkeys(cohort.case_ids))}
    slides = [dataclasses.replace(s, case_id=case_of[s.case_id],
                                  slide_id=f"{case_of[s.case_id]}-01Z-00-DX{int(s.slide_id.rsplit('-s', 1)[1]) + 1}")
              for s in cohort]
    write_clam(Cohort.from_slides(slides), root, fmt=fmt, omics_csv=None, extras=False)
    if gene_table:
        first = {s.case_id: s.omics for s in reversed(slides)}
        cases = list(dict.fromkeys(s.case_id for s in slides))
        cases = cases[: len(cases) - int(missing_omics)]
        om = np.stack([first[c] for c in cases]).astype(np.float64)
        expr = np.exp2(om - om.min()) - 1.0
        rows = [(f"GENE{g + 1:05d}", *(f"{v:.4f}" for v in expr[:, g])) for g in range(expr.shape[1])]
        _write_text(root / GENE_TABLE, _csv_text(("gene", *(f"{c}-01" for c in cases)), rows))
    return root


# --------------------------------------------------------------------------------------------------- all trees
def write_all(root: str | os.PathLike, seed: int = 0, size: int = 64, scale: int = 1) -> dict[str, Path]:
    """Every tree under one ``MEDVLP_DATA``-style root, in the folders the loaders default to (:data:`TREES`):
    ``{name: the path its loader takes}``. ``scale`` multiplies every tree's item count (1: a few dozen images per
    dataset, a dozen slides; a second or two to write)."""
    root = Path(root)
    k = _check_n(scale, "scale")
    return {
        "mimic": write_mimic_cxr(root / TREES["mimic"], 24 * k, seed, size),
        "chexpert": write_chexpert(root / TREES["chexpert"], 40 * k, seed, size),
        "rsna": write_rsna(root / TREES["rsna"], 16 * k, seed, size),
        "siim": write_siim(root / TREES["siim"], 16 * k, seed, size),
        "vindr": write_vindr(root / TREES["vindr"], 16 * k, seed, size),
        "covidx": write_covidx(root / TREES["covidx"], 18 * k, seed, size),
        "placenta": write_placenta(root / TREES["placenta"], 16 * k, seed, size),
        "imagenet": write_imagenet(root / TREES["imagenet"], 24 * k, seed, size),
        "clam": write_clam_cohort(root / TREES["clam"], 12 * k, seed),
        "clam_external": write_clam_cohort(root / TREES["clam_external"], 8 * k, seed + 1, shift=1.0),
    }
