"""Chapter 05 experiments: MoMKD (momentum-memory genomics-to-pathology distillation), simulated or real cohorts.

Every experiment runs ``folds``-fold cross-validation **by case** on an internal cohort (stratified folds from
:func:`~medvlp_lib.data.pathology.cv_folds`; every method of a seed sees the same folds, so methods are compared
*paired* by seed), trains each method on the training folds with the class-balanced one-slide-per-step sampler
(:class:`~medvlp_lib.data.pathology.SlideBatches`) through :func:`medvlp_lib.experiments.fit_run` (tag
``<cohort>/fold<k>/<method>``), and reports the slide AUC on the held-out fold and on an external cohort with a
site/stain shift. Per seed the metric is the mean over folds (``*/auc``; the protocol's unit of replication is
the seed) and the standard deviation over folds (``*/auc_fold_std``, the paper's "±"); the per-fold values are
kept in ``*/auc_folds``. A seed changes the cohorts, the folds and the initialisation.

The data switch (``cfg.data``):

* ``"embedded"`` (fast and cpu profiles): simulated cohorts (:func:`medvlp_lib.data.pathology.simulate_cohort`,
  external: :func:`~medvlp_lib.data.pathology.simulate_external_cohort`). ``cohorts`` names the cohorts every
  method runs on, each filed under its key prefix: ``"default"`` (no prefix; patch signal ``signal_strength``,
  omics carry the label and nothing else), ``"hard"`` (``hard_``; weaker patch signal ``hard_signal_strength``)
  and ``"subtype"`` (``subtype_``; the default cohort plus a molecular subtype of strength ``subtype_strength``
  that the omics name and the slides hide behind distractor patches: the cohort in which the omics carry
  information beyond the label, so distillation *can* add something; same cases, labels and layouts as the
  default cohort, which is its label-only counterpart).
* ``"real"`` (gpu profile): CLAM / TRIDENT feature folders under ``MEDVLP_DATA`` (``clam/tcga_brca``, external
  ``clam/external`` when present; or ``clam_root`` / ``clam_external_root``), read per slide through the bounded
  cache of :func:`~medvlp_lib.data.real.clam_features.read_clam` (``cache_gb``; host memory stays bounded at
  TCGA-BRCA scale), the feature dim read from the files (``feature_dim`` is the simulator's). Omics: the folder's
  ``omics.csv`` (per-case vectors, used as they are) or else its genes x cases table ``gene_table``, from which
  the public code's gene selection (:func:`~medvlp_lib.data.real.omics.omics_cohort`) keeps ``n_genes`` genes,
  fitted on each fold's training cases (``gene_selection="per_fold"``) or once as the public code
  (``"global"``). Cases without omics are left out (with a warning naming them).

Experiments:

* ``momkd_main`` — MoMKD vs WSI-only (same slide encoder and memory pooling, no distillation: no omics,
  no alignment, fixed memory) vs ABMIL vs mean pooling, plus the attention quality of MoMKD and ABMIL
  against the ground-truth signal patches (AUROC of the patch scores, precision at k = number of
  signal patches) on positive held-out slides, and memory slot usage;
* ``momkd_memory`` — momentum vs fixed vs learned (public-code) memory, in-domain and external;
* ``momkd_ablations`` — WSI alignment only, omics alignment only, no omics reconstruction, LogSumExp vs hard max,
  the public code's k-NN edge direction (``edge_direction="public_code"``, key ``momkd_public_edges``; no claim:
  the paper states none, :func:`edge_direction_effect` reports the paired difference), memory size ``n``
  (``slot_sizes``, on the first cohort only); memory slot usage (active slots, perplexity).

Methods are :class:`~medvlp_lib.config.Variant` s: a name of :data:`METHODS` plus overrides, e.g.
``Variant("momkd", {"n_slots": 4})`` (result key ``momkd_n_slots4``) or a named MoMKD ablation
``Variant("momkd", {"variant": "no_recon"}, "momkd_no_recon")`` (:data:`medvlp_lib.methods.momkd.VARIANTS`).

The cpu profiles use seeds 0-4 and 5 folds, as the paper; the fast profile (a smoke test) 2 folds and one seed.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import ExperimentConfig, Variant, coerce, field_type, require
from ..data.pathology import SlideBatches, cv_folds, simulate_cohort, simulate_external_cohort
from ..data.real.clam_features import default_root as clam_default_root
from ..data.real.clam_features import read_clam
from ..data.real.omics import LAYOUT as OMICS_LAYOUT
from ..data.real.omics import N_GENES, drop_cases_without_omics, omics_cohort, read_omics_table
from ..eval import attention_quality, binary_auc
from ..methods.momkd import VARIANTS, MoMKD
from ..models.mil import ABMIL, MeanPoolMIL
from ..models.wsi import knn_graph
from ..results import Comparison, Wording, fmt, judge, judge_claim, paired, summary_entry
from ..stats import paired_estimate
from . import claim, claims_of, current_run, fit_run, register

__all__ = ["MoMKDConfig", "MoMKDMainConfig", "MoMKDAblationsConfig", "PROFILES_MAIN", "PROFILES_MEMORY",
           "PROFILES_ABLATIONS", "make_cohorts", "build_method", "fit_method", "predict_cohort", "memory_slot_usage",
           "active_slots", "run_cv", "preset", "METHODS", "CLAIMS"]

#: method name -> description (a :class:`~medvlp_lib.config.Variant` of "momkd" may name one of
#: :data:`medvlp_lib.methods.momkd.VARIANTS` with the override ``variant`` and change config fields)
METHODS = {
    "momkd": "MoMKD (momentum memory, both alignments, omics reconstruction)",
    "wsi_only": "WSI-only: GATv2 + memory-guided pooling, no omics, no alignment, fixed memory",
    "abmil": "ABMIL (gated attention MIL on the raw patch features)",
    "meanpool": "mean pooling MIL",
}


def preset(name: str) -> Variant:
    """MoMKD as the named ablation ``name`` of :data:`medvlp_lib.methods.momkd.VARIANTS`, results filed under
    ``momkd_<name>``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown MoMKD variant {name!r}; known: {sorted(VARIANTS)}")
    return Variant("momkd", {"variant": name}, f"momkd_{name}")


# --------------------------------------------------------------------------------------------- config
COHORTS = {"default": "", "hard": "hard_", "subtype": "subtype_"}
"""Simulated cohort name -> result key prefix (see the module docstring)."""


