"""``CXRDataset``: real IU X-Ray report text paired with rendered radiographs.

Each item pairs one IU X-Ray report (cleaned findings + impression) with a film rendered by
:func:`medvlp_lib.data.render.render_batch` from that report's MeSH tags, so image and text share
the report's findings, location and severity. All images of the split are rendered once at
construction into ``uint8`` arrays (tqdm progress bar) and cached per process, so epochs cost
nothing.

Splits come from :func:`medvlp_lib.data.reports.split_ids` (hash of seed and report uid;
80/10/10); ``split="all"`` takes every report. ``n`` takes a deterministic subset of the split
(the ``n`` uids with the smallest hash for this seed), so a bigger ``n`` contains a smaller one.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils import check_seed
from .real.common import check_index
from .render import (DEGRADE_PRESETS, MASK_NAMES, SITE_PRESETS, Degradation, SiteShift, check_size, render_batch,
                     resolve_preset)
from .reports import LABELS, ReportCorpus, load_reports, split_ids, unit_hash

__all__ = ["CXRDataset", "SPLITS"]

SPLITS = ("train", "val", "test", "all")


class _LazyMasks(dict):
    """name -> bool [N, H, W], unpacked on first access from the uint8 bit field (saves memory)."""

    def __init__(self, bits: np.ndarray):
        super().__init__()
        self._bits = bits

    def __getitem__(self, name):
        if name not in MASK_NAMES:
            raise KeyError(f"unknown mask {name!r}; available: {MASK_NAMES}")
        if not super().__contains__(name):
            super().__setitem__(name, (self._bits & (1 << MASK_NAMES.index(name))) != 0)
        return super().__getitem__(name)

    def __contains__(self, name):
        return name in MASK_NAMES

    def keys(self):
        return list(MASK_NAMES)

    def __iter__(self):
        return iter(MASK_NAMES)

    def __len__(self):
        return len(MASK_NAMES)

    def items(self):
        return [(n, self[n]) for n in MASK_NAMES]

    def values(self):
        return [self[n] for n in MASK_NAMES]


def _select_uids(corpus: ReportCorpus, split: str, seed: int, n: int | None) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    uids = corpus.uids if split == "all" else split_ids(corpus.uids, seed)[split]
    if n is not None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int or None (all reports of the split), got {n!r}")
        if n > len(uids):
            raise ValueError(f"n={n} exceeds the {len(uids)} reports of split {split!r}")
        keep = set(sorted(uids, key=lambda u: unit_hash("subset", seed, u))[:n])
        uids = [u for u in uids if u in keep]
    return uids


_CACHE: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_CACHE_MAX = 8


def _render_cached(uids: tuple[str, ...], size: int, seed: int, site, degrade, source: str, progress: bool):
    """Render (or fetch from a small per-process LRU cache of 8 entries) the films of ``uids``."""
    key = (uids, size, seed, site, degrade, source)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    out = _render(uids, size, seed, site, degrade, source, progress)
    _CACHE[key] = out
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
    return out


def _render(uids, size, seed, site, degrade, source, progress):
    from tqdm.auto import tqdm

    corpus = load_reports(source)
    reps = [corpus.get(u) for u in uids]
    images = np.empty((len(reps), size, size), np.uint8)
    bits = np.empty((len(reps), size, size), np.uint8)
    chunk = 256
    with tqdm(total=len(reps), desc=f"rendering {size}px films", unit="img", disable=not progress,
              leave=False) as bar:
        for i in range(0, len(reps), chunk):
            imgs, b = render_batch(reps[i:i + chunk], seed, size, site=site, degrade=degrade)
            images[i:i + chunk] = np.round(imgs * 255).astype(np.uint8)
            bits[i:i + chunk] = b
            bar.update(len(imgs))
    images.flags.writeable = False
    bits.flags.writeable = False
    return images, bits


class CXRDataset(Dataset):
    """Rendered chest films + real IU X-Ray report text.

    Item: ``dict(image=FloatTensor[1,H,W] in [0,1], text=str, labels=FloatTensor[len(LABELS)],
    index=int, uid=str, mask=BoolTensor[H,W])`` where ``mask`` is the union of the localised
    finding masks (:data:`~medvlp_lib.data.render.MASK_NAMES`).

    Attributes: ``images`` (uint8 [N,H,W]), ``texts``, ``labels`` (float32 [N,L]), ``uids``,
    ``masks`` (name -> bool [N,H,W], unpacked lazily), ``mask_bits`` (uint8 [N,H,W], bit i =
    ``MASK_NAMES[i]``), ``label_names`` (= :data:`LABELS`), ``reports``.

    ``site`` / ``degrade`` accept a :class:`SiteShift` / :class:`Degradation` or a preset name
    (``"external"`` / ``"phone"``). ``seed`` fixes both the split and the rendering.
    """

    def __init__(self, split: str = "train", size: int = 64, seed: int = 0, n: int | None = None,
                 site: SiteShift | str | None = None, degrade: Degradation | str | None = None,
                 corpus: ReportCorpus | None = None, progress: bool = True):
        size, seed = check_size(size), check_seed(seed)
        site = resolve_preset(site, SITE_PRESETS, SiteShift, "site")
        degrade = resolve_preset(degrade, DEGRADE_PRESETS, Degradation, "degrade")
        corpus = corpus if corpus is not None else load_reports()
        self.split, self.size, self.seed, self.site, self.degrade = split, size, int(seed), site, degrade
        self.uids: list[str] = _select_uids(corpus, split, int(seed), n)
        self.reports = [corpus.get(u) for u in self.uids]
        self.texts: list[str] = [r.text for r in self.reports]
        self.label_names: tuple[str, ...] = LABELS
        self.labels: np.ndarray = corpus.labels(self.uids)
        self.images, self.mask_bits = _render_cached(tuple(self.uids), size, int(seed), site, degrade,
                                                     corpus.source, progress)
        self.masks = _LazyMasks(self.mask_bits)

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, i: int) -> dict:
        i = check_index(i, len(self), "CXRDataset")
        return dict(
            image=torch.from_numpy(self.images[i].astype(np.float32) / 255.0)[None],
            text=self.texts[i],
            labels=torch.from_numpy(self.labels[i].copy()),
            index=i,
            uid=self.uids[i],
            mask=torch.from_numpy(self.mask_bits[i] != 0),
        )

    def __repr__(self) -> str:
        return (f"CXRDataset(split={self.split!r}, n={len(self)}, size={self.size}, seed={self.seed}, "
                f"site={self.site}, degrade={self.degrade})")
