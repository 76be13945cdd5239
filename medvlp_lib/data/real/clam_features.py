"""Slide feature files in the CLAM / TRIDENT layout: reader, writer and validation.

On-disk layout (what CLAM's ``extract_features_fp.py`` and TRIDENT write, and what MoMKD reads)::

    <root>/
      h5_files/<slide_id>.h5    datasets: features [N, D] float32, coords [N, 2] int (level-0 x, y
                                 of each patch's top-left corner); optional: signal_mask [N], tissue [N]
      pt_files/<slide_id>.pt    torch.save of the features tensor [N, D] (coords then come from the
                                 matching h5 file) or of a dict {"features": ..., "coords": ...}
      labels.csv                columns case_id,slide_id,label (label 0/1; extra columns ignored)
      omics.csv                 optional: case_id,<gene 1>,<gene 2>,... (one row per case)

:func:`write_clam` exports a :class:`~medvlp_lib.data.pathology.Cohort` in this layout, :func:`read_clam`
returns a lazily loaded ``Cohort``. Malformed files raise ``ValueError``/``FileNotFoundError`` naming
the file and what was expected. A data root can come from ``MEDVLP_DATA`` (``<MEDVLP_DATA>/clam/<name>``).
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..pathology import Cohort, Slide

__all__ = ["write_clam", "read_clam", "load_slide_features", "default_root", "LAYOUT"]

LAYOUT = ("<root>/h5_files/<slide_id>.h5 (datasets 'features' [N, D] float32 and 'coords' [N, 2] int) "
          "or <root>/pt_files/<slide_id>.pt, plus <root>/labels.csv with columns case_id,slide_id,label")


def default_root(name: str = "tcga_brca") -> Path:
    """``$MEDVLP_DATA/clam/<name>``; raises if ``MEDVLP_DATA`` is not set."""
    base = os.environ.get("MEDVLP_DATA")
    if not base:
        raise FileNotFoundError(f"set MEDVLP_DATA to a folder holding clam/{name}/ in the layout {LAYOUT}; "
                                "TCGA features can be extracted with TRIDENT (UNI v2) from the GDC slides")
    return Path(base) / "clam" / name


def write_clam(cohort: Sequence[Slide], root: str | Path, *, fmt: str = "h5", labels_csv: str = "labels.csv",
               omics_csv: str | None = "omics.csv", extras: bool = True) -> Path:
    """Write slides as ``h5_files/*.h5`` (``fmt="h5"``), ``pt_files/*.pt`` (``fmt="pt"``, dict with
    features and coords) or both (``fmt="both"``; pt then holds the features tensor only, as CLAM),
    plus ``labels.csv`` and (if any slide has omics) ``omics.csv``. ``extras`` adds ``signal_mask`` and
    ``tissue`` datasets to the h5 files (ignored by CLAM tools). Returns ``root``."""
    import h5py

    if fmt not in ("h5", "pt", "both"):
        raise ValueError(f"fmt must be 'h5', 'pt' or 'both', got {fmt!r}")
    root = Path(root)
    if fmt in ("h5", "both"):
        (root / "h5_files").mkdir(parents=True, exist_ok=True)
    if fmt in ("pt", "both"):
        (root / "pt_files").mkdir(parents=True, exist_ok=True)
    rows, omics_rows, seen_cases = [], [], set()
    for s in cohort:
        if fmt in ("h5", "both"):
            with h5py.File(root / "h5_files" / f"{s.slide_id}.h5", "w") as f:
                f.create_dataset("features", data=np.asarray(s.features, np.float32))
                f.create_dataset("coords", data=np.asarray(s.coords, np.int64))
                if extras:
                    f.create_dataset("signal_mask", data=np.asarray(s.signal_mask, bool))
                    f.create_dataset("tissue", data=np.asarray(s.tissue, np.int64))
        if fmt in ("pt", "both"):
            feats = torch.from_numpy(np.asarray(s.features, np.float32))
            obj = feats if fmt == "both" else {"features": feats, "coords": torch.from_numpy(np.asarray(s.coords, np.int64))}
            torch.save(obj, root / "pt_files" / f"{s.slide_id}.pt")
        rows.append((s.case_id, s.slide_id, int(s.label)))
        if s.omics is not None and np.asarray(s.omics).size and s.case_id not in seen_cases:
            seen_cases.add(s.case_id)
            omics_rows.append((s.case_id, np.asarray(s.omics, np.float32)))
    with open(root / labels_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "slide_id", "label"])
        w.writerows(rows)
    if omics_csv and omics_rows:
        g = omics_rows[0][1].size
        with open(root / omics_csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case_id", *[f"gene{j:04d}" for j in range(g)]])
            for case, o in omics_rows:
                w.writerow([case, *[repr(float(v)) for v in o]])
    return root


def _check_arrays(path: Path, feats: np.ndarray, coords: np.ndarray) -> None:
    if feats.ndim != 2:
        raise ValueError(f"{path}: 'features' must be 2-D [N, D], got shape {feats.shape}")
    if feats.shape[0] == 0:
        raise ValueError(f"{path}: empty slide (0 patches); expected 'features' [N, D] with N >= 1")
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"{path}: 'coords' must be [N, 2], got shape {coords.shape}")
    if coords.shape[0] != feats.shape[0]:
        raise ValueError(f"{path}: N mismatch: 'features' has {feats.shape[0]} rows but 'coords' has "
                         f"{coords.shape[0]}; expected one (x, y) per patch")
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(1).sum())
        raise ValueError(f"{path}: 'features' contain NaN/inf in {bad} of {feats.shape[0]} patches")


def _read_h5(path: Path, need: tuple[str, ...] = ("features", "coords")) -> dict:
    import h5py

    out = {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e
    with f:
        for key in need:
            if key not in f:
                raise ValueError(f"{path}: missing dataset {key!r}; found {sorted(f.keys())}, expected 'features' "
                                 "[N, D] float32 and 'coords' [N, 2] int")
        for key in ("features", "coords", "signal_mask", "tissue"):
            if key in f:
                out[key] = f[key][()]
    return out


def load_slide_features(root: str | Path, slide_id: str, fmt: str = "auto") -> dict:
    """Load one slide's arrays ``{"features", "coords", ["signal_mask", "tissue"]}`` with validation."""
    root = Path(root)
    h5 = root / "h5_files" / f"{slide_id}.h5"
    pt = root / "pt_files" / f"{slide_id}.pt"
    use_pt = fmt == "pt" or (fmt == "auto" and pt.exists() and not h5.exists())
    if fmt not in ("auto", "h5", "pt"):
        raise ValueError(f"fmt must be 'auto', 'h5' or 'pt', got {fmt!r}")
    if use_pt:
        if not pt.exists():
            raise FileNotFoundError(f"missing feature file {pt}; expected layout: {LAYOUT}")
        obj = torch.load(pt, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if "features" not in obj:
                raise ValueError(f"{pt}: dict without 'features'; found keys {sorted(obj)}")
            feats = obj["features"]
            coords = obj.get("coords")
        elif isinstance(obj, torch.Tensor):
            feats, coords = obj, None
        else:
            raise ValueError(f"{pt}: expected a features tensor [N, D] or a dict with 'features' and 'coords', "
                             f"got {type(obj).__name__}")
        path = pt
        if coords is None:
            if not h5.exists():
                raise ValueError(f"{pt} holds features only and {h5} (with 'coords') does not exist; the patch "
                                 "graph needs coords [N, 2]")
            coords = _read_h5(h5, need=("coords",))["coords"]
        arrays = {"features": torch.as_tensor(feats).float().numpy(), "coords": np.asarray(coords)}
    else:
        if not h5.exists():
            raise FileNotFoundError(f"missing feature file {h5}; expected layout: {LAYOUT}")
        path = h5
        arrays = _read_h5(h5)
    feats = np.asarray(arrays["features"])
    coords = np.asarray(arrays["coords"])
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    _check_arrays(path, feats, coords)
    if not np.issubdtype(coords.dtype, np.number):
        raise ValueError(f"{path}: 'coords' must be numeric, got dtype {coords.dtype}")
    arrays["features"] = feats.astype(np.float32, copy=False)
    arrays["coords"] = np.rint(coords).astype(np.int64)
    return arrays


def _read_labels(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"missing labels file {path}; expected a CSV with columns case_id,slide_id,label")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in ("case_id", "slide_id", "label") if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {cols}, expected case_id,slide_id,label")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows; expected one row per slide")
    return rows


def read_clam(root: str | Path, *, labels_csv: str | Path = "labels.csv", omics_csv: str | Path | None = "omics.csv",
              fmt: str = "auto", label_map: dict | None = None, missing: str = "error", cache: bool = True,
              name: str | None = None) -> Cohort:
    """Read a CLAM-layout folder into a lazily loaded :class:`Cohort` (see module docstring).

    Every slide file listed in the labels CSV must exist (``missing="error"``), or missing ones are
    dropped with a warning giving their count (``missing="skip"``). Labels are integers 0/1, or strings
    mapped by ``label_map`` (e.g. ``{"Negative": 0, "Positive": 1}``). ``omics.csv`` (if present) gives
    each slide its case's omics vector; otherwise ``Slide.omics`` is empty. Files are opened and
    validated when a slide is first accessed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CLAM feature folder {root} does not exist; expected layout: {LAYOUT}")
    if not (root / "h5_files").is_dir() and not (root / "pt_files").is_dir():
        raise FileNotFoundError(f"{root} has neither h5_files/ nor pt_files/; expected layout: {LAYOUT}")
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    lab_path = Path(labels_csv) if Path(labels_csv).is_absolute() else root / labels_csv
    rows = _read_labels(lab_path)
    slide_ids, case_ids, labels, dropped = [], [], [], []
    for r in rows:
        sid, raw = r["slide_id"].strip(), r["label"].strip()
        if label_map is not None:
            if raw not in label_map:
                raise ValueError(f"{lab_path}: label {raw!r} of slide {sid!r} not in label_map {sorted(label_map)}")
            y = int(label_map[raw])
        else:
            try:
                y = int(float(raw))
            except ValueError:
                raise ValueError(f"{lab_path}: label {raw!r} of slide {sid!r} is not an integer; pass label_map") from None
        if y not in (0, 1):
            raise ValueError(f"{lab_path}: label of slide {sid!r} must be 0 or 1, got {y}")
        exists = any((root / sub / f"{sid}.{ext}").exists() for sub, ext in (("h5_files", "h5"), ("pt_files", "pt")))
        if not exists:
            if missing == "error":
                raise FileNotFoundError(f"slide {sid!r} listed in {lab_path} has no feature file "
                                        f"{root / 'h5_files' / (sid + '.h5')} or {root / 'pt_files' / (sid + '.pt')}")
            dropped.append(sid)
            continue
        slide_ids.append(sid)
        case_ids.append(r["case_id"].strip())
        labels.append(y)
    if dropped:
        warnings.warn(f"read_clam: skipped {len(dropped)} of {len(rows)} slides without feature files "
                      f"(first: {dropped[:3]})", stacklevel=2)
    omics: dict[str, np.ndarray] = {}
    if omics_csv is not None:
        om_path = Path(omics_csv) if Path(omics_csv).is_absolute() else root / omics_csv
        if om_path.exists():
            with open(om_path, newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if not header or header[0] != "case_id":
                    raise ValueError(f"{om_path}: first column must be case_id, got header {header[:3] if header else header}")
                for row in reader:
                    try:
                        omics[row[0]] = np.asarray([float(v) for v in row[1:]], np.float32)
                    except ValueError as e:
                        raise ValueError(f"{om_path}: non-numeric value in the row of case {row[0]!r} ({e})") from None

    def load(i: int) -> Slide:
        arr = load_slide_features(root, slide_ids[i], fmt)
        n = arr["features"].shape[0]
        mask = np.asarray(arr.get("signal_mask", np.zeros(n, bool)), bool)
        tissue = np.asarray(arr.get("tissue", np.full(n, -1)), np.int64)
        return Slide(slide_ids[i], case_ids[i], arr["features"], arr["coords"],
                     omics.get(case_ids[i], np.zeros(0, np.float32)), labels[i], mask, tissue)

    return Cohort(slide_ids, case_ids, labels, load, cache=cache, name=name or root.name,
                  info={"root": str(root), "skipped": dropped, "has_omics": bool(omics)})