@dataclass(frozen=True, kw_only=True)
class MoMKDConfig(ExperimentConfig):
    """Chapter 05: the simulated cohorts (or real CLAM feature folders), the models and the cross-validation.

    Simulated cohort (:func:`medvlp_lib.data.pathology.simulate_cohort`, ``data="embedded"``): ``n_cases``
    internal and ``external_cases`` external cases, ``n_patches`` (min, max) per slide, ``feature_dim``,
    ``n_genes`` in ``n_modules`` modules, ``prevalence``, the patch signal (``signal_strength``,
    ``signal_fraction``), the external site/stain ``shift``; ``cohorts`` run (``"default"``, ``"hard"``: patch
    signal ``hard_signal_strength``, ``"subtype"``: the default cohort plus a subtype of ``subtype_strength``).
    Real features (``data="real"``): ``clam_root`` / ``clam_external_root`` (default: ``$MEDVLP_DATA/clam/
    tcga_brca`` and ``.../clam/external`` if it exists), ``label_map`` for string labels, ``gene_table`` (genes x
    cases, used when the folder has no ``omics.csv``; ``n_genes`` kept by ``gene_selection`` "per_fold" or
    "global", optional variance ``gene_prefilter``), ``cache_gb`` (slide cache bound, GiB).
    Models: ``hidden_dim``, ``shared_dim``, ``n_slots`` per class, ``dropout``, memory ``momentum``, k-NN graph
    ``edge_direction`` ("gather": the paper; "public_code": the public code's reversed edges). Training:
    ``epochs`` of one slide per step, AdamW ``lr`` / ``weight_decay``, warm-up; ``folds``-fold CV by case.
    ``methods``: what is cross-validated (:data:`METHODS` names or :class:`~medvlp_lib.config.Variant` s).
    """
    n_cases: int = 160
    external_cases: int = 80
    n_patches: tuple[int, int] = (60, 200)
    feature_dim: int = 128
    n_genes: int = 200
    n_modules: int = 8
    prevalence: float = 0.4
    signal_strength: float = 2.0
    signal_fraction: float = 0.2
    shift: float = 1.0
    cohorts: tuple[Literal["default", "hard", "subtype"], ...] = ("default",)
    hard_signal_strength: float | None = None
    subtype_strength: float = 2.0
    clam_root: str | None = None
    clam_external_root: str | None = None
    label_map: dict[str, int] | None = None
    gene_table: str = "gene_expression.csv"
    gene_selection: Literal["per_fold", "global"] = "per_fold"
    gene_prefilter: int | None = None
    cache_gb: float = 4.0
    hidden_dim: int = 128
    shared_dim: int = 64
    n_slots: int = 8
    dropout: float = 0.25
    momentum: float = 0.99
    edge_direction: Literal["gather", "public_code"] = "gather"
    epochs: int = 15
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    folds: int = 5
    methods: tuple[Variant, ...] = (Variant("momkd"),)

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("n_cases", "n_patches", "feature_dim", "n_genes", "n_modules", "hidden_dim",
                                "shared_dim", "n_slots", "epochs", "lr", "folds", "gene_prefilter", "cache_gb"),
                non_negative=("external_cases", "signal_strength", "shift", "weight_decay", "hard_signal_strength",
                              "subtype_strength"),
                unit=("prevalence", "signal_fraction", "dropout", "momentum", "warmup_frac"), unique=("cohorts",))
        if self.n_patches[0] > self.n_patches[1]:
            raise ValueError(f"MoMKDConfig.n_patches must be (min, max), got {self.n_patches}")
        if self.folds < 2:
            raise ValueError(f"MoMKDConfig.folds must be >= 2, got {self.folds}")
        if not self.cohorts:
            raise ValueError("MoMKDConfig.cohorts must name at least one cohort")
        if "hard" in self.cohorts and self.hard_signal_strength is None:
            raise ValueError("MoMKDConfig.cohorts has 'hard' but hard_signal_strength is None")
        if self.data == "real" and self.cohorts != ("default",):
            raise ValueError(f"MoMKDConfig.cohorts {self.cohorts}: the hard and subtype cohorts are simulated; "
                             "data='real' runs the feature folder only (cohorts=('default',))")
        if self.data != "real" and (self.clam_root or self.clam_external_root):
            raise ValueError("clam_root / clam_external_root are read with data='real' only (got data="
                             f"{self.data!r}); set data='real'")
        keys = [v.key for v in self.methods]
        if len(set(keys)) != len(keys):
            raise ValueError(f"MoMKDConfig.methods file two methods under one result key: {keys}")
        for v in self.methods:
            _check_variant(v)

    def smoke(self) -> "MoMKDConfig":
        """The same code path (real feature folders, gene selection per fold, the same model classes and methods,
        fit_run with checkpoints, DataLoader workers) shrunk: 2 folds, 2 epochs, tiny models, 8 genes, at most one
        extra memory size, one worker."""
        changes = dict(n_genes=8, gene_prefilter=None, hidden_dim=16, shared_dim=8, n_slots=2, epochs=2, folds=2,
                       cache_gb=0.0625, num_workers=min(self.num_workers, 1))
        if hasattr(self, "slot_sizes"):
            changes["slot_sizes"] = self.slot_sizes[:1] and (3,)
        return self.replace(**changes)


@dataclass(frozen=True, kw_only=True)
class MoMKDMainConfig(MoMKDConfig):
    """``momkd_main`` (same fields; kept as its own class so old records read back)."""


@dataclass(frozen=True, kw_only=True)
class MoMKDAblationsConfig(MoMKDConfig):
    """``momkd_ablations``: the methods plus MoMKD once per memory size in ``slot_sizes`` (``momkd_n_slots<n>``,
    on the first of ``cohorts`` only)."""
    slot_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("slot_sizes",), unique=("slot_sizes",))


def _check_variant(v: Variant):
    """``v`` names a method of :data:`METHODS`, a known MoMKD ablation (``variant``) and config fields of the
    right types (checked without building a config, which would check its methods again)."""
    if v.name not in METHODS:
        raise ValueError(f"unknown method {v.name!r}; known: {sorted(METHODS)}")
    settings = {k: x for k, x in v.overrides.items() if k != "variant"}
    if "variant" in v.overrides:
        if v.name != "momkd":
            raise ValueError(f"only 'momkd' has named variants, got {v}")
        if v.overrides["variant"] not in VARIANTS:
            raise ValueError(f"unknown MoMKD variant {v.overrides['variant']!r} in {v}; known: {sorted(VARIANTS)}")
    for key, value in settings.items():  # the other overrides are config fields (an unknown one is an error)
        coerce(value, field_type(MoMKDConfig, key), f"{v}: {key}")


