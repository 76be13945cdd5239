"""Simulated whole-slide-image cohorts: patch features, coordinates, omics and ground-truth signal patches.

The MoMKD chapter needs slides whose *answer is known*: which patches carry the molecular signal, how
strong it is, and how a new site shifts the features. This module generates such cohorts, deterministic
from a seed, in the same shapes a real pipeline produces (CLAM-style patch features + level-0 coords).

Generative model (one "world" shared by the internal and the external cohort, ``world_seed``):

* each slide is a tissue region on a patch grid (``n_patches`` cells chosen as the top cells of a smooth
  random field with a radial fall-off, so the region is one coherent blob); every patch gets one of
  :data:`TISSUE_TYPES` from the arg-max of smooth random fields (spatially coherent tissue regions);
* patch feature ``x = mu[t] + U[t] a + s + e`` with ``mu[t]`` the tissue prototype, ``U[t] a`` low-rank
  within-tissue variation, ``s`` a per-slide stain offset and ``e ~ N(0, noise^2 I)``;
* a latent binary molecular status ``y`` (HER2-like, ``P(y=1) = prevalence``) is visible *weakly* in the
  slide: in a positive slide, a spatially clustered fraction ``signal_fraction`` of the tumour patches
  gets ``+ signal_strength * 2 * v`` along a fixed unit direction ``v`` (sparse, high-dimensional);
  those patches form the ground-truth ``signal_mask``;
* the omics vector (``n_genes`` genes in ``n_modules`` correlated modules) is ``o = W z + eps`` with
  per-case module activities ``z ~ N(0, I)`` and ``z[0] += omics_strength * y`` (dense, strong signal);
* a site / stain shift (``shift``; 0 for the internal cohort) maps ``x -> x * (1 + 0.3 shift g) + shift b``
  with fixed per-dimension gain ``g`` and offset ``b`` (same for every slide of that site).

Omics that carry information beyond the label (``subtype_strength > 0``; 0 by default, which leaves the cohorts
above unchanged). In the default cohort the omics carry only the label, so distilling them into the slide model
cannot add information. With a molecular *subtype* ``m`` (binary, ``P(m=1) = subtype_prevalence``, independent
of ``y``) that

* activates omics module 1 strongly (``z[1] += subtype_omics_strength * m``), and
* shifts a spatially clustered ``subtype_fraction`` of the tumour patches of subtype-1 slides by
  ``+ subtype_strength * 2 * u``, with ``u`` a unit direction at cosine ``subtype_overlap`` to the label's ``v``,

the subtype patches are *distractors* that look partly like the label's signal patches: a slide-only model has
to tell them apart from the labels alone, while the omics name the subtype of every training case. The subtype
draws use their own random streams, so the rest of a cohort is the same with and without them.
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np
import torch

from ..utils import check_seed

__all__ = [
    "TISSUE_TYPES", "Slide", "Cohort", "CohortConfig", "simulate_cohort", "simulate_external_cohort",
    "simulate_slide", "simulate_omics", "signal_directions", "cv_folds", "class_balanced_weights", "SlideBatches",
    "SlideCache", "nbytes_of",
]

TISSUE_TYPES: tuple[str, ...] = ("background", "tumour", "stroma", "adipose", "normal_duct", "lymphocytes")
_TISSUE_PROPORTIONS = np.array([0.05, 0.30, 0.25, 0.15, 0.10, 0.15])


@dataclass
class Slide:
    """One slide: ``features`` [N, D] float32, ``coords`` [N, 2] int64 (level-0 pixel x, y of each patch's
    top-left corner), ``omics`` [G] float32 (may be empty for real data without omics), binary ``label``,
    ``signal_mask`` [N] bool (ground-truth signal patches; all False when unknown) and ``tissue`` [N] int64
    (index into :data:`TISSUE_TYPES`; -1 when unknown)."""

    slide_id: str
    case_id: str
    features: np.ndarray
    coords: np.ndarray
    omics: np.ndarray
    label: int
    signal_mask: np.ndarray
    tissue: np.ndarray

    def __post_init__(self) -> None:
        n = self.features.shape[0] if getattr(self.features, "ndim", 0) == 2 else None
        if n is None:
            raise ValueError(f"slide {self.slide_id!r}: features must be 2-D [N, D], got shape "
                             f"{getattr(self.features, 'shape', None)}")
        if self.coords.shape != (n, 2):
            raise ValueError(f"slide {self.slide_id!r}: coords must be [N, 2] = [{n}, 2], got {self.coords.shape}")
        for name in ("signal_mask", "tissue"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"slide {self.slide_id!r}: {name} must be [N] = [{n}], got {getattr(self, name).shape}")

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])

    def to_batch(self) -> dict:
        """The slide as the batch dict MoMKD / MIL ``training_step`` expects (CPU tensors)."""
        return {
            "features": torch.from_numpy(np.ascontiguousarray(self.features, dtype=np.float32)),
            "coords": torch.from_numpy(np.ascontiguousarray(self.coords, dtype=np.int64)),
            "omics": torch.from_numpy(np.ascontiguousarray(self.omics, dtype=np.float32)),
            "label": torch.tensor(int(self.label), dtype=torch.long),
            "signal_mask": torch.from_numpy(np.asarray(self.signal_mask, dtype=bool)),
            "tissue": torch.from_numpy(np.asarray(self.tissue, dtype=np.int64)),
            "slide_id": self.slide_id,
            "case_id": self.case_id,
        }


def nbytes_of(obj: Any) -> int:
    """Bytes held by the arrays of ``obj``: a :class:`Slide` (every array field), a dict / list / tuple of arrays
    and tensors (a batch dict), a NumPy array or a torch tensor; anything else counts 0."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, torch.Tensor):
        return int(obj.numel() * obj.element_size())
    if isinstance(obj, Slide):
        return sum(nbytes_of(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(nbytes_of(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes_of(v) for v in obj)
    return 0


def _check_bound(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


class SlideCache:
    """A least-recently-used cache bounded by a number of entries (``max_items``) and / or by the bytes their
    arrays hold (``max_bytes``, measured with :func:`nbytes_of`); both ``None`` = unbounded.

    ``get`` marks an entry as recently used; ``put`` first evicts the least recently used entries until the new one
    fits, so the cache never holds more than the bounds (:meth:`info` keeps the peaks to show it). An entry larger
    than ``max_bytes`` on its own is not kept (counted in ``too_large``). While an entry is loaded, host memory holds
    the cache plus that one entry.
    """

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None) -> None:
        self.max_items = _check_bound(max_items, "max_items (cache_slides)")
        self.max_bytes = _check_bound(max_bytes, "max_bytes (cache_bytes)")
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = self.too_large = 0
        self.peak_items = self.peak_bytes = 0

    @property
    def bounded(self) -> bool:
        return self.max_items is not None or self.max_bytes is not None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable, default=None):
        """The entry of ``key`` (now the most recently used) or ``default``; counts a hit or a miss."""
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key][0]
        self.misses += 1
        return default

    def put(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key``, evicting least recently used entries first so the bounds hold."""
        size = nbytes_of(value) if self.max_bytes is not None else 0
        if key in self._data:
            self.nbytes -= self._data.pop(key)[1]
        if self.max_bytes is not None and size > self.max_bytes:
            self.too_large += 1
            return
        while self._data and ((self.max_items is not None and len(self._data) + 1 > self.max_items)
                              or (self.max_bytes is not None and self.nbytes + size > self.max_bytes)):
            self.nbytes -= self._data.popitem(last=False)[1][1]
            self.evictions += 1
        self._data[key] = (value, size)
        self.nbytes += size
        self.peak_items = max(self.peak_items, len(self._data))
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def clear(self) -> None:
        self._data.clear()
        self.nbytes = 0

    def info(self) -> dict:
        """``{"items", "nbytes", "max_items", "max_bytes", "peak_items", "peak_bytes", "hits", "misses",
        "evictions", "too_large"}`` (bytes are counted only when ``max_bytes`` is set)."""
        return {"items": len(self._data), "nbytes": self.nbytes, "max_items": self.max_items,
                "max_bytes": self.max_bytes, "peak_items": self.peak_items, "peak_bytes": self.peak_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions, "too_large": self.too_large}

    def __repr__(self) -> str:
        return (f"SlideCache(items={len(self)}, max_items={self.max_items}, nbytes={self.nbytes}, "
                f"max_bytes={self.max_bytes})")


class Cohort(Sequence[Slide]):
    """A list-like collection of slides, possibly loaded lazily.

    ``Cohort(slide_ids, case_ids, labels, loader)`` calls ``loader(i) -> Slide`` on first access to slide
    ``i``; ``Cohort.from_slides(list)`` wraps slides already in memory.
    ``cohort[i]`` is a :class:`Slide`; ``cohort[[0, 3]]`` or ``cohort[1:5]`` is a sub-cohort.

    Cache of loaded slides: ``cache=False`` keeps none (every access calls the loader); ``cache=True`` keeps them in a
    :class:`SlideCache`, unbounded by default (the simulated cohorts: every slide is kept) or least-recently-used
    with at most ``cache_slides`` slides and / or ``cache_bytes`` bytes of arrays (real feature folders:
    :func:`~medvlp_lib.data.real.clam_features.read_clam` bounds it, so a TCGA-scale cohort streams from disk).
    Sub-cohorts (:meth:`subset`) and views (:meth:`map`) share their parent's cache. :meth:`cache_info` reports
    what is held and the peaks.
    """

    def __init__(self, slide_ids: Sequence[str], case_ids: Sequence[str], labels: Sequence[int],
                 loader: Callable[[int], Slide], *, cache: bool = True, cache_slides: int | None = None,
                 cache_bytes: int | None = None, name: str = "cohort", info: dict | None = None) -> None:
        if not (len(slide_ids) == len(case_ids) == len(labels)):
            raise ValueError(f"slide_ids, case_ids and labels must have equal lengths, got "
                             f"{len(slide_ids)}, {len(case_ids)}, {len(labels)}")
        if not cache and (cache_slides is not None or cache_bytes is not None):
            raise ValueError("cache=False keeps no slide: cache_slides / cache_bytes need cache=True")
        self.slide_ids = [str(s) for s in slide_ids]
        self.case_ids = [str(c) for c in case_ids]
        self.labels = np.asarray(labels, dtype=np.int64)
        self._loader = loader
        self._cache: SlideCache | None = SlideCache(cache_slides, cache_bytes) if cache else None
        self._shared: SlideCache | None = self._cache  # a view reports its parent's cache
        self.name = name
        self.info = dict(info or {})

    @classmethod
    def from_slides(cls, slides: Sequence[Slide], *, name: str = "cohort", info: dict | None = None) -> "Cohort":
        slides = list(slides)
        return cls([s.slide_id for s in slides], [s.case_id for s in slides], [s.label for s in slides],
                   slides.__getitem__, cache=False, name=name, info=info)

    def __len__(self) -> int:
        return len(self.slide_ids)

    def _get(self, i: int) -> Slide:
        if self._cache is None:
            return self._loader(i)
        slide = self._cache.get(i)
        if slide is None:
            slide = self._loader(i)
            self._cache.put(i, slide)
        return slide

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if i < -len(self) or i >= len(self):
                raise IndexError(f"slide index {i} out of range for a cohort of {len(self)} slides")
            return self._get(i % len(self))
        if isinstance(index, slice):
            idx = list(range(len(self)))[index]
        else:
            idx = [int(i) for i in np.asarray(index).reshape(-1)]
        return self.subset(idx)

    def __iter__(self) -> Iterator[Slide]:
        for i in range(len(self)):
            yield self._get(i)

    def _view(self, slide_ids, case_ids, labels, loader, name: str | None = None) -> "Cohort":
        view = Cohort(slide_ids, case_ids, labels, loader, cache=False, name=name or self.name, info=self.info)
        view._shared = self._shared
        return view

    def subset(self, indices: Sequence[int]) -> "Cohort":
        """A sub-cohort sharing this cohort's loader (and cache)."""
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < len(self):
                raise IndexError(f"slide index {i} out of range for a cohort of {len(self)} slides")
        return self._view([self.slide_ids[i] for i in idx], [self.case_ids[i] for i in idx], self.labels[idx],
                          lambda j: self._get(idx[j]))

    def map(self, fn: Callable[[Slide], Slide], name: str | None = None) -> "Cohort":
        """A view whose slide ``i`` is ``fn(self[i])`` (same ids and labels), reading through this cohort's cache;
        the result of ``fn`` is not cached (e.g. :func:`dataclasses.replace` of the omics: cheap)."""
        return self._view(self.slide_ids, self.case_ids, self.labels, lambda j: fn(self._get(j)), name)

    def cache_info(self) -> dict | None:
        """:meth:`SlideCache.info` of the cache this cohort reads through (its parent's for a view); ``None``
        without a cache."""
        return None if self._shared is None else self._shared.info()

    @property
    def cache_limits(self) -> tuple[int | None, int | None] | None:
        """``(max slides, max bytes)`` of the cache this cohort reads through; ``None`` without a cache."""
        return None if self._shared is None else (self._shared.max_items, self._shared.max_bytes)

    def clear_cache(self) -> None:
        if self._shared is not None:
            self._shared.clear()

    def __repr__(self) -> str:
        return (f"Cohort(name={self.name!r}, slides={len(self)}, cases={len(set(self.case_ids))}, "
                f"positives={int(self.labels.sum())})")


@dataclass(frozen=True)
class CohortConfig:
    """Knobs of the simulator (see the module docstring for the generative model)."""

    n_patches: tuple[int, int] = (200, 5000)
    feature_dim: int = 128
    n_genes: int = 300
    n_modules: int = 8
    prevalence: float = 0.3
    signal_strength: float = 1.0
    signal_fraction: float = 0.1
    omics_strength: float = 2.0
    omics_noise: float = 0.5
    noise: float = 1.0
    stain_noise: float = 0.3
    shift: float = 0.0
    subtype_strength: float = 0.0
    subtype_prevalence: float = 0.5
    subtype_fraction: float = 0.2
    subtype_overlap: float = 0.6
    subtype_omics_strength: float = 2.0
    second_slide_prob: float = 0.2
    patch_size: int = 256
    world_seed: int = 0

    def validate(self) -> None:
        lo, hi = self.n_patches
        if not (1 <= lo <= hi <= 1_000_000):
            raise ValueError(f"n_patches must be (lo, hi) with 1 <= lo <= hi <= 1e6, got {self.n_patches}")
        if self.feature_dim < 2:
            raise ValueError(f"feature_dim must be >= 2, got {self.feature_dim}")
        if not 0 < self.prevalence < 1:
            raise ValueError(f"prevalence must be in (0, 1), got {self.prevalence}")
        if not 0 < self.signal_fraction <= 1:
            raise ValueError(f"signal_fraction must be in (0, 1], got {self.signal_fraction}")
        if self.n_genes < self.n_modules or self.n_modules < 1:
            raise ValueError(f"need n_genes >= n_modules >= 1, got n_genes={self.n_genes}, n_modules={self.n_modules}")
        if not 0 <= self.second_slide_prob <= 1:
            raise ValueError(f"second_slide_prob must be in [0, 1], got {self.second_slide_prob}")
        if self.subtype_strength < 0 or self.subtype_omics_strength < 0:
            raise ValueError(f"subtype_strength and subtype_omics_strength must be >= 0, got {self.subtype_strength}, "
                             f"{self.subtype_omics_strength}")
        if not 0 < self.subtype_prevalence < 1 or not 0 < self.subtype_fraction <= 1:
            raise ValueError(f"subtype_prevalence must be in (0, 1) and subtype_fraction in (0, 1], got "
                             f"{self.subtype_prevalence}, {self.subtype_fraction}")
        if not -1 <= self.subtype_overlap <= 1:
            raise ValueError(f"subtype_overlap is a cosine in [-1, 1], got {self.subtype_overlap}")
        if self.subtype_strength > 0 and self.n_modules < 2:
            raise ValueError("a subtype needs n_modules >= 2 (module 1 carries it)")


@dataclass
class _World:
    mu: np.ndarray          # [T, D] tissue prototypes
    basis: np.ndarray       # [T, R, D] within-tissue variation
    signal_dir: np.ndarray  # [D] unit
    shift_gain: np.ndarray  # [D]
    shift_offset: np.ndarray  # [D]
    gene_module: np.ndarray   # [G]
    gene_loading: np.ndarray  # [G]
    gene_base: np.ndarray     # [G]


_WORLDS: dict[tuple, _World] = {}


def signal_directions(cfg: CohortConfig) -> dict[str, np.ndarray]:
    """The unit feature directions of the world: ``label`` (``v``, the label's signal patches) and ``subtype``
    (``u``, the subtype's distractor patches, at cosine ``cfg.subtype_overlap`` to ``v``); float64 [D] each."""
    return {"label": _world(cfg).signal_dir.copy(), "subtype": _subtype_direction(cfg)}


def _subtype_direction(cfg: CohortConfig) -> np.ndarray:
    """Unit ``u`` with ``cos(u, v) = subtype_overlap`` (its own random stream; the world is unchanged)."""
    v = _world(cfg).signal_dir
    w = np.random.default_rng([cfg.world_seed, 4243]).normal(size=cfg.feature_dim)
    w -= (w @ v) * v
    w /= np.linalg.norm(w)
    rho = cfg.subtype_overlap
    return rho * v + math.sqrt(max(0.0, 1.0 - rho * rho)) * w


def _world(cfg: CohortConfig) -> _World:
    key = (cfg.world_seed, cfg.feature_dim, cfg.n_genes, cfg.n_modules)
    if key not in _WORLDS:
        rng = np.random.default_rng([cfg.world_seed, 4242])
        d, t = cfg.feature_dim, len(TISSUE_TYPES)
        mu = rng.normal(0.0, 1.0, (t, d))
        basis = rng.normal(0.0, 0.5, (t, 8, d)) / math.sqrt(8)
        v = rng.normal(size=d)
        v /= np.linalg.norm(v)
        gene_module = rng.integers(0, cfg.n_modules, cfg.n_genes)
        gene_module[: cfg.n_modules] = np.arange(cfg.n_modules)  # every module has at least one gene
        gene_loading = rng.uniform(0.5, 1.5, cfg.n_genes) * rng.choice([-1.0, 1.0], cfg.n_genes)
        _WORLDS[key] = _World(mu, basis, v, rng.normal(0, 1, d), rng.normal(0, 1, d), gene_module,
                              gene_loading, rng.normal(0, 1, cfg.n_genes))
    return _WORLDS[key]


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=shape), sigma=sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-8)


