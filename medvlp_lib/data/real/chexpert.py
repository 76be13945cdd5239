"""CheXpert (Irvin et al., 2019), the ``CheXpert-v1.0-small`` release, and the CheXpert 5x200 protocol of GLoRIA / MGCA.

On-disk layout (the Stanford download, unzipped under ``$MEDVLP_DATA``)::

    <root>/                                      (default: $MEDVLP_DATA/CheXpert-v1.0-small)
      train.csv  valid.csv  [test.csv]           Path,Sex,Age,Frontal/Lateral,AP/PA,<14 observations>
      train/patient00001/study1/view1_frontal.jpg   images, ~390 x 320 JPEG
      valid/patient64541/study1/view1_frontal.jpg

``Path`` reads ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``: its first folder is the release
folder, resolved as ``<root>`` whatever the folder is called (a ``Path`` that starts with ``train/``, ``valid/`` or
``test/``, as in the CheXlocalize ``test.csv``, is read relative to ``<root>``). A ``<root>`` that holds
``CheXpert-v1.0-small/`` instead of the CSVs is followed into it. Download (registration):
https://stanfordmlgroup.github.io/competitions/chexpert/ . The training label CSV also ships inside
torchxrayvision (``chexpert_train.csv.gz``; :func:`read_chexpert_csv` reads it).

Labels: the 14 observations, each ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not
mentioned, read as negative); the validation set (radiologist consensus) has 0 / 1 only. ``uncertain`` is the
policy for ``-1`` (Irvin et al., 2019): ``"zeros"`` (U-Zeros, default), ``"ones"`` (U-Ones), ``"ignore"``
(U-Ignore: the entry is masked, ``label_mask`` 0, and its label reads 0), or a dict ``{observation: policy}`` for
a per-observation choice (:data:`UNCERTAIN_MGCA` is the one MGCA / GLoRIA fine-tune with: U-Ones for
atelectasis, edema, effusion; U-Zeros for cardiomegaly, consolidation; observations not in the dict use
``"zeros"``). ``labels="library"`` (default) maps the observations onto the book's label names
(:data:`~medvlp_lib.data.real.mimic_cxr.LIBRARY_MAP`, as :class:`~medvlp_lib.data.real.mimic_cxr.MIMICCXR`;
positive if any mapped observation is; with ``"ignore"`` a book label is masked when none of its observations is
positive and one is uncertain); ``labels="chexpert"`` keeps the 14 observations (in
:data:`~medvlp_lib.data.real.mimic_cxr.CHEXPERT_LABELS` order).

What is kept: frontal views (``views=("Frontal",)``; ``("Frontal", "Lateral")`` for all), images listed but not on
disk are skipped and counted (``dataset.skipped``), a corrupt image stops with its path (policies:
:mod:`medvlp_lib.data.real.common`). There are no reports in the public release: ``text`` is ``""`` unless the CSV
has a ``Report Impression`` column (Stanford's internal master table, what GLoRIA retrieves against).

Items: ``dict(image=FloatTensor[1, size, size] in [0, 1], text=str, labels=FloatTensor[L], label_mask=FloatTensor[L]
(1 = the label is known), index=int, uid=str (the CSV Path))``; attributes ``uids``, ``files``, ``texts``,
``labels``, ``label_mask``, ``label_names``, ``raw_labels`` (float32 [N, 14] as in the CSV, NaN = blank),
``patient_ids``, ``study_ids``, ``sexes``, ``ages``, ``views``, ``projections`` (AP / PA).

CheXpert 5x200 (:func:`chexpert_5x200`): the class-level retrieval / zero-shot benchmark of GLoRIA (Huang et al.,
2021) and MGCA (Wang et al., 2022): 200 frontal images for each of Atelectasis, Cardiomegaly, Consolidation, Edema
and Pleural Effusion, drawn with a seed.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ...utils import check_seed
from .common import RealCXRDataset, dataset_root
from .mimic_cxr import CHEXPERT_LABELS, LIBRARY_MAP

__all__ = ["CheXpert", "read_chexpert_csv", "chexpert_5x200", "chexpert_5x200_rows", "chexpert_image_path",
           "CHEXPERT_5", "CHEXPERT_5_LIBRARY", "UNCERTAIN_MGCA", "LAYOUT", "RELEASE", "META_COLUMNS"]

RELEASE = "CheXpert-v1.0-small"
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CHEXPERT_5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five competition observations (the 5x200 classes and the 5-label AUC), in the protocol's order."""
CHEXPERT_5_LIBRARY: dict[str, str] = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly",
                                      "Consolidation": "opacity", "Edema": "edema",
                                      "Pleural Effusion": "pleural_effusion"}
