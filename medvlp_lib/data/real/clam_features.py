"""Slide feature files in the CLAM / TRIDENT layout: reader, writer and validation.

On-disk layout (what CLAM's ``extract_features_fp.py`` and TRIDENT write, and what MoMKD reads)::

    <root>/
      h5_files/<slide_id>.h5    datasets: features [N, D] float32, coords [N, 2] int (level-0 x, y
                                 of each patch's top-left corner); optional: signal_mask [N], tissue [N]
      pt_files/<slide_id>.pt    torch.save of the features tensor [N, D] (coords then come from the
                                 matching h5 file) or of a dict {"features": ..., "coords": ...}
      labels.csv                columns case_id,slide_id,label (label 0/1; extra columns ignored)
      omics.csv                 optional: case_id,<gene 1>,<gene 2>,... (one row per case; genes x cases works too)
      gene_expression.csv       optional, any name: a raw genes x cases table (TCGA_gene.csv style) for the public
                                 MoMKD code's gene selection, :mod:`medvlp_lib.data.real.omics` (not read here)

:func:`write_clam` exports a :class:`~medvlp_lib.data.pathology.Cohort` in this layout, :func:`read_clam`
returns a lazily loaded ``Cohort`` that reads slides from disk through a bounded cache (:data:`CACHE_BYTES`).
Malformed files raise ``ValueError``/``FileNotFoundError`` naming
the file and what was expected; :func:`read_clam` finds them when the cohort is built (shapes, lengths,
empty slides and missing coords always, from the file headers; NaN / inf too when the features fit in
:data:`FULL_CHECK_BYTES` or with ``validate="full"``), not mid-training. ``.pt`` files are read with
``torch.load(weights_only=True)``: a crafted pickle is refused, nothing in it runs. A data root can come from
``MEDVLP_DATA`` (``<MEDVLP_DATA>/clam/<name>``).
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...utils import safe_torch_load
from ..pathology import Cohort, Slide
from .common import default_root as common_default_root
from .omics import read_omics_table

__all__ = ["write_clam", "read_clam", "load_slide_features", "slide_header", "default_root", "LAYOUT",
           "FULL_CHECK_BYTES", "CACHE_BYTES"]

LAYOUT = ("<root>/h5_files/<slide_id>.h5 (datasets 'features' [N, D] float32 and 'coords' [N, 2] int) "
          "or <root>/pt_files/<slide_id>.pt, plus <root>/labels.csv with columns case_id,slide_id,label; "
          "obtain: extract patch features from the slides (e.g. TCGA diagnostic slides from the GDC portal, "
          "https://portal.gdc.cancer.gov) with CLAM (https://github.com/mahmoodlab/CLAM) or TRIDENT "
          "(https://github.com/mahmoodlab/TRIDENT)")
CACHE_BYTES = 4 << 30
"""Default byte bound of :func:`read_clam`'s slide cache (4 GiB, about 100 slides of 6,300 x 1,536 float32)."""
FULL_CHECK_BYTES = 1 << 30
"""``read_clam(validate="auto")`` reads every feature file at construction (NaN / inf check) when the
features total at most this many bytes (1 GiB); above it only the headers are checked then."""


def default_root(name: str = "tcga_brca") -> Path:
    """``$MEDVLP_DATA/clam/<name>``; raises ``FileNotFoundError`` naming the layout if ``MEDVLP_DATA`` is not set."""
    return common_default_root(f"clam/{name}", LAYOUT)


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
    _check_shapes(path, feats.shape, coords.shape)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(1).sum())
        raise ValueError(f"{path}: 'features' contain NaN/inf in {bad} of {feats.shape[0]} patches")


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e


def _require_datasets(path: Path, f, need: tuple[str, ...]) -> None:
    for key in need:
        if key not in f:
            raise ValueError(f"{path}: missing dataset {key!r}; found {sorted(f.keys())}, expected 'features' "
                             "[N, D] float32 and 'coords' [N, 2] int")


def _read_h5(path: Path, need: tuple[str, ...] = ("features", "coords")) -> dict:
    out = {}
    with _open_h5(path) as f:
        _require_datasets(path, f, need)
        for key in ("features", "coords", "signal_mask", "tissue"):
            if key in f:
                out[key] = f[key][()]
    return out


def _slide_files(root: Path, slide_id: str, fmt: str) -> tuple[bool, Path, Path]:
    """``(use_pt, h5 path, pt path)`` of one slide; ``FileNotFoundError`` naming the file that must exist."""
    if fmt not in ("auto", "h5", "pt"):
        raise ValueError(f"fmt must be 'auto', 'h5' or 'pt', got {fmt!r}")
    h5 = root / "h5_files" / f"{slide_id}.h5"
    pt = root / "pt_files" / f"{slide_id}.pt"
    use_pt = fmt == "pt" or (fmt == "auto" and pt.exists() and not h5.exists())
    need = pt if use_pt else h5
    if not need.exists():
        raise FileNotFoundError(f"missing feature file {need}; expected layout: {LAYOUT}")
    return use_pt, h5, pt