def _layout(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid (row, col) of ``n`` tissue patches forming one blob, and their tissue type."""
    side = max(2, int(math.ceil(math.sqrt(n / 0.55))))
    rows, cols = np.mgrid[0:side, 0:side]
    r2 = ((rows - (side - 1) / 2) ** 2 + (cols - (side - 1) / 2) ** 2) / (side / 2) ** 2
    field_ = 1.0 - r2 + 0.5 * _smooth(rng, (side, side), sigma=max(1.0, side / 6))
    flat = np.argsort(-field_.ravel(), kind="stable")[:n]
    flat.sort()
    rr, cc = np.divmod(flat, side)
    sigma = max(1.0, side / 10)
    bias = np.log(_TISSUE_PROPORTIONS / _TISSUE_PROPORTIONS.mean())
    fields = np.stack([_smooth(rng, (side, side), sigma) + b for b in bias])  # [T, side, side]
    tissue = fields[:, rr, cc].argmax(axis=0)
    if not np.any(tissue == 1):  # guarantee some tumour: the patches nearest a random tissue patch
        c = rng.integers(n)
        d2 = (rr - rr[c]) ** 2 + (cc - cc[c]) ** 2
        tissue[np.argsort(d2, kind="stable")[: max(1, n // 10)]] = 1
    return np.stack([rr, cc], axis=1), tissue.astype(np.int64)


def simulate_omics(cfg: CohortConfig, label: int, rng: np.random.Generator, subtype: int = 0) -> np.ndarray:
    """One case's omics vector ``o = base + loading * z[module] + eps`` (``cfg.n_genes`` genes in
    ``cfg.n_modules`` modules of the world ``cfg.world_seed``), with module activities ``z ~ N(0, I)``,
    ``z[0] += cfg.omics_strength * label`` and, for a subtype-1 case, ``z[1] += cfg.subtype_omics_strength``
    (only when ``cfg.subtype_strength > 0``; otherwise the omics carry the label plus noise and nothing else).
    float32 [G]."""
    w = _world(cfg)
    z = rng.normal(size=cfg.n_modules)
    z[0] += cfg.omics_strength * label
    if cfg.subtype_strength > 0 and subtype:
        z[1] += cfg.subtype_omics_strength
    o = w.gene_base + w.gene_loading * z[w.gene_module] + rng.normal(0, cfg.omics_noise, cfg.n_genes)
    return o.astype(np.float32)


def simulate_slide(cfg: CohortConfig, *, label: int, n_patches: int, seed: int | Sequence[int],
                   slide_id: str = "slide", case_id: str = "case", omics: np.ndarray | None = None,
                   subtype: int = 0) -> Slide:
    """One simulated slide (see module docstring); deterministic in ``seed``. ``subtype`` (0/1) matters only
    when ``cfg.subtype_strength > 0``."""
    cfg.validate()
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    if n_patches < 1:
        raise ValueError(f"n_patches must be >= 1, got {n_patches}")
    seed = ([check_seed(s, f"seed[{j}]") for j, s in enumerate(seed)] if isinstance(seed, (tuple, list))
            else check_seed(seed))
    rng = np.random.default_rng(seed)
    w = _world(cfg)
    grid, tissue = _layout(rng, n_patches)
    n, d = n_patches, cfg.feature_dim
    x = w.mu[tissue].astype(np.float32)
    a = rng.normal(size=(n, w.basis.shape[1])).astype(np.float32)
    for t in np.unique(tissue):  # low-rank within-tissue variation U[t] a
        sel = tissue == t
        x[sel] += a[sel] @ w.basis[t].astype(np.float32)
    x += rng.normal(0, cfg.stain_noise, d).astype(np.float32)
    x += rng.normal(0, cfg.noise, (n, d)).astype(np.float32)
    signal = np.zeros(n, dtype=bool)
    if label == 1:
        tum = np.flatnonzero(tissue == 1)
        k = max(1, int(round(cfg.signal_fraction * tum.size)))
        centre = grid[tum[rng.integers(tum.size)]]
        d2 = ((grid[tum] - centre) ** 2).sum(1)
        signal[tum[np.argsort(d2, kind="stable")[:k]]] = True
        x[signal] += (2.0 * cfg.signal_strength * w.signal_dir).astype(np.float32)
    if cfg.subtype_strength > 0 and subtype:  # distractor patches along u (own random stream)
        srng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 5])
        tum = np.flatnonzero(tissue == 1)
        k = max(1, int(round(cfg.subtype_fraction * tum.size)))
        centre = grid[tum[srng.integers(tum.size)]]
        d2 = ((grid[tum] - centre) ** 2).sum(1)
        x[tum[np.argsort(d2, kind="stable")[:k]]] += (2.0 * cfg.subtype_strength * _subtype_direction(cfg)).astype(
            np.float32)
    if cfg.shift:
        x = x * (1.0 + 0.3 * cfg.shift * w.shift_gain).astype(np.float32) + (cfg.shift * w.shift_offset).astype(np.float32)
    coords = (grid[:, ::-1] * cfg.patch_size).astype(np.int64)  # (x = col, y = row) in level-0 pixels
    if omics is None:
        omics = simulate_omics(cfg, label, rng, subtype)
    return Slide(slide_id, case_id, x.astype(np.float32, copy=False), coords, np.asarray(omics, np.float32),
                 int(label), signal, tissue)


def simulate_cohort(n_cases: int = 120, *, seed: int = 0, name: str = "internal", cache: bool = True,
                    **config) -> Cohort:
    """A simulated cohort of ``n_cases`` cases (1 slide each, 2 with probability ``second_slide_prob``).

    Exactly ``round(prevalence * n_cases)`` (at least 1, at most ``n_cases - 1``) cases are positive.
    Slides are generated lazily on first access and cached; everything is deterministic in
    (``seed``, config). ``config`` are :class:`CohortConfig` fields, e.g. ``feature_dim=1536``,
    ``n_patches=(50, 200)``, ``signal_strength=0.5``, ``shift=1.0``.
    """
    seed = check_seed(seed)
    unknown = set(config) - {f.name for f in dataclasses.fields(CohortConfig)}
    if unknown:
        raise TypeError(f"unknown cohort option(s) {sorted(unknown)}; allowed: "
                        f"{[f.name for f in dataclasses.fields(CohortConfig)]}")
    cfg = CohortConfig(**{k: tuple(v) if k == "n_patches" else v for k, v in config.items()})
    cfg.validate()
    if n_cases < 2:
        raise ValueError(f"n_cases must be >= 2 (both classes present), got {n_cases}")
    rng = np.random.default_rng([seed, 1])
    n_pos = min(n_cases - 1, max(1, int(round(cfg.prevalence * n_cases))))
    case_labels = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n_cases - n_pos, int)])
    subtypes = (np.random.default_rng([seed, 6]).random(n_cases) < cfg.subtype_prevalence).astype(int) \
        if cfg.subtype_strength > 0 else np.zeros(n_cases, int)
    slide_ids, case_ids, labels, specs = [], [], [], []
    lo, hi = cfg.n_patches
    for c, y in enumerate(case_labels):
        case_id = f"{name}-case{c:04d}"
        omics = simulate_omics(cfg, int(y), np.random.default_rng([seed, 2, c]), int(subtypes[c]))
        n_slides = 2 if rng.random() < cfg.second_slide_prob else 1
        for s in range(n_slides):
            n = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi))))) if hi > lo else lo
            slide_ids.append(f"{case_id}-s{s}")
            case_ids.append(case_id)
            labels.append(int(y))
            specs.append((n, omics, (seed, 3, c, s), int(subtypes[c])))

    def load(i: int) -> Slide:
        n, omics, sd, sub = specs[i]
        return simulate_slide(cfg, label=labels[i], n_patches=n, seed=sd, slide_id=slide_ids[i],
                              case_id=case_ids[i], omics=omics, subtype=sub)

    return Cohort(slide_ids, case_ids, labels, load, cache=cache, name=name,
                  info={"config": dataclasses.asdict(cfg), "seed": seed,
                        "n_patches": [sp[0] for sp in specs], "subtype": [sp[3] for sp in specs]})


def simulate_external_cohort(n_cases: int = 60, *, seed: int = 1000, shift: float = 1.0, name: str = "external",
                             **config) -> Cohort:
    """The external cohort: same world (tissue prototypes, signal direction, genes), new cases, and a
    site/stain shift of size ``shift`` applied to every patch feature."""
    return simulate_cohort(n_cases, seed=seed, name=name, shift=shift, **config)


def cv_folds(case_ids: Sequence[str], labels: Sequence[int], k: int = 5, seed: int = 0
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train_idx, test_idx) splits over slides, grouped by case and stratified by case label.

    All slides of a case fall in the same fold; each fold gets (about) the same share of positive
    cases. Deterministic in ``seed``.
    """
    seed = check_seed(seed)
    case_ids = [str(c) for c in case_ids]
    labels = np.asarray(labels, dtype=np.int64)
    if len(case_ids) != len(labels):
        raise ValueError(f"case_ids ({len(case_ids)}) and labels ({len(labels)}) must have equal length")
    case_label: dict[str, int] = {}
    for c, y in zip(case_ids, labels):
        if case_label.setdefault(c, int(y)) != int(y):
            raise ValueError(f"case {c!r} has slides with different labels; cv_folds needs one label per case")
    cases = sorted(case_label)
    y = np.array([case_label[c] for c in cases])
    counts = {int(v): int((y == v).sum()) for v in np.unique(y)}
    if k < 2 or min(counts.values()) < k:
        raise ValueError(f"k={k} folds need k >= 2 and at least k cases per class; case counts per label: {counts}")
    rng = np.random.default_rng([seed, 77])
    fold_of_case: dict[str, int] = {}
    for v in sorted(counts):
        members = [cases[i] for i in rng.permutation(np.flatnonzero(y == v))]
        offset = int(rng.integers(k))
        for j, c in enumerate(members):
            fold_of_case[c] = (j + offset) % k
    fold = np.array([fold_of_case[c] for c in case_ids])
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def class_balanced_weights(labels: Sequence[int]) -> np.ndarray:
    """Per-sample weights ``1 / count(class)``, normalised to sum to 1 (for ``WeightedRandomSampler``)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("class_balanced_weights needs at least one label")
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return w / w.sum()


class SlideBatches:
    """One slide per step, deterministic in (``seed``, ``step``) so training can resume exactly.

    ``balanced=True`` samples slides with :func:`class_balanced_weights` (with replacement, as the
    public MoMKD code's class-balanced sampler); otherwise a fresh permutation per epoch.
    ``transform`` (e.g. adding a k-NN ``edge_index``) is applied to the batch dict, and its result is
    cached per slide if ``cache_transform``: with the cohort's bounds when the cohort's cache is bounded
    (:func:`~medvlp_lib.data.real.clam_features.read_clam`: host memory then holds at most twice the cohort's
    ``cache_bytes``), unbounded otherwise.
    """

    def __init__(self, cohort: Cohort, indices: Sequence[int] | None = None, *, seed: int = 0,
                 balanced: bool = True, transform: Callable[[dict], dict] | None = None,
                 cache_transform: bool = True) -> None:
        self.cohort = cohort
        self.indices = np.arange(len(cohort)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size == 0:
            raise ValueError("SlideBatches needs at least one slide index")
        self.seed = check_seed(seed)
        self.balanced = balanced
        self.transform = transform
        limits = cohort.cache_limits if isinstance(cohort, Cohort) else None
        self._cache: SlideCache | None = (SlideCache(*(limits or (None, None)))
                                          if (transform is not None and cache_transform) else None)
        self._weights = class_balanced_weights(cohort.labels[self.indices])

    def __len__(self) -> int:
        return int(self.indices.size)

    def index(self, step: int) -> int:
        """Cohort index of the slide used at ``step``."""
        n = self.indices.size
        if self.balanced:
            rng = np.random.default_rng([self.seed, int(step), 11])
            return int(self.indices[rng.choice(n, p=self._weights)])
        perm = np.random.default_rng([self.seed, int(step) // n, 13]).permutation(n)
        return int(self.indices[perm[int(step) % n]])

    def batch(self, step: int) -> dict:
        i = self.index(step)
        b = self._cache.get(i) if self._cache is not None else None
        if b is not None:
            return dict(b)
        b = self.cohort[i].to_batch()
        if self.transform is not None:
            b = self.transform(b)
            if self._cache is not None:
                self._cache.put(i, b)
        return dict(b)