"""The book's label (and zero-shot prompt set) of each 5x200 class; consolidation is one of the ``opacity``
prompts' subtypes."""
UNCERTAIN_MGCA: dict[str, str] = {"Atelectasis": "ones", "Cardiomegaly": "zeros", "Consolidation": "zeros",
                                  "Edema": "ones", "Pleural Effusion": "ones"}
"""MGCA's ``CHEXPERT_UNCERTAIN_MAPPINGS`` (the best single policy per observation in Irvin et al., 2019)."""
LAYOUT = (f"<root>/{{train,valid}}.csv (Path,Sex,Age,Frontal/Lateral,AP/PA,<14 observations>) and images "
          f"<root>/{{train,valid}}/patientXXXXX/studyN/viewN_frontal.jpg, <root> = the unzipped {RELEASE} folder "
          f"(CSV Paths start with {RELEASE}/); download: https://stanfordmlgroup.github.io/competitions/chexpert/")
SPLIT_ALIASES = {"val": "valid", "validate": "valid", "validation": "valid"}
POLICIES = ("zeros", "ones", "ignore")
_POLICY_ALIASES = {"zero": "zeros", "one": "ones", "u-zeros": "zeros", "u-ones": "ones", "u-ignore": "ignore"}


def read_chexpert_csv(path: str | os.PathLike):
    """A CheXpert label CSV as a pandas DataFrame (``Path`` etc. as strings, the 14 observations as float with NaN
    for blank), validated: ``ValueError`` naming the file for a missing column or a label outside {1, 0, -1}."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CheXpert label CSV {path} not found; expected layout {LAYOUT}")
    df = pd.read_csv(path, dtype={c: str for c in (*META_COLUMNS, *CHEXPERT_LABELS)})
    missing = [c for c in (*META_COLUMNS, *CHEXPERT_LABELS) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected Path,Sex,Age,Frontal/Lateral,AP/PA and the 14 "
                         f"observations, got {list(df.columns)}")
    for c in CHEXPERT_LABELS:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = (v.notna() & ~v.isin([1.0, 0.0, -1.0])) | (v.isna() & df[c].notna())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}, line {row + 2}: column {c!r} must be 1, 0, -1 or blank, got {df[c].iloc[row]!r}")
        df[c] = v.astype(np.float32)
    return df


def chexpert_image_path(root: Path, csv_path: str) -> Path:
    """The file of a CSV ``Path`` under ``root`` (see the module docstring)."""
    parts = Path(str(csv_path).strip()).parts
    if not parts:
        raise ValueError("empty CheXpert Path")
    return Path(root).joinpath(*(parts if parts[0] in ("train", "valid", "test") else parts[1:]))


def _policies(uncertain) -> list[str]:
    """One policy per observation (CHEXPERT_LABELS order)."""
    def one(p, what):
        p = _POLICY_ALIASES.get(str(p).lower(), str(p).lower())
        if p not in POLICIES:
            raise ValueError(f"{what} must be 'zeros' (U-Zeros), 'ones' (U-Ones) or 'ignore' (U-Ignore), got {p!r}")
        return p

    if isinstance(uncertain, Mapping):
        unknown = sorted(set(uncertain) - set(CHEXPERT_LABELS))
        if unknown:
            raise ValueError(f"uncertain: unknown observation(s) {unknown}; known: {list(CHEXPERT_LABELS)}")
        return [one(uncertain.get(c, "zeros"), f"uncertain[{c!r}]") for c in CHEXPERT_LABELS]
    return [one(uncertain, "uncertain")] * len(CHEXPERT_LABELS)


class CheXpert(RealCXRDataset):
    """CheXpert-v1.0-small images with the 14 observations (layout and label policies in the module docstring).

    Parameters: ``root`` (default ``$MEDVLP_DATA/CheXpert-v1.0-small``), ``split`` (``"train"``, ``"valid"``
    (``"val"``), ``"test"`` when a ``test.csv`` is there), ``size`` (output side; padded to square then resized),
    ``views`` (``Frontal/Lateral`` values kept), ``uncertain``, ``labels`` (``"library"`` or ``"chexpert"``),
    ``csv_path`` (overrides ``<root>/<split>.csv``), ``n`` / ``seed`` (a seeded subset), ``check`` (decode every
    image at construction).
    """

    ITEM_FIELDS = ("uids", "files", "texts", "labels", "label_mask", "raw_labels", "patient_ids", "study_ids",
                   "sexes", "ages", "views", "projections")

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", size: int = 224,
                 views: Sequence[str] = ("Frontal",), uncertain: str | Mapping[str, str] = "zeros",
                 labels: str = "library", csv_path: str | os.PathLike | None = None, n: int | None = None,
                 seed: int = 0, check: bool = False):
        import pandas as pd

        root = dataset_root(root, RELEASE, LAYOUT, "CheXpert")
        if not (root / "train.csv").exists() and (root / RELEASE / "train.csv").exists():
            root = root / RELEASE
        split = SPLIT_ALIASES.get(split, split)
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' (val) or 'test', got {split!r}")
        if labels not in ("library", "chexpert"):
            raise ValueError(f"labels must be 'library' or 'chexpert', got {labels!r}")
        if isinstance(views, str):
            raise TypeError(f"views must be a sequence of Frontal/Lateral values such as ('Frontal',), got {views!r}")
        policies = _policies(uncertain)
        csv_path = Path(csv_path) if csv_path is not None else root / f"{split}.csv"
        df = read_chexpert_csv(csv_path)
        df = df[df["Frontal/Lateral"].isin(list(views))].reset_index(drop=True)
        self.root, self.split, self.size, self.uncertain = root, split, int(size), uncertain
        raw = df[list(CHEXPERT_LABELS)].to_numpy(np.float32)          # NaN = blank
        value, known = np.nan_to_num(raw, nan=0.0), np.ones_like(raw)
        for j, p in enumerate(policies):
            unc = raw[:, j] == -1
            value[unc, j] = 1.0 if p == "ones" else 0.0
            if p == "ignore":
                known[unc, j] = 0.0
        if labels == "chexpert":
            self.label_names, lab, mask = CHEXPERT_LABELS, value, known
        else:
            self.label_names = tuple(LIBRARY_MAP)
            col = {c: j for j, c in enumerate(CHEXPERT_LABELS)}
            groups = [[col[c] for c in LIBRARY_MAP[name]] for name in self.label_names]
            lab = np.stack([value[:, g].max(1) for g in groups], 1)
            # a book label is known when one of its observations is a known positive, or all of them are known
            mask = np.stack([np.maximum((value[:, g] * known[:, g]).max(1), known[:, g].min(1)) for g in groups], 1)
        parts = df["Path"].str.split("/")
        files = [chexpert_image_path(root, p) for p in df["Path"]]
        self.uids, self.files = list(df["Path"]), files
        self.texts = (list(df["Report Impression"].fillna("").astype(str)) if "Report Impression" in df.columns
                      else [""] * len(df))
        self.labels = np.ascontiguousarray(lab, np.float32)
        self.label_mask = np.ascontiguousarray(mask, np.float32)
        self.raw_labels = np.ascontiguousarray(raw, np.float32)
        self.patient_ids = [next((q for q in ps if q.startswith("patient")), "") for ps in parts]
        self.study_ids = [next((q for q in ps if q.startswith("study")), "") for ps in parts]
        self.sexes = list(df["Sex"].fillna(""))
        self.ages = pd.to_numeric(df["Age"], errors="coerce").to_numpy(np.float32)
        self.views = list(df["Frontal/Lateral"])
        self.projections = list(df["AP/PA"].fillna(""))
        self._keep(k for k, f in enumerate(files) if f.exists())
        self._finish(listed=len(files), where=root, n=n, seed=seed, check=check,
                     empty=f"no {split} image of views {tuple(views)} listed in {csv_path} was found under {root}; "
                           f"expected layout {LAYOUT}")

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["label_mask"] = torch.from_numpy(self.label_mask[item["index"]].copy())
        return item

    def __repr__(self) -> str:
        return f"CheXpert(split={self.split!r}, n={len(self)}, size={self.size}, skipped={self.skipped})"


def chexpert_5x200_rows(raw_labels: np.ndarray, n_per_class: int = 200, seed: int = 0,
                        rule: str = "five") -> tuple[np.ndarray, np.ndarray]:
    """``(rows, class index)`` of the 5x200 draw from a raw label matrix [N, 14] (``CHEXPERT_LABELS`` order; 1 / 0
    / -1 / NaN), classes in :data:`CHEXPERT_5` order, each class's rows in draw order.

    Eligible for class ``c``: ``rule="five"`` (default; the protocol as the papers state it) -- ``c`` is positive
    (1) and none of the other four of the five is (U-Zeros on the five: -1 and blank count as not positive);
    ``rule="mgca"`` -- the public GLoRIA / MGCA preprocessing: ``c`` is 1 and each of the twelve other
    observations except No Finding is 0 or blank (an uncertain -1 anywhere excludes the image). The draw is
    ``numpy.random.RandomState(seed).choice(eligible, n_per_class, replace=False)`` per class, which is what
    pandas' ``DataFrame.sample(n, random_state=seed)`` in that code does: on the full frontal training CSV,
    ``rule="mgca", seed=0`` gives their subset. Fewer than ``n_per_class`` eligible images is a ``ValueError``
    naming the class and the count.
    """
    seed = check_seed(seed)
    if rule not in ("five", "mgca"):
        raise ValueError(f"rule must be 'five' or 'mgca', got {rule!r}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    raw = np.asarray(raw_labels, np.float32)
    if raw.ndim != 2 or raw.shape[1] != len(CHEXPERT_LABELS):
        raise ValueError(f"raw_labels must be [N, {len(CHEXPERT_LABELS)}] in CHEXPERT_LABELS order, got {raw.shape}")
    col = {c: j for j, c in enumerate(CHEXPERT_LABELS)}
    five = [col[c] for c in CHEXPERT_5]
    rows, cls = [], []
    for k, c in enumerate(CHEXPERT_5):
        target = raw[:, col[c]] == 1
        if rule == "five":
            others = [j for j in five if j != col[c]]
            ok = target & ~(raw[:, others] == 1).any(1)
        else:
            others = [j for j, name in enumerate(CHEXPERT_LABELS) if name not in (c, "No Finding")]
            ok = target & (np.nan_to_num(raw[:, others], nan=0.0) == 0).all(1)
        eligible = np.flatnonzero(ok)
        if eligible.size < n_per_class:
            raise ValueError(f"CheXpert 5x200 ({rule!r}): only {eligible.size} eligible images for {c!r}, "
                             f"{n_per_class} requested")
        pick = eligible[np.random.RandomState(seed).choice(eligible.size, n_per_class, replace=False)]
        rows.append(pick)
        cls.append(np.full(n_per_class, k, np.int64))
    return np.concatenate(rows), np.concatenate(cls)


def chexpert_5x200(dataset: CheXpert, n_per_class: int = 200, seed: int = 0, rule: str = "five") -> CheXpert:
    """The CheXpert 5x200 subset of ``dataset`` (use the frontal training images: ``CheXpert(split="train")``;
    eligibility and draw in :func:`chexpert_5x200_rows`).

    Returns a copy of the dataset restricted to the drawn images (class by class) whose ``labels`` are the one-hot
    class [N, 5] (``label_names`` the book's names, :data:`CHEXPERT_5_LIBRARY`, for ``labels="library"``, else
    :data:`CHEXPERT_5`), ``label_mask`` all ones, ``classes`` that name tuple and ``class_index`` int64 [N]: ready
    for :func:`~medvlp_lib.eval.retrieval.class_precision_at_k` and zero-shot classification by arg-max.
    """
    if not isinstance(dataset, CheXpert):
        raise TypeError(f"chexpert_5x200 needs a CheXpert dataset, got {type(dataset).__name__}")
    rows, cls = chexpert_5x200_rows(dataset.raw_labels, n_per_class, seed, rule)
    sub = copy.copy(dataset)
    sub._keep(rows)
    if dataset._images is not None:
        sub._images = dataset._images[rows]
    library = dataset.label_names == tuple(LIBRARY_MAP)
    sub.classes = tuple(CHEXPERT_5_LIBRARY[c] for c in CHEXPERT_5) if library else CHEXPERT_5
    sub.label_names = sub.classes
    sub.class_index = cls
    sub.labels = np.eye(len(CHEXPERT_5), dtype=np.float32)[cls]
    sub.label_mask = np.ones_like(sub.labels)
    sub.protocol = {"name": "chexpert_5x200", "n_per_class": int(n_per_class), "seed": int(seed), "rule": rule}
    return sub