# Calibration (pilots on a quiet machine, one seed, 3 folds, not committed; numbers are fold-mean AUCs):
# at 80 cases / 5 epochs (the first cpu profile) every method sat at chance. At 160 cases and 15 epochs
# the signal strength decides: 1.0 -> ABMIL 0.57, MoMKD 0.49; 1.5 -> ABMIL 0.84, MoMKD 0.55, mean pooling
# 0.59; 2.0 -> ABMIL 0.99; 2.5 -> ABMIL 1.00, MoMKD 0.95. The cpu profile uses 2.0 (``signal_strength``)
# so that the method under test is off chance and its memory ablations can mean something, and
# ``momkd_main`` repeats every method on a *hard* cohort (``hard_signal_strength`` 1.5) where ABMIL is
# below its ceiling. The subtype cohort (``subtype_strength`` 2.0: the distractors' projection on the label
# direction is 0.6 x 2 x 2.0 = 2.4 against the signal's 4.0) was fixed before any run, not tuned on results.
#
# Cost (measured for issue 12 on this 2-core machine shared with other sessions: one process, one thread, 4
# epochs = 600 steps of one cpu fold; process time): MoMKD 29 ms per step including its K-means memory
# initialisation, WSI-only 17, ABMIL and mean pooling about 3 (150-step pilot). One 5-fold x 15-epoch CV
# (11,500 steps) is then about 5.5 CPU-min for MoMKD; with ``--jobs 2`` five seeds run in three rounds, so
# the wall time is about 3 x the CPU time of one seed (estimates in each experiment's description).
_CPU = MoMKDConfig(n_cases=160, external_cases=80, n_patches=(60, 200), feature_dim=128, n_genes=200, n_modules=8,
                   prevalence=0.4, signal_strength=2.0, signal_fraction=0.2, shift=1.0, hidden_dim=128, shared_dim=64,
                   n_slots=8, dropout=0.25, momentum=0.99, epochs=15, lr=2e-4, weight_decay=1e-4, warmup_frac=0.05,
                   folds=5, hard_signal_strength=1.5, subtype_strength=2.0)
_BASES = {
    "fast": _CPU.replace(n_cases=30, external_cases=16, n_patches=(80, 250), n_genes=64, epochs=3, folds=2,
                         hidden_dim=64),
    "cpu": _CPU,
    # the paper's scale on TCGA-BRCA features (UNI v2, 1536-d: the dim is read from the files), 768 genes selected
    # per fold as the public code's script, 16 slots per class, 30 epochs
    "gpu": _CPU.replace(data="real", n_genes=N_GENES, hidden_dim=256, shared_dim=128, n_slots=16, epochs=30,
                        num_workers=4, hard_signal_strength=None),
}
CPU_SEEDS = (0, 1, 2, 3, 4)
_SEEDS = {"cpu": CPU_SEEDS, "gpu": CPU_SEEDS}


def _profiles(cls=MoMKDConfig, **per_profile) -> dict:
    """The three base profiles as ``cls`` with ``per_profile`` fields (``name={"fast": ..., "cpu": ..., "gpu": ...}``
    or one value for all)."""
    def pick(v, p):
        return v[p] if isinstance(v, dict) and set(v) == set(_BASES) else v
    return {p: cls.derive(base, **{k: pick(v, p) for k, v in per_profile.items()}) for p, base in _BASES.items()}


PROFILES_MAIN = _profiles(MoMKDMainConfig, methods=tuple(map(Variant, ("momkd", "wsi_only", "abmil", "meanpool"))),
                          cohorts={"fast": ("default",), "cpu": ("default", "hard", "subtype"), "gpu": ("default",)})
PROFILES_MEMORY = _profiles(methods=(Variant("momkd"), preset("fixed_memory"), preset("learned_memory")))
PUBLIC_EDGES = Variant("momkd", {"edge_direction": "public_code"}, "momkd_public_edges")
"""MoMKD with the public code's k-NN edge direction (``[centre; neighbour]``), filed under ``momkd_public_edges``."""
_ABLATIONS = (Variant("momkd"), *map(preset, ("wsi_align_only", "omics_align_only", "no_recon", "hard_max")),
              PUBLIC_EDGES)
# ablations on the cpu profile: 3 folds (not 5) so that 14 MoMKD CVs per seed fit the ~2 h budget
PROFILES_ABLATIONS = _profiles(MoMKDAblationsConfig, methods=_ABLATIONS,
                               cohorts={"fast": ("default",), "cpu": ("default", "subtype"), "gpu": ("default",)},
                               folds={"fast": 2, "cpu": 3, "gpu": 5},
                               slot_sizes={"fast": (2,), "cpu": (4, 16), "gpu": (4, 8, 32)})


# --------------------------------------------------------------------------------------------- data
def _cohort_cfg(cfg: MoMKDConfig, cohort: str) -> MoMKDConfig:
    """``cfg`` for one of :data:`COHORTS` (the hard cohort: ``hard_signal_strength`` as the patch signal)."""
    if cohort == "hard":
        return cfg.replace(signal_strength=cfg.hard_signal_strength)
    return cfg


def make_cohorts(cfg: MoMKDConfig, seed: int, cohort: str = "default"):
    """(internal, external) cohorts for ``seed``.

    ``data="embedded"``: simulated, same world (``world_seed=0``), disjoint cases, the external one with the
    site/stain shift ``cfg.shift``; ``cohort`` one of :data:`COHORTS` (``"subtype"``: the same cases with the
    molecular subtype of ``cfg.subtype_strength``). ``data="real"``: the CLAM feature folders
    (:func:`real_cohorts`; the external one ``None`` when there is none). The folds still come from ``seed``.
    """
    if cohort not in COHORTS:
        raise ValueError(f"unknown cohort {cohort!r}; known: {sorted(COHORTS)}")
    if cfg.data == "real":
        internal, external, _ = real_cohorts(cfg)
        return internal, external
    c = _cohort_cfg(cfg, cohort)
    common = dict(n_patches=tuple(c.n_patches), feature_dim=c.feature_dim, n_genes=c.n_genes,
                  n_modules=c.n_modules, prevalence=c.prevalence, signal_strength=c.signal_strength,
                  signal_fraction=c.signal_fraction, world_seed=0)
    if cohort == "subtype":
        common["subtype_strength"] = c.subtype_strength
    internal = simulate_cohort(c.n_cases, seed=1000 * seed + 1, **common)
    external = simulate_external_cohort(c.external_cases, seed=1000 * seed + 2, shift=c.shift, **common)
    return internal, external


