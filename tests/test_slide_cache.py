"""The bounded slide cache: a cohort larger than the bound streams from disk, holds at most the bound, and reads the
same values as an unbounded cohort (issue 11, MoMKD at TCGA scale)."""
from __future__ import annotations

import weakref

import numpy as np
import pytest

from medvlp_lib.data.pathology import Cohort, SlideBatches, SlideCache, nbytes_of, simulate_cohort
from medvlp_lib.data.real.clam_features import CACHE_BYTES, read_clam, write_clam


@pytest.fixture(scope="module")
def clam_root(tmp_path_factory):
    cohort = simulate_cohort(14, seed=3, n_patches=(30, 90), feature_dim=16, n_genes=8, n_modules=2)
    return write_clam(cohort, tmp_path_factory.mktemp("clam"), fmt="both", extras=False)


def test_slide_cache_lru_bounds():
    c = SlideCache(max_items=2)
    for k in "abc":
        c.put(k, np.zeros(3))
    assert len(c) == 2 and "a" not in c and c.evictions == 1
    c.get("b")
    c.put("d", np.zeros(3))                       # "c" is now the least recently used
    assert "c" not in c and "b" in c and c.info()["peak_items"] == 2
    b = SlideCache(max_bytes=100)
    b.put(1, np.zeros(10))                        # 80 bytes
    b.put(2, np.zeros(5))                         # 40: evicts 1
    assert list(b._data) == [2] and b.nbytes == 40
    b.put(3, np.zeros(20))                        # 160 > bound: never kept
    assert 3 not in b and b.too_large == 1 and b.peak_bytes <= 100
    with pytest.raises(ValueError, match="max_items"):
        SlideCache(max_items=0)
    with pytest.raises(ValueError, match="cache_bytes"):
        SlideCache(max_bytes=True)


@pytest.mark.parametrize("bound", [dict(cache_slides=3), dict(cache_bytes=3 * 90 * 16 * 4 + 1, cache_slides=None)])
def test_bounded_cohort_never_holds_more_than_the_bound_and_reads_the_same(clam_root, bound):
    full = read_clam(clam_root, cache_bytes=None)
    assert full.cache_info()["max_bytes"] is None and full.cache_info()["max_items"] is None
    small = read_clam(clam_root, **bound)
    assert len(small) == len(full) > 3
    refs: list = []
    peak_alive = 0
    for epoch in range(2):
        for i in list(range(len(small))) + [0, len(small) - 1, 5]:
            s, f = small[i], full[i]
            refs.append(weakref.ref(s))
            np.testing.assert_array_equal(s.features, f.features)
            np.testing.assert_array_equal(s.coords, f.coords)
            np.testing.assert_array_equal(s.omics, f.omics)
            assert (s.slide_id, s.case_id, s.label) == (f.slide_id, f.case_id, f.label)
            del s, f
            peak_alive = max(peak_alive, len({id(r()) for r in refs if r() is not None}))
    info = small.cache_info()
    limit = 3 if "cache_slides" in bound and bound["cache_slides"] else None
    if limit:
        assert info["peak_items"] <= limit and info["items"] == limit
    else:
        assert info["peak_bytes"] <= bound["cache_bytes"] and info["nbytes"] <= bound["cache_bytes"]
    assert info["evictions"] > 0 and info["misses"] > len(small)          # slides were re-read from disk
    assert peak_alive <= info["peak_items"] + 1                            # nothing else keeps a slide alive
    assert full.cache_info()["items"] == len(full)                         # the unbounded one holds everything


def test_sub_cohorts_and_views_share_the_bounded_cache(clam_root):
    c = read_clam(clam_root, cache_slides=2)
    sub = c[[1, 4, 6, 8]]
    for s in sub:
        assert s.features.shape[1] == 16
    view = c.map(lambda s: s)
    assert view.cache_limits == sub.cache_limits == (2, CACHE_BYTES)
    assert c.cache_info()["peak_items"] == 2 and sub.cache_info() == c.cache_info()
    batches = SlideBatches(c, seed=0, transform=lambda b: dict(b, extra=1))
    for step in range(40):
        batches.batch(step)
    assert batches._cache.info()["peak_items"] <= 2                     # the transform cache has the same bound
    sim = simulate_cohort(4, seed=0, n_patches=(5, 6), feature_dim=4, n_genes=4, n_modules=2)
    assert sim.cache_limits == (None, None)                               # simulated cohorts: unbounded, as before
    assert Cohort.from_slides(list(sim)).cache_info() is None
    with pytest.raises(ValueError, match="cache=False keeps no slide"):
        read_clam(clam_root, cache=False, cache_slides=2)
    assert read_clam(clam_root, cache=False).cache_info() is None
    assert nbytes_of(c[0]) == sum(a.nbytes for a in (c[0].features, c[0].coords, c[0].omics, c[0].signal_mask,
                                                     c[0].tissue))