def _pt_features(pt: Path, mmap: bool = False):
    """``(features tensor, coords or None)`` from a pt file (read with ``weights_only=True``)."""
    obj = safe_torch_load(pt, "feature file", mmap=mmap)
    if isinstance(obj, dict):
        if "features" not in obj:
            raise ValueError(f"{pt}: dict without 'features'; found keys {sorted(map(str, obj))}")
        feats, coords = obj["features"], obj.get("coords")
    elif isinstance(obj, torch.Tensor):
        feats, coords = obj, None
    else:
        raise ValueError(f"{pt}: expected a features tensor [N, D] or a dict with 'features' and 'coords', "
                         f"got {type(obj).__name__}")
    if not isinstance(feats, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{pt}: 'features' is a {type(feats).__name__}, expected a tensor [N, D]")
    return feats, coords


def _check_shapes(path: Path, fshape: tuple, cshape: tuple) -> int:
    """Shape checks of :func:`_check_arrays` from shapes alone; returns the feature dim ``D``."""
    if len(fshape) != 2:
        raise ValueError(f"{path}: 'features' must be 2-D [N, D], got shape {tuple(fshape)}")
    if fshape[0] == 0:
        raise ValueError(f"{path}: empty slide (0 patches); expected 'features' [N, D] with N >= 1")
    if len(cshape) != 2 or cshape[1] != 2:
        raise ValueError(f"{path}: 'coords' must be [N, 2], got shape {tuple(cshape)}")
    if cshape[0] != fshape[0]:
        raise ValueError(f"{path}: N mismatch: 'features' has {fshape[0]} rows but 'coords' has "
                         f"{cshape[0]}; expected one (x, y) per patch")
    return int(fshape[1])


def slide_header(root: str | Path, slide_id: str, fmt: str = "auto") -> dict:
    """Check one slide's files from their headers, without reading the features: ``{"path", "n", "dim",
    "nbytes"}``.

    Checked: the feature file exists and is readable (h5: HDF5; pt: a torch file read with
    ``weights_only=True``, storage memory-mapped), ``features`` is [N, D] with N >= 1, coords [N, 2] exist
    (in the pt dict or the matching h5) with the same N. Not checked here: NaN / inf values (that needs the
    data; :func:`load_slide_features` checks them). Errors name the file.
    """
    root = Path(root)
    use_pt, h5, pt = _slide_files(root, slide_id, fmt)
    if use_pt:
        feats, coords = _pt_features(pt, mmap=True)
        fshape, path = tuple(feats.shape), pt
        if coords is None:
            if not h5.exists():
                raise ValueError(f"{pt} holds features only and {h5} (with 'coords') does not exist; the patch "
                                 "graph needs coords [N, 2]")
            with _open_h5(h5) as f:
                _require_datasets(h5, f, ("coords",))
                cshape = tuple(f["coords"].shape)
        else:
            cshape = tuple(np.shape(coords))
        itemsize = feats.element_size() if isinstance(feats, torch.Tensor) else feats.itemsize
    else:
        path = h5
        with _open_h5(h5) as f:
            _require_datasets(h5, f, ("features", "coords"))
            fshape, cshape = tuple(f["features"].shape), tuple(f["coords"].shape)
            itemsize = f["features"].dtype.itemsize
    if len(fshape) == 3 and fshape[0] == 1:  # [1, N, D], as some extractors save it
        fshape = fshape[1:]
    dim = _check_shapes(path, fshape, cshape)
    n = int(fshape[0])
    return {"path": path, "n": n, "dim": dim, "nbytes": n * dim * int(itemsize)}


def load_slide_features(root: str | Path, slide_id: str, fmt: str = "auto") -> dict:
    """Load one slide's arrays ``{"features", "coords", ["signal_mask", "tissue"]}`` with validation (shapes as
    :func:`slide_header`, plus finite features and numeric coords); errors name the file."""
    root = Path(root)
    use_pt, h5, pt = _slide_files(root, slide_id, fmt)
    if use_pt:
        feats, coords = _pt_features(pt)
        path = pt
        if coords is None:
            if not h5.exists():
                raise ValueError(f"{pt} holds features only and {h5} (with 'coords') does not exist; the patch "
                                 "graph needs coords [N, 2]")
            coords = _read_h5(h5, need=("coords",))["coords"]
        arrays = {"features": torch.as_tensor(feats).float().numpy(), "coords": np.asarray(coords)}
    else:
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
              cache_slides: int | None = None, cache_bytes: int | None = CACHE_BYTES, name: str | None = None,
              validate: str = "auto") -> Cohort:
    """Read a CLAM-layout folder into a lazily loaded :class:`Cohort` (see module docstring).

    Every slide file listed in the labels CSV must exist (``missing="error"``), or missing ones are
    dropped with a warning giving their count (``missing="skip"``). Labels are integers 0/1, or strings
    mapped by ``label_map`` (e.g. ``{"Negative": 0, "Positive": 1}``). ``omics.csv`` (if present; read with
    :func:`~medvlp_lib.data.real.omics.read_omics_table`, either orientation) gives each slide its case's omics
    vector as it is on disk; otherwise (and for a case without a row) ``Slide.omics`` is empty. For a raw
    genes x cases expression table use :func:`~medvlp_lib.data.real.omics.omics_cohort` (the public code's gene
    selection) on the cohort instead.

    Memory: slides are read from disk when first used and kept in a least-recently-used cache of at most
    ``cache_bytes`` bytes (default :data:`CACHE_BYTES`, 4 GiB; ``None`` = no byte bound) and / or
    ``cache_slides`` slides; ``cache=False`` keeps none. At TCGA scale (about 1,000 slides x 6,300 patches x
    1,536 float32 features, ~39 GB on disk) host memory then holds at most the cache (plus the slide being read,
    and, in training, :class:`~medvlp_lib.data.pathology.SlideBatches`' cache of the same bound) instead of
    everything. ``cohort.cache_info()`` reports what is held and the peaks.

    What is checked when (policy: a malformed slide stops with a ``ValueError`` naming its file; one error
    lists every malformed slide found at construction):

    * at construction, always (``validate="headers"``, cheap: h5 dataset shapes / memory-mapped pt tensors,
      :func:`slide_header`): readable files, ``features`` [N, D] with N >= 1 (no empty slide), ``coords``
      present with shape [N, 2] and the same N, one feature dim D for every slide;
    * at construction as well with ``validate="full"`` (reads every file once): finite features (no NaN / inf)
      and numeric coords; ``validate="auto"`` (default) does this when the features total at most
      :data:`FULL_CHECK_BYTES` and otherwise leaves it to the first read of each slide, which runs the same
      checks (:func:`load_slide_features`) and raises naming the file;
    * ``validate="none"``: nothing at construction (every check at first read).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CLAM feature folder {root} does not exist; expected layout: {LAYOUT}")
    if not (root / "h5_files").is_dir() and not (root / "pt_files").is_dir():
        raise FileNotFoundError(f"{root} has neither h5_files/ nor pt_files/; expected layout: {LAYOUT}")
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    if validate not in ("auto", "headers", "full", "none"):
        raise ValueError(f"validate must be 'auto', 'headers', 'full' or 'none', got {validate!r}")
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
            table = read_omics_table(om_path)
            rows, _ = table.match(case_ids, missing="skip")
            omics = {c: table.values[r] for c, r in zip(case_ids, rows) if r >= 0}

    checked = _validate_slides(root, slide_ids, fmt, validate)

    def load(i: int) -> Slide:
        arr = load_slide_features(root, slide_ids[i], fmt)
        n = arr["features"].shape[0]
        mask = np.asarray(arr.get("signal_mask", np.zeros(n, bool)), bool)
        tissue = np.asarray(arr.get("tissue", np.full(n, -1)), np.int64)
        return Slide(slide_ids[i], case_ids[i], arr["features"], arr["coords"],
                     omics.get(case_ids[i], np.zeros(0, np.float32)), labels[i], mask, tissue)

    return Cohort(slide_ids, case_ids, labels, load, cache=cache, cache_slides=cache_slides,
                  cache_bytes=cache_bytes if cache else None, name=name or root.name,
                  info={"root": str(root), "skipped": dropped, "has_omics": bool(omics), "validated": checked})


def _validate_slides(root: Path, slide_ids: Sequence[str], fmt: str, validate: str) -> str:
    """The construction-time checks of :func:`read_clam`; returns what was checked (``"none"`` / ``"headers"``
    / ``"full"``)."""
    if validate == "none":
        return "none"
    problems, headers = [], {}
    for sid in slide_ids:
        try:
            headers[sid] = slide_header(root, sid, fmt)
        except (ValueError, FileNotFoundError) as err:
            problems.append(str(err))
    dims: dict[int, list[str]] = {}
    for sid, h in headers.items():
        dims.setdefault(h["dim"], []).append(sid)
    if len(dims) > 1:
        common = max(dims, key=lambda d: len(dims[d]))
        for d, sids in dims.items():
            if d != common:
                problems.append(f"{headers[sids[0]]['path']}: feature dim D={d} but {len(dims[common])} other "
                                f"slide(s) have D={common} ({len(sids)} slide(s) with D={d})")
    full = validate == "full" or (validate == "auto" and sum(h["nbytes"] for h in headers.values()) <= FULL_CHECK_BYTES)
    if full and not problems:
        for sid in slide_ids:
            try:
                load_slide_features(root, sid, fmt)
            except (ValueError, FileNotFoundError) as err:
                problems.append(str(err))
    if problems:
        raise ValueError(f"read_clam: {len(problems)} problem(s) in the feature files of {root} (of "
                         f"{len(slide_ids)} slides): " + "; ".join(problems[:5])
                         + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return "full" if full else "headers"
