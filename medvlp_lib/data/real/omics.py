"""Omics tables for MoMKD (genes x cases, e.g. TCGA RNA-seq) and the public MoMKD code's gene selection, as a step.

On-disk table (what the public code reads as ``TCGA_gene.csv``)::

    <file>.csv | .tsv | .txt  [.gz]      rows = genes, columns = case ids; the first column names the gene
        gene,TCGA-A1-A0SB-01,TCGA-A1-A0SD-01,...
        ESR1,1523.2,88.0,...             expression >= 0 (counts, TPM, FPKM, RSEM: anything log2(x + 1) suits)

The separator follows the suffix (``.tsv`` / ``.txt``: tab, else comma). A table whose first header cell is
``case_id`` is read the other way round (rows = cases, columns = genes: the ``omics.csv`` that
:func:`~medvlp_lib.data.real.clam_features.write_clam` writes). Obtain TCGA expression tables from the GDC portal
(https://portal.gdc.cancer.gov) or UCSC Xena (https://xenabrowser.net); the public MoMKD code
(https://github.com/CAIR-LAB-WFUSM/MoMKD, ``gene_selection/``) expects the file to be downloaded by the user.

Matching cases (:meth:`OmicsTable.match`): a CLAM ``case_id`` matches a column with the same id, else the one
column whose id starts with ``<case_id>-`` (TCGA sample barcodes ``TCGA-A1-A0SB-01A`` extend the case id
``TCGA-A1-A0SB``; where a case has several samples the primary tumour ``-01`` is taken; several primary-tumour
columns are an error naming them). Cases without a column are an error naming them, or are dropped with a
warning naming them (:func:`drop_cases_without_omics`).

Gene selection (:func:`select_genes`), the public code's ``gene_selection/`` pipeline:

1. ``x -> log2(x + 1)`` (a negative value is an error naming the gene and case: that table is already logged);
2. standardise every gene with the mean and standard deviation of the *training cases* (scikit-learn's
   ``StandardScaler``: population std; a constant gene gets scale 1);
3. fit a gradient-boosted tree classifier on the training cases' labels with the public code's settings: 100
   trees, depth 3, learning rate 0.01. The public code uses XGBoost (``XGBClassifier``; importance = gain);
   ``method="sklearn"`` (the default, offline) uses scikit-learn's ``GradientBoostingClassifier`` with the same
   settings (importance = the splits' loss reduction, normalised): the same idea with a different tree learner,
   so individual ranks differ; ``method="xgboost"`` runs the public code's classifier when ``xgboost`` is installed;
4. keep the ``n_genes`` (768 in the public script) most important genes. 100 trees of depth 3 have at most 700
   split nodes, so at most 700 genes get a non-zero importance: the rest of the 768 are ties at zero, kept here in
   table order (deterministic; the public code takes whatever its unstable sort returns);
5. every case's omics vector is its standardised ``log2(x + 1)`` of the selected genes, in rank order (the public
   code's exported ``.npy`` per case).

Which cases the selection sees (:func:`omics_cohort`): ``selection="per_fold"`` (the default here) fits steps 2-4
on the training cases of each cross-validation fold, so no held-out label chooses a gene. ``selection="global"``
is the public code: one stratified 80 / 20 split of *all* cases (``train_test_split(test_size=0.2,
stratify=labels, random_state=seed)``; their script uses seed 1), fit on the 80 %, applied to every case. The
folds' test cases are then mostly among the 80 %: their labels leak into the gene choice. It is offered to
reproduce the paper's pipeline, not as the default.

``prefilter`` (not in the public code, off by default) keeps the most variable genes of the training cases (after
``log2``) before the tree classifier: unsupervised, so it leaks nothing, and about ``genes / prefilter`` times
faster (scikit-learn's classifier takes minutes on 20,000 genes x 800 cases).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...utils import check_seed
from ..pathology import Cohort, Slide

__all__ = ["OmicsTable", "GeneSelection", "read_omics_table", "select_genes", "public_code_split", "omics_cohort",
           "with_omics", "case_labels", "drop_cases_without_omics", "LAYOUT", "GBT_SETTINGS", "N_GENES"]

LAYOUT = ("a CSV / TSV (optionally .gz) with rows = genes and columns = case ids, the first column the gene name "
          "(the public MoMKD code's TCGA_gene.csv; e.g. TCGA RNA-seq from https://portal.gdc.cancer.gov or "
          "https://xenabrowser.net), or rows = cases with a first header cell 'case_id'")
GBT_SETTINGS = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.01}
"""The public MoMKD code's gradient-boosted tree settings (``gene_selection/src/feature_selection.py``)."""
N_GENES = 768
"""Genes kept by the public code's script (``gene_select.sh``), the omics width of MoMKD."""