def _folder(given: str | None, name: str) -> Path | None:
    if given:
        return Path(given)
    try:
        return clam_default_root(name)
    except FileNotFoundError:
        if name == "external":
            return None
        raise


def real_cohorts(cfg: MoMKDConfig):
    """``(internal, external or None, omics table or None)`` from the CLAM feature folders (``data="real"``).

    Slides are read per slide through :func:`~medvlp_lib.data.real.clam_features.read_clam`'s bounded cache
    (``cfg.cache_gb``). Omics: the internal folder's ``omics.csv`` when it has one (used as it is: table
    ``None``), else its genes x cases table ``cfg.gene_table`` (returned for the per-fold gene selection of
    :func:`fold_omics`; cases without a column are left out with a warning). A folder with neither is an error
    naming both files. The external folder: ``cfg.clam_external_root``, else ``$MEDVLP_DATA/clam/external`` if
    it exists, else none.
    """
    bound = int(cfg.cache_gb * (1 << 30))
    root = _folder(cfg.clam_root, "tcga_brca")
    internal = read_clam(root, label_map=cfg.label_map, name="internal", cache_bytes=bound)
    table = None
    if not internal.info.get("has_omics"):
        path = root / cfg.gene_table
        if not path.exists():
            raise FileNotFoundError(f"{root} has neither omics.csv (case_id,<gene>,... per case) nor the genes x "
                                    f"cases table {path.name} (gene_table); MoMKD distils omics. Layout: "
                                    f"{OMICS_LAYOUT}")
        table = read_omics_table(path)
        internal, _ = drop_cases_without_omics(internal, table)
    ext_root = _folder(cfg.clam_external_root, "external")
    external = None
    if ext_root is not None and ext_root.exists():
        external = read_clam(ext_root, label_map=cfg.label_map, name="external", omics_csv=None, cache_bytes=bound)
    return internal, external, table


def fold_omics(cfg: MoMKDConfig, cohort, table, train_idx, seed: int):
    """``cohort`` with the omics MoMKD distils for one fold: as it is when ``table`` is ``None`` (simulated, or
    a folder's ``omics.csv``), else the public code's gene selection of ``cfg.n_genes`` genes fitted on the
    fold's training cases (``gene_selection="per_fold"``) or on the public code's single split (``"global"``)."""
    if table is None:
        return cohort
    per_fold = cfg.gene_selection == "per_fold"
    view, _ = omics_cohort(cohort, table, train_idx=train_idx if per_fold else None, selection=cfg.gene_selection,
                           n_genes=cfg.n_genes, seed=seed if per_fold else 1, prefilter=cfg.gene_prefilter)
    return view


def _with_graph(batch: dict, direction: str = "gather") -> dict:
    if batch.get("edge_index") is None:
        batch = dict(batch, edge_index=knn_graph(batch["coords"], 8, direction=direction))
    return batch


def _direction(model) -> str:
    return getattr(model, "edge_direction", "gather")


# --------------------------------------------------------------------------------------------- methods
def _method_cfg(v: Variant, cfg: MoMKDConfig) -> MoMKDConfig:
    return cfg.replace(**{k: x for k, x in v.overrides.items() if k != "variant"})