@dataclass(frozen=True)
class OmicsTable:
    """An omics table held as ``values`` float32 [cases, genes] (whatever the orientation on disk)."""

    genes: tuple[str, ...]
    cases: tuple[str, ...]
    values: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.cases), len(self.genes)):
            raise ValueError(f"omics values must be [cases={len(self.cases)}, genes={len(self.genes)}], got "
                             f"{self.values.shape}")

    def match(self, case_ids: Sequence[str], missing: str = "error") -> tuple[np.ndarray, list[str]]:
        """``(rows, missing cases)``: ``rows[k]`` is the table row of ``case_ids[k]`` (-1 if it has none; see the
        module docstring for the rule). ``missing="error"`` raises ``KeyError`` naming every case without a
        column and the file; ``"skip"`` returns them."""
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        exact = {c: k for k, c in enumerate(self.cases)}
        rows, absent = [], []
        for case in dict.fromkeys(str(c) for c in case_ids):
            if case in exact:
                rows.append(exact[case])
                continue
            cand = [k for k, c in enumerate(self.cases) if c.startswith(case + "-")]
            if len(cand) > 1:
                cand = [k for k in cand if self.cases[k][len(case) + 1:].startswith("01")]
                if len(cand) != 1:
                    raise ValueError(f"{self.where}: case {case!r} matches several columns "
                                     f"{[self.cases[k] for k in cand] or 'none of them a primary tumour (-01)'}; "
                                     f"rename the one to use to {case!r}")
            rows.append(cand[0] if cand else -1)
            if not cand:
                absent.append(case)
        if absent and missing == "error":
            raise KeyError(f"{self.where}: no omics for {len(absent)} of {len(rows)} cases: {absent[:10]}"
                           + (" ..." if len(absent) > 10 else "") + "; expected a column per case_id of the labels "
                           "CSV (drop_cases_without_omics leaves their slides out)")
        pos = {c: r for c, r in zip(dict.fromkeys(str(c) for c in case_ids), rows)}
        return np.asarray([pos[str(c)] for c in case_ids], np.int64), absent

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "omics table"


def read_omics_table(path: str | os.PathLike, orientation: str = "auto") -> OmicsTable:
    """Read an omics table (layout in the module docstring). ``orientation``: ``"genes_x_cases"`` (TCGA-style),
    ``"cases_x_genes"`` or ``"auto"`` (``cases_x_genes`` when the first header cell is ``case_id``).

    Errors name the file: missing, empty, a non-numeric or missing value (with its gene and case), duplicate case
    ids. Duplicate gene names are made unique as the public code does (``ESR1``, ``ESR1.1``, ...)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"omics table {path} not found; expected {LAYOUT}")
    if orientation not in ("auto", "genes_x_cases", "cases_x_genes"):
        raise ValueError(f"orientation must be 'auto', 'genes_x_cases' or 'cases_x_genes', got {orientation!r}")
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    sep = "\t" if stem.endswith((".tsv", ".txt")) else ","
    try:  # header=None: pandas would rename a repeated column name ("A", "A.1") without a word
        raw = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable {'TSV' if sep == chr(9) else 'CSV'} table ({err}); expected "
                         f"{LAYOUT}") from None
    if raw.shape[0] < 2 or raw.shape[1] < 2:
        raise ValueError(f"{path}: no rows or no columns; expected {LAYOUT}")
    header = [str(h).strip() for h in raw.iloc[0]]
    df = pd.DataFrame(raw.iloc[1:, 1:].to_numpy(), index=list(raw.iloc[1:, 0]), columns=header[1:])
    by_case = orientation == "cases_x_genes" or (orientation == "auto" and header[0] == "case_id")
    if not by_case:
        df = df.T
    df.index = [str(i).strip() for i in df.index]
    df.columns = _unique([str(c).strip() for c in df.columns])
    dup = df.index[df.index.duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: case id(s) {dup[:5]} appear more than once")
    values = df.apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise ValueError(f"{path}: {int(bad.sum())} missing or non-numeric value(s), e.g. gene {df.columns[c]!r} of "
                         f"case {df.index[r]!r}: {df.iat[r, c]!r}")
    return OmicsTable(tuple(df.columns), tuple(df.index), np.ascontiguousarray(values), path)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}.{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


@dataclass(frozen=True)
class GeneSelection:
    """The fitted selection: ``genes`` (kept, most important first), their ``importance``, and the ``mean`` /
    ``scale`` of their ``log2(x + 1)`` over the ``train_cases`` it was fit on; ``method`` names the classifier,
    ``selection`` says which cases it saw (``"per_fold"`` / ``"global"`` / ``"given"``)."""

    genes: tuple[str, ...]
    importance: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    train_cases: tuple[str, ...]
    method: str
    selection: str = "given"

    def transform(self, table: OmicsTable, case_ids: Sequence[str] | None = None,
                  missing: str = "error") -> dict[str, np.ndarray]:
        """``{case_id: float32 [n_genes]}``: standardised ``log2(x + 1)`` of the selected genes for ``case_ids``
        (default every case of the table); cases without omics are left out with ``missing="skip"``."""
        col = {g: j for j, g in enumerate(table.genes)}
        absent = [g for g in self.genes if g not in col]
        if absent:
            raise KeyError(f"{table.where}: selected gene(s) {absent[:5]} are not in the table")
        case_ids = list(table.cases) if case_ids is None else [str(c) for c in case_ids]
        rows, _ = table.match(case_ids, missing)
        x = _log2p1(table, rows[rows >= 0][:, None], np.asarray([col[g] for g in self.genes])[None])
        z = ((x - self.mean) / self.scale).astype(np.float32)
        kept = [c for c, r in zip(case_ids, rows) if r >= 0]
        return {c: z[k] for k, c in enumerate(kept)}


def _log2p1(table: OmicsTable, rows, cols) -> np.ndarray:
    x = table.values[rows, cols].astype(np.float64)
    if (x < 0).any():
        r, c = np.argwhere(x < 0)[0]
        raise ValueError(f"{table.where}: negative expression {x[r, c]} (gene {table.genes[int(np.ravel(cols)[c])]!r}, "
                         f"case {table.cases[int(np.ravel(rows)[r])]!r}); log2(x + 1) needs raw values >= 0 "
                         f"(is the table already log-transformed?)")
    return np.log2(x + 1.0)


def case_labels(cohort: Cohort) -> dict[str, int]:
    """``{case_id: label}`` of a cohort (one label per case, as :func:`~medvlp_lib.data.pathology.cv_folds`)."""
    out: dict[str, int] = {}
    for c, y in zip(cohort.case_ids, cohort.labels):
        if out.setdefault(c, int(y)) != int(y):
            raise ValueError(f"case {c!r} has slides with different labels; the gene selection needs one per case")
    return out


def select_genes(table: OmicsTable, case_ids: Sequence[str], labels: Sequence[int], *, n_genes: int = N_GENES,
                 method: str = "sklearn", seed: int = 0, prefilter: int | None = None,
                 selection: str = "given") -> GeneSelection:
    """Fit steps 1-4 of the module docstring on exactly the cases ``case_ids`` (the training cases) with their
    binary ``labels``; returns the :class:`GeneSelection` (apply it with :meth:`GeneSelection.transform`)."""
    seed = check_seed(seed)
    if method not in ("sklearn", "xgboost"):
        raise ValueError(f"method must be 'sklearn' (GradientBoostingClassifier) or 'xgboost', got {method!r}")
    if isinstance(n_genes, bool) or not isinstance(n_genes, (int, np.integer)) or n_genes < 1:
        raise ValueError(f"n_genes must be a positive integer, got {n_genes!r}")
    if n_genes > len(table.genes):
        raise ValueError(f"n_genes={n_genes} but {table.where} has {len(table.genes)} genes")
    case_ids = [str(c) for c in case_ids]
    y = np.asarray(labels, np.int64)
    if len(y) != len(case_ids) or not np.isin(y, (0, 1)).all() or len(np.unique(y)) < 2:
        raise ValueError(f"labels must be 0/1, one per case, with both classes present; got {len(y)} labels for "
                         f"{len(case_ids)} cases, classes {sorted(set(y.tolist()))}")
    rows, _ = table.match(case_ids)
    x = _log2p1(table, rows[:, None], np.arange(len(table.genes))[None])
    cols = np.arange(len(table.genes))
    if prefilter is not None and prefilter < len(cols):
        if prefilter < n_genes:
            raise ValueError(f"prefilter={prefilter} must be >= n_genes={n_genes}")
        cols = np.sort(np.argsort(-x.var(0), kind="stable")[:prefilter])
    mean, std = x.mean(0), x.std(0)
    scale = np.where(std > 0, std, 1.0)
    z = ((x[:, cols] - mean[cols]) / scale[cols]).astype(np.float32)
    if method == "sklearn":
        from sklearn.ensemble import GradientBoostingClassifier

        clf = GradientBoostingClassifier(**GBT_SETTINGS, random_state=seed)
    else:
        try:
            import xgboost
        except ImportError as err:
            raise ImportError("method='xgboost' needs the xgboost package (pip install xgboost); method='sklearn' "
                              "runs offline") from err
        clf = xgboost.XGBClassifier(objective="binary:logistic", eval_metric="logloss", n_jobs=-1,
                                    random_state=seed, **GBT_SETTINGS)
    clf.fit(z, y)
    imp = np.full(len(table.genes), -np.inf)  # genes left out by the prefilter rank last
    imp[cols] = np.asarray(clf.feature_importances_, np.float64)
    order = np.argsort(-imp, kind="stable")[:n_genes]
    return GeneSelection(tuple(table.genes[j] for j in order), imp[order], mean[order], scale[order],
                         tuple(case_ids), f"{method}:" + ",".join(f"{k}={v}" for k, v in GBT_SETTINGS.items()),
                         selection)


def public_code_split(case_ids: Sequence[str], labels: Sequence[int], seed: int = 1,
                      test_size: float = 0.2) -> list[str]:
    """The training cases of the public code's one split: ``train_test_split(test_size=0.2, stratify=labels,
    random_state=seed)`` over all cases (their ``gene_select.sh`` uses seed 1)."""
    from sklearn.model_selection import train_test_split

    seed = check_seed(seed)
    train, _ = train_test_split(list(case_ids), test_size=test_size, random_state=seed, stratify=list(labels))
    return list(train)


def with_omics(cohort: Cohort, omics: dict[str, np.ndarray], name: str | None = None) -> Cohort:
    """A view of ``cohort`` whose slides carry ``omics[case_id]`` (read through the cohort's cache; every case
    needs an entry, else ``KeyError`` naming the missing cases)."""
    absent = sorted(set(cohort.case_ids) - set(omics))
    if absent:
        raise KeyError(f"no omics for {len(absent)} case(s) of cohort {cohort.name!r}: {absent[:10]}")

    def attach(slide: Slide) -> Slide:
        return dataclasses.replace(slide, omics=np.asarray(omics[slide.case_id], np.float32))

    return cohort.map(attach, name=name)


def drop_cases_without_omics(cohort: Cohort, table: OmicsTable) -> tuple[Cohort, list[str]]:
    """``(sub-cohort of the slides whose case has an omics column, the cases left out)``; a warning names the
    cases left out. Call it before making the folds (the sub-cohort's indices are its own)."""
    _, absent = table.match(cohort.case_ids, missing="skip")
    if not absent:
        return cohort, []
    warnings.warn(f"{table.where}: no omics for {len(absent)} case(s) of cohort {cohort.name!r}, their slides are "
                  f"left out: {absent[:10]}" + (" ..." if len(absent) > 10 else ""), stacklevel=2)
    gone = set(absent)
    return cohort.subset([i for i, c in enumerate(cohort.case_ids) if c not in gone]), absent


def omics_cohort(cohort: Cohort, table: OmicsTable, *, train_idx: Sequence[int] | None = None,
                 selection: str = "per_fold", n_genes: int = N_GENES, method: str = "sklearn", seed: int = 0,
                 prefilter: int | None = None) -> tuple[Cohort, GeneSelection]:
    """``(view of cohort whose every slide carries its case's selected omics, the selection)`` for MoMKD; the view
    has the same slides and indices as ``cohort`` (every case needs an omics column: a ``KeyError`` names the
    missing ones; :func:`drop_cases_without_omics` first if some have none).

    ``selection="per_fold"`` (default): fit on the cases of the slides ``train_idx`` (one CV fold's training
    slides; required): call it once per fold. ``selection="global"``: the public code (module docstring): fit once
    on :func:`public_code_split` of all cases with ``seed``; ``train_idx`` must be ``None``.
    """
    if selection not in ("per_fold", "global"):
        raise ValueError(f"selection must be 'per_fold' (fit on each fold's training cases) or 'global' (the public "
                         f"code's single split), got {selection!r}")
    labels = case_labels(cohort)
    table.match(list(labels))  # every case present, else a KeyError naming the missing ones
    if selection == "per_fold":
        if train_idx is None:
            raise ValueError("selection='per_fold' needs train_idx (the fold's training slides)")
        train_cases = list(dict.fromkeys(cohort.case_ids[int(i)] for i in train_idx))
    else:
        if train_idx is not None:
            raise ValueError("selection='global' fits on the public code's own split: pass train_idx=None")
        train_cases = public_code_split(list(labels), list(labels.values()), seed=seed)
    sel = select_genes(table, train_cases, [labels[c] for c in train_cases], n_genes=n_genes, method=method,
                       seed=seed, prefilter=prefilter, selection=selection)
    return with_omics(cohort, sel.transform(table, list(labels))), sel