def build_method(method: str | Variant, in_dim: int, omics_dim: int, cfg: MoMKDConfig, seed: int):
    """A fresh model for ``method`` (a :data:`METHODS` name or a :class:`~medvlp_lib.config.Variant`: its
    ``variant`` override names a MoMKD ablation of :data:`medvlp_lib.methods.momkd.VARIANTS`, the others change
    ``cfg`` fields, e.g. ``Variant("momkd", {"n_slots": 4})``), initialised from ``seed``."""
    v = method if isinstance(method, Variant) else Variant(method)
    _check_variant(v)
    cfg = _method_cfg(v, cfg)
    torch.manual_seed(seed)
    kw = dict(hidden_dim=cfg.hidden_dim, shared_dim=cfg.shared_dim, n_slots=cfg.n_slots, dropout=cfg.dropout,
              momentum=cfg.momentum, edge_direction=cfg.edge_direction, seed=seed)
    if v.name == "abmil":
        return ABMIL(in_dim, hidden_dim=cfg.hidden_dim, attn_dim=max(16, cfg.hidden_dim // 2), dropout=cfg.dropout)
    if v.name == "meanpool":
        return MeanPoolMIL(in_dim, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout)
    if v.name == "wsi_only":
        return MoMKD.variant("wsi_baseline", in_dim, 0, **kw)
    if omics_dim <= 0:
        raise ValueError(f"{v} distils omics but the cohort's slides carry none (omics dim 0); a real folder needs "
                         "omics.csv or the genes x cases table named by gene_table")
    return MoMKD.variant(v.overrides.get("variant", "full"), in_dim, omics_dim, omics_hidden=2 * cfg.hidden_dim, **kw)


def fit_method(method: str | Variant, cohort, train_idx, cfg: MoMKDConfig, seed: int, progress: bool = False,
               tag: str | None = None):
    """Train ``method`` (see :func:`build_method`) on ``cohort[train_idx]`` for ``cfg.epochs`` epochs of one slide
    per step (class-balanced sampling with replacement) through :func:`medvlp_lib.experiments.fit_run` (``tag``:
    the model's name in the run folder, default the method's key). The input and omics sizes come from the
    cohort's slides (a real folder's feature dim from its files). MoMKD's memory is K-means initialised on the
    training slides first. Returns ``(model, history)``."""
    v = method if isinstance(method, Variant) else Variant(method)
    mcfg = _method_cfg(v, cfg)
    first = cohort[int(train_idx[0])]
    model = build_method(v, int(first.features.shape[1]), int(np.asarray(first.omics).shape[0]), cfg, seed)
    graph = functools.partial(_with_graph, direction=mcfg.edge_direction)
    batches = SlideBatches(cohort, train_idx, seed=seed, balanced=True, transform=graph)
    if hasattr(model, "init_memory"):
        model.init_memory((graph(cohort[int(i)].to_batch()) for i in train_idx),
                          seed=seed, max_patches_per_slide=500)
    history = fit_run(model, batches, tag=tag or v.key, cfg=cfg, epochs=cfg.epochs, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, seed=seed, progress=progress)
    return model, history


@torch.no_grad()
def predict_cohort(model, cohort, idx=None) -> dict:
    """Slide probabilities, labels and per-slide patch scores (MoMKD: memory affinity difference;
    ABMIL: attention logits; mean pooling: constant) for ``cohort[idx]``."""
    idx = np.arange(len(cohort)) if idx is None else np.asarray(idx)
    probs, labels, scores, masks = [], [], [], []
    for i in idx:
        s = cohort[int(i)]
        b = _with_graph(s.to_batch(), _direction(model))
        out = model.predict(b)
        probs.append(out["prob"])
        labels.append(int(s.label))
        sc = out.get("scores")
        scores.append(None if sc is None else sc.numpy())
        masks.append(s.signal_mask)
    return {"prob": np.asarray(probs), "label": np.asarray(labels), "scores": scores, "masks": masks}


def memory_slot_usage(model, cohort, idx) -> dict:
    """Re-count slot usage of the trained memory on the patch projections of ``cohort[idx]`` (own-class
    nearest slot, as the VQ assignment) -> active slots per class (share >= 5 %) and perplexity."""
    mem = model.memory
    mem.reset_usage()
    with torch.no_grad():
        model.eval()
        for i in idx:
            b = _with_graph(cohort[int(i)].to_batch(), _direction(model))
            p = model.encode_slide(b)["patch_proj"]
            mem.record_usage(p, int(b["label"]))
    u = mem.slot_usage()
    return {"active_neg": float(u["active"][0]), "active_pos": float(u["active"][1]),
            "perplexity_neg": float(u["perplexity"][0]), "perplexity_pos": float(u["perplexity"][1])}


def run_cv(cfg: MoMKDConfig, seed: int, methods=None, progress: bool = True, slot_usage: bool = False,
           cohort: str = "default") -> dict:
    """Cross-validate every method in ``methods`` (default ``cfg.methods``; names or
    :class:`~medvlp_lib.config.Variant` s) on ``cohort`` (:data:`COHORTS`), results filed under each variant's
    key (without the cohort's prefix); see the module docstring for the returned metrics. Every method sees the
    same folds and cohorts (paired); fold ``k`` of method ``m`` trains as ``fit_run`` tag
    ``<cohort>/fold<k>/<m>``."""
    from tqdm.auto import tqdm

    torch.set_num_threads(max(1, torch.get_num_threads()))
    methods = [m if isinstance(m, Variant) else Variant(m) for m in (cfg.methods if methods is None else methods)]
    for v in methods:
        _check_variant(v)
    if cfg.data == "real":
        internal, external, table = real_cohorts(cfg)
    else:
        (internal, external), table = make_cohorts(cfg, seed, cohort), None
    folds = cv_folds(internal.case_ids, internal.labels, k=cfg.folds, seed=seed)
    res = {m: {"auc_folds": [], "ext_auc_folds": [], "attn_auroc_folds": [], "attn_p_at_k_folds": [],
               "seconds": 0.0, "usage": []} for m in methods}
    bar = tqdm(total=len(folds) * len(methods), desc=f"CV {cohort} seed {seed}", disable=not progress,
               dynamic_ncols=True)
    global_omics = fold_omics(cfg, internal, table, None, seed) if cfg.gene_selection == "global" else None
    for f, (tr, te) in enumerate(folds):
        data = global_omics if global_omics is not None else fold_omics(cfg, internal, table, tr, seed)
        for m in methods:
            t0 = time.process_time()
            model, _ = fit_method(m, data, tr, cfg, seed * 100 + f, tag=f"{cohort}/fold{f}/{m.key}")
            pin = predict_cohort(model, data, te)
            r = res[m]
            r["auc_folds"].append(binary_auc(pin["prob"], pin["label"]))
            if external is not None:
                pex = predict_cohort(model, external)
                r["ext_auc_folds"].append(binary_auc(pex["prob"], pex["label"]))
            aq = attention_quality(pin["scores"], pin["masks"])
            r["attn_auroc_folds"].append(aq["auroc"])
            r["attn_p_at_k_folds"].append(aq["p_at_k"])
            if slot_usage and hasattr(model, "memory"):
                r["usage"].append(memory_slot_usage(model, data, tr))
            r["seconds"] += time.process_time() - t0
            bar.update(1)
            bar.set_postfix(method=m.key, auc=f"{r['auc_folds'][-1]:.2f}")
    bar.close()
    out = {}
    for m, r in res.items():
        # process time of training + evaluation (a cost, not a metric: left out of smoke runs, whose resume check
        # compares every number of two runs)
        e = {} if current_run().smoke else {"cpu_seconds": r["seconds"]}
        for name in ("auc", "ext_auc", "attn_auroc", "attn_p_at_k"):
            v = np.asarray(r[f"{name}_folds"], float)
            if np.isfinite(v).any():
                e[name] = float(np.nanmean(v))
                e[f"{name}_fold_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0
            e[f"{name}_folds"] = [float(x) for x in v]
        if r["usage"]:
            for k in r["usage"][0]:
                e[f"usage_{k}"] = float(np.mean([u[k] for u in r["usage"]]))
        out[m.key] = e
    first = internal[0]
    out["cohort"] = {"n_slides": len(internal), "n_cases": len(set(internal.case_ids)),
                     "positives": int(internal.labels.sum()), "feature_dim": int(first.features.shape[1]),
                     "external_slides": 0 if external is None else len(external)}
    if cfg.data != "real":
        out["cohort"]["subtype_strength"] = float(cfg.subtype_strength) if cohort == "subtype" else 0.0
        out["cohort"]["signal_strength"] = float(_cohort_cfg(cfg, cohort).signal_strength)
    if "n_patches" in internal.info:
        out["cohort"]["mean_patches"] = float(np.mean(internal.info["n_patches"]))
    return out


def run_cohorts(cfg: MoMKDConfig, seed: int, methods=None, slot_usage: bool = True, first_only=()) -> dict:
    """:func:`run_cv` on every cohort of ``cfg.cohorts``, keys ``<prefix><method>`` (:data:`COHORTS`; the
    cohort summary ``<prefix>cohort``); ``first_only``: more methods run on the first cohort only."""
    out = {}
    methods = list(cfg.methods if methods is None else methods)
    for k, name in enumerate(cfg.cohorts):
        ms = methods + (list(first_only) if k == 0 else [])
        res = run_cv(cfg, seed, ms, slot_usage=slot_usage, cohort=name)
        out.update({f"{COHORTS[name]}{key}": v for key, v in res.items()})
    return out


# --------------------------------------------------------------------------------------------- experiments
# wall-time estimates: the measured per-step costs above x steps per CV (5 folds x 15 epochs x ~154 training
# slides = 11,500 steps; 3 folds: 5,800), summed per seed, x 3 rounds (five seeds with --jobs 2) on free cores
@register("momkd_main", PROFILES_MAIN, seeds=_SEEDS, description="MoMKD vs WSI-only vs ABMIL vs mean pooling, 5-fold "
          "CV by case on the default (label-only omics), hard (weaker patch signal) and subtype (omics carry a "
          "subtype beyond the label) cohorts, in-domain + external, attention vs ground truth, slot usage (chapter "
          "05). cpu: seeds 0-4 x 5 folds x 15 epochs, 160 cases; about 10.5 CPU-min per cohort per seed, ~32 per "
          "seed, ~95 min wall with --jobs 2 (estimate from a timed 600-step fold)")
def momkd_main(cfg: MoMKDConfig, seed: int) -> dict:
    return run_cohorts(cfg, seed)


@register("momkd_memory", PROFILES_MEMORY, seeds=_SEEDS, description="momentum vs fixed vs learned memory, "
          "in-domain and external (chapter 05). cpu: seeds 0-4 x 5 folds x 15 epochs on the default cohort; about "
          "17 CPU-min per seed, ~50 min wall with --jobs 2 (estimate from a timed 600-step fold)")
def momkd_memory(cfg: MoMKDConfig, seed: int) -> dict:
    return run_cohorts(cfg, seed)


@register("momkd_ablations", PROFILES_ABLATIONS, seeds=_SEEDS, description="MoMKD ablations: alignments, "
          "reconstruction, LogSumExp vs max, the public code's edge direction (on the default and the subtype "
          "cohort), memory size (default cohort), slot usage (chapter 05). cpu: seeds 0-4 x 3 folds (reduced from "
          "5 to fit the budget) x 15 epochs, 14 MoMKD CVs per seed, about 39 CPU-min per seed, ~120 min wall with "
          "--jobs 2 (estimate from a timed 600-step fold)")
def momkd_ablations(cfg: MoMKDAblationsConfig, seed: int) -> dict:
    return run_cohorts(cfg, seed, first_only=[Variant("momkd", {"n_slots": n}) for n in cfg.slot_sizes])


def edge_direction_effect(rec: dict, prefix: str = "", metric: str = "auc") -> dict | None:
    """The claim-free comparison of the k-NN edge direction: paired differences over seeds of
    ``momkd_public_edges`` (the public code's ``[centre; neighbour]`` rows) minus ``momkd`` (the paper's gather
    reading) on cohort ``prefix`` -- ``{"mean", "lo", "hi", "n", "mde"}`` (the 95 % t interval), or ``None`` when
    the record has no such run. The paper states no effect, so there is no verdict."""
    s = rec["summary"]
    a, b = s.get(f"{prefix}momkd_public_edges/{metric}"), s.get(f"{prefix}momkd/{metric}")
    if a is None or b is None:
        return None
    e = paired_estimate(paired(a, b))
    return {"mean": e.mean, "lo": e.lo, "hi": e.hi, "n": e.n, "mde": e.mde}


# --------------------------------------------------------------------------------------------- claims
# The paper's effects in our metric (AUC as a fraction; HER2 status, the paper's Table 1-3), stated before the runs:
PAPER_EFFECTS = {
    "beats_wsi_only": 0.796 - 0.739,     # MoMKD 79.6 vs WSI-only 73.9
    "beats_abmil": 0.796 - 0.729,        # vs ABMIL 72.9
    "shift_extra_drop": (0.819 - 0.735) - (0.823 - 0.794),  # fixed drops 8.4, momentum 2.9
    "shift_external": 0.794 - 0.735,     # momentum vs fixed on the external cohort
    "both_vs_wsi_align": 0.796 - 0.752,  # both alignments 79.6 vs WSI alignment only 75.2
    "both_vs_omics_align": 0.796 - 0.757,  # vs omics alignment only 75.7
    "variance": 0.035 - 0.015,           # fold std: baselines ± 2-5 (mid 3.5) vs MoMKD ± 0.7-2.3 (mid 1.5)
    "no_recon": 0.796 - 0.780,           # full 79.6 vs no reconstruction 78.0
}


def _ours(rec, keys_labels, metric="auc") -> str:
    s = rec["summary"]
    parts = [f"{lab} {fmt(s[f'{k}/{metric}'])}" for k, lab in keys_labels if f"{k}/{metric}" in s]
    return "; ".join(parts) + f" (AUC x100, mean ± std over n={s[f'{keys_labels[0][0]}/{metric}']['n']} seeds of " \
                              f"{rec['config']['folds']}-fold CV, profile {rec['profile']})"


def _chance_note(rec: dict, keys) -> str:
    """A caveat when none of the ``keys`` (AUC summary entries) is above chance (0.5) by the protocol
    (:func:`medvlp_lib.results.judge`): then the run has not learned enough for a comparison to mean much. No
    caveat while the record has too few seeds to tell (``pending``)."""
    s = rec["summary"]
    present = [k for k in keys if k in s]
    if not present:
        return ""
    js = [judge(Comparison(s[k], {"mean": 0.5, "std": 0.0, "n": s[k]["n"]})) for k in present]
    if any(j.supports or j.verdict == "pending" for j in js):
        return ""
    names = ", ".join(f"{k.split('/')[0]} {fmt(s[k])}" for k in present)
    return (f" Caveat: no method is above chance by the protocol at this budget ({names}), so this is 'not shown "
            f"at this scale' rather than refuted.")


def _distill(rec: dict) -> str:
    """Key prefix of the cohort the distillation claims are judged on: the subtype cohort when the record has it
    (decided before the runs: only there do the omics carry information beyond the label, so only there can
    distilling them add something), else the default cohort (records from before issue 12)."""
    return "subtype_" if any(k.startswith("subtype_momkd/") for k in rec["summary"]) else ""


def _cohort_note(rec: dict, p: str) -> str:
    c = rec["config"]
    if p == "subtype_":
        return (f" Judged on the subtype cohort (a molecular subtype of strength {c.get('subtype_strength')} that the "
                "omics name and the slides hide), where distillation can add information; the label-only default "
                "cohort is shown next to it.")
    return " Judged on the default cohort, where the omics carry the label and nothing else."


def _default_too(rec: dict, p: str, pairs) -> str:
    s = rec["summary"]
    if not p or not all(f"{k}/auc" in s for k, _ in pairs):
        return ""
    return "; label-only default cohort: " + ", ".join(f"{lab} {fmt(s[f'{k}/auc'])}" for k, lab in pairs)


_BEATS = Wording(
    reproduced="MoMKD beats WSI-only by {d1:.1f} and ABMIL by {d2:.1f} AUC points (paired over seeds, both CIs above "
               "0).{note}",
    not_reproduced="MoMKD - WSI-only = {d1:+.1f} (95 % CI [{lo1:+.1f}, {hi1:+.1f}]), MoMKD - ABMIL = {d2:+.1f} (CI "
                   "[{lo2:+.1f}, {hi2:+.1f}]) AUC points; the paper: +5.7 and +6.7.{note}{attn}{chance}")


@claim("momkd-beats", paper="MoMKD", chapter="05",
       claim="MoMKD beats WSI-only training and ABMIL (judged on the subtype cohort, where the omics carry "
             "information beyond the label; the label-only cohort shown next to it)",
       paper_value="HER2 AUC 79.6 vs 73.9 / 72.9 (effects +5.7 / +6.7 points)", result="momkd_main")
def _claim_beats(rec: dict) -> tuple[str, str, str]:
    s, p = rec["summary"], _distill(rec)
    ours = _ours(rec, [(f"{p}momkd", "MoMKD"), (f"{p}wsi_only", "WSI-only"), (f"{p}abmil", "ABMIL"),
                       (f"{p}meanpool", "mean pool")])
    ours += _default_too(rec, p, [("momkd", "MoMKD"), ("wsi_only", "WSI-only"), ("abmil", "ABMIL")])
    attn = ""
    if f"{p}momkd/attn_auroc" in s and f"{p}abmil/attn_auroc" in s:
        attn = (f" Attention AUROC for the ground-truth signal patches: MoMKD {fmt(s[f'{p}momkd/attn_auroc'])}, "
                f"ABMIL {fmt(s[f'{p}abmil/attn_auroc'])}.")
    return judge_claim(ours, [Comparison(f"{p}momkd/auc", f"{p}wsi_only/auc",
                                         paper_effect=PAPER_EFFECTS["beats_wsi_only"]),
                              Comparison(f"{p}momkd/auc", f"{p}abmil/auc", paper_effect=PAPER_EFFECTS["beats_abmil"])],
                       _BEATS, s, note=_cohort_note(rec, p), attn=attn,
                       chance=_chance_note(rec, [f"{p}{m}/auc" for m in ("momkd", "wsi_only", "abmil", "meanpool")]))


_SHIFT = Wording(
    reproduced="the fixed memory loses {d1:.1f} AUC points more under the shift than the momentum memory, and "
               "momentum is {d2:.1f} points better on the external cohort (both CIs above 0).",
    not_reproduced="extra drop of the fixed memory {d1:+.1f} (CI [{lo1:+.1f}, {hi1:+.1f}]), external advantage of "
                   "momentum {d2:+.1f} (CI [{lo2:+.1f}, {hi2:+.1f}]) AUC points; the paper: +5.5 and +5.9.{chance}")


@claim("momkd-shift", paper="MoMKD", chapter="05",
       claim="momentum memory holds under domain shift where fixed memory drops (default cohort; not a "
             "distillation claim)",
       paper_value="82.3 -> 79.4 vs 81.9 -> 73.5 (effects +5.5 extra drop / +5.9 external)", result="momkd_memory")
def _claim_shift(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    mo_in, mo_ex = s["momkd/auc"], s["momkd/ext_auc"]
    fx_in, fx_ex = s["momkd_fixed_memory/auc"], s["momkd_fixed_memory/ext_auc"]
    ours = (f"momentum {fmt(mo_in)} -> {fmt(mo_ex)}; fixed {fmt(fx_in)} -> {fmt(fx_ex)} (in-domain -> external "
            f"AUC x100, n={mo_in['n']} seeds, profile {rec['profile']})")

    def drop(a, b):
        return summary_entry([x - y for x, y in zip(a["values"], b["values"])], seeds=a.get("seeds"))
    # the claim: the fixed memory drops more than the momentum memory, and momentum is better externally
    return judge_claim(ours, [Comparison(drop(fx_in, fx_ex), drop(mo_in, mo_ex),
                                         paper_effect=PAPER_EFFECTS["shift_extra_drop"]),
                              Comparison(mo_ex, fx_ex, paper_effect=PAPER_EFFECTS["shift_external"])], _SHIFT,
                       chance=_chance_note(rec, ["momkd/auc", "momkd_fixed_memory/auc", "momkd_learned_memory/auc"]))


_BOTH_ALIGN = Wording(
    reproduced="both alignments beat WSI alignment only by {d1:.1f} and omics alignment only by {d2:.1f} AUC points "
               "(both CIs above 0).{note}",
    not_reproduced="full - WSI-align-only = {d1:+.1f} (CI [{lo1:+.1f}, {hi1:+.1f}]), full - omics-align-only = "
                   "{d2:+.1f} (CI [{lo2:+.1f}, {hi2:+.1f}]) AUC points; the paper: +4.4 and +3.9.{note}{chance}")


@claim("momkd-both-align", paper="MoMKD", chapter="05",
       claim="both alignments are needed (judged on the subtype cohort, where distillation can matter)",
       paper_value="75.2 / 75.7 vs 79.6 (effects +4.4 / +3.9 points)", result="momkd_ablations")
def _claim_both_align(rec: dict) -> tuple[str, str, str]:
    p = _distill(rec)
    ours = _ours(rec, [(f"{p}momkd", "both"), (f"{p}momkd_wsi_align_only", "WSI align only"),
                       (f"{p}momkd_omics_align_only", "omics align only")])
    ours += _default_too(rec, p, [("momkd", "both"), ("momkd_wsi_align_only", "WSI align only"),
                                  ("momkd_omics_align_only", "omics align only")])
    keys = [f"{p}momkd/auc", f"{p}momkd_wsi_align_only/auc", f"{p}momkd_omics_align_only/auc"]
    return judge_claim(ours, [Comparison(keys[0], keys[1], paper_effect=PAPER_EFFECTS["both_vs_wsi_align"]),
                              Comparison(keys[0], keys[2], paper_effect=PAPER_EFFECTS["both_vs_omics_align"])],
                       _BOTH_ALIGN, rec["summary"], note=_cohort_note(rec, p), chance=_chance_note(rec, keys))


_VARIANCE = Wording(
    reproduced="MoMKD's fold-to-fold std is {d1:.1f} points below ABMIL's and {d2:.1f} below WSI-only's (both CIs "
               "above 0).{note}",
    not_reproduced="MoMKD's fold std is lower than ABMIL's by {d1:+.1f} (CI [{lo1:+.1f}, {hi1:+.1f}]) and than "
                   "WSI-only's by {d2:+.1f} (CI [{lo2:+.1f}, {hi2:+.1f}]) points; the paper: about +2.{note}{chance}")


@claim("momkd-variance", paper="MoMKD", chapter="05",
       claim="lower variance across folds (judged on the subtype cohort, with the other MoMKD-vs-baseline claim)",
       paper_value="± 0.7-2.3 vs ± 2-5 (effect about 2 points of fold std)", result="momkd_main")
def _claim_variance(rec: dict) -> tuple[str, str, str]:
    s, p = rec["summary"], _distill(rec)
    mo, ab, wsi = s[f"{p}momkd/auc_fold_std"], s[f"{p}abmil/auc_fold_std"], s[f"{p}wsi_only/auc_fold_std"]
    ours = (f"fold std of AUC x100: MoMKD {fmt(mo)}, ABMIL {fmt(ab)}, WSI-only {fmt(wsi)} (mean ± std over "
            f"n={mo['n']} seeds of {rec['config']['folds']}-fold CV, profile {rec['profile']})")
    eff = PAPER_EFFECTS["variance"]
    return judge_claim(ours, [Comparison(mo, ab, higher_is_better=False, paper_effect=eff),
                              Comparison(mo, wsi, higher_is_better=False, paper_effect=eff)],
                       _VARIANCE, note=_cohort_note(rec, p),
                       chance=_chance_note(rec, [f"{p}momkd/auc", f"{p}abmil/auc", f"{p}wsi_only/auc"]))


_NO_RECON = Wording(
    reproduced="the reconstruction term adds {d:.1f} AUC points (CI [{lo:+.1f}, {hi:+.1f}]).{note}",
    not_reproduced="full - no-reconstruction = {d:+.1f} AUC points (CI [{lo:+.1f}, {hi:+.1f}]); the paper: "
                   "+1.6.{note}{chance}")


@claim("momkd-no-recon", paper="MoMKD", chapter="05",
       claim="omics reconstruction helps (no-reconstruction ablation is worse; judged on the subtype cohort)",
       paper_value="79.6 vs 78.0 (effect +1.6 points)", result="momkd_ablations")
def _claim_no_recon(rec: dict) -> tuple[str, str, str]:
    s, p = rec["summary"], _distill(rec)
    if f"{p}momkd_no_recon/auc" not in s:
        return ("no no-reconstruction run in this record", "pending",
                "momkd_ablations needs the 'momkd_no_recon' method (preset('no_recon')).")
    ours = _ours(rec, [(f"{p}momkd", "full"), (f"{p}momkd_no_recon", "no omics reconstruction")])
    ours += _default_too(rec, p, [("momkd", "full"), ("momkd_no_recon", "no reconstruction")])
    return judge_claim(ours, [Comparison(f"{p}momkd/auc", f"{p}momkd_no_recon/auc",
                                         paper_effect=PAPER_EFFECTS["no_recon"])], _NO_RECON, s,
                       note=_cohort_note(rec, p), chance=_chance_note(rec, [f"{p}momkd/auc", f"{p}momkd_no_recon/auc"]))


def active_slots(summary: dict, prefix: str = "") -> dict | None:
    """Active memory slots of both classes together, per seed, as a summary entry (from the summary entries
    ``<prefix>momkd/usage_active_neg`` and ``..._pos``); None if the record has no slot usage."""
    a, b = summary.get(f"{prefix}momkd/usage_active_neg"), summary.get(f"{prefix}momkd/usage_active_pos")
    if a is None or b is None:
        return None
    return summary_entry(np.asarray(a["values"]) + np.asarray(b["values"]))


_SLOTS = Wording(
    reproduced="the harder task keeps {d:.1f} more active slots (CI [{lo:+.1f}, {hi:+.1f}]).",
    not_reproduced="hard - default = {d:+.1f} active slots (CI [{lo:+.1f}, {hi:+.1f}]); the paper states no number, "
                   "so only the direction can decide.", scale=1.0)


@claim("momkd-slots", paper="MoMKD", chapter="05", claim="harder tasks keep more active memory slots",
       paper_value="HER2 (hard) more active slots than PR/ODX (easy); no numbers (paper effect: none stated, "
                   "the direction decides)", result="momkd_main", scale=1.0, unit="active slots")
def _claim_slots(rec: dict) -> tuple[str, str, str]:
    s, c = rec["summary"], rec["config"]
    easy, hard = active_slots(s, ""), active_slots(s, "hard_")
    if easy is None or hard is None:
        return "no slot usage in this record", "pending", "momkd_main needs the hard cohort and slot usage."
    n_total = 2 * c["n_slots"]
    ours = (f"active slots (>= 5 % of patches, both classes, of {n_total}): hard cohort {hard['mean']:.1f} ± "
            f"{hard['std']:.1f}, default cohort {easy['mean']:.1f} ± {easy['std']:.1f} (n={hard['n']} seeds, "
            f"mean over {c['folds']} folds, profile {rec['profile']})")
    return judge_claim(ours, [Comparison(hard, easy)], _SLOTS)


CLAIMS = claims_of(__name__)
