"""Tests for the simulated slide cohorts (medvlp_lib.data.pathology)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp_lib.data.pathology import (TISSUE_TYPES, Cohort, CohortConfig, SlideBatches, class_balanced_weights,
                                       cv_folds, simulate_cohort, simulate_external_cohort, simulate_slide)

SMALL = dict(n_patches=(60, 150), feature_dim=16, n_genes=40, n_modules=4)


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(30, seed=3, **SMALL)


def test_shapes_and_types(cohort):
    assert len(cohort) >= 30 and len(set(cohort.case_ids)) == 30
    s = cohort[0]
    n = s.n_patches
    assert 60 <= n <= 150
    assert s.features.shape == (n, 16) and s.features.dtype == np.float32
    assert s.coords.shape == (n, 2) and s.coords.dtype == np.int64
    assert s.omics.shape == (40,) and s.omics.dtype == np.float32
    assert s.signal_mask.shape == (n,) and s.signal_mask.dtype == bool
    assert s.tissue.min() >= 0 and s.tissue.max() < len(TISSUE_TYPES)
    assert len(np.unique(s.coords, axis=0)) == n  # one patch per grid cell
    assert (s.coords % 256 == 0).all()
    b = s.to_batch()
    assert b["features"].dtype == torch.float32 and b["label"].dtype == torch.long


def test_deterministic_and_seed_dependent():
    a = simulate_cohort(6, seed=1, **SMALL)
    b = simulate_cohort(6, seed=1, **SMALL)
    c = simulate_cohort(6, seed=2, **SMALL)
    assert a.slide_ids == b.slide_ids and (a.labels == b.labels).all()
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i].features, b[i].features)
        np.testing.assert_array_equal(a[i].signal_mask, b[i].signal_mask)
    assert not np.array_equal(a[0].features[:10], c[0].features[:10]) or a[0].n_patches != c[0].n_patches


def test_signal_only_in_positive_tumour_and_clustered(cohort):
    for s in cohort:
        if s.label == 0:
            assert not s.signal_mask.any()
        else:
            m = s.signal_mask
            assert m.any() and (s.tissue[m] == 1).all()
            assert m.sum() <= max(1, round(0.1 * (s.tissue == 1).sum())) + 1
            # spatially clustered: signal patches are closer to each other than random tumour patches
            xy = s.coords[m] / 256.0
            if m.sum() >= 3:
                spread = np.linalg.norm(xy - xy.mean(0), axis=1).mean()
                tum = s.coords[s.tissue == 1] / 256.0
                assert spread < np.linalg.norm(tum - tum.mean(0), axis=1).mean() + 1e-6


def test_signal_direction_visible():
    """Signal patches are shifted along one fixed direction: their mean difference to other tumour
    patches is large and consistent across slides."""
    cfg = CohortConfig(feature_dim=32, signal_strength=2.0, signal_fraction=0.3)
    diffs = []
    for seed in range(3):
        s = simulate_slide(cfg, label=1, n_patches=800, seed=seed)
        m, tum = s.signal_mask, (s.tissue == 1) & ~s.signal_mask
        diffs.append(s.features[m].mean(0) - s.features[tum].mean(0))
    cos = np.dot(diffs[0], diffs[1]) / np.linalg.norm(diffs[0]) / np.linalg.norm(diffs[1])
    assert cos > 0.8 and np.linalg.norm(diffs[0]) > 2.5


def test_tissue_spatially_coherent():
    s = simulate_slide(CohortConfig(feature_dim=8), label=0, n_patches=900, seed=0)
    grid = {tuple(c // 256): t for c, t in zip(s.coords, s.tissue)}
    same = tot = 0
    for (x, y), t in grid.items():
        if (x + 1, y) in grid:
            tot += 1
            same += grid[(x + 1, y)] == t
    p = np.bincount(s.tissue, minlength=6) / len(s.tissue)
    assert same / tot > (p ** 2).sum() + 0.2  # far more agreement than independent labels


def test_omics_carries_label():
    c = simulate_cohort(60, seed=0, **SMALL)
    case = {}
    for i in range(len(c)):
        case[c.case_ids[i]] = (c[i].omics, c.labels[i])
    o = np.stack([v[0] for v in case.values()])
    y = np.array([v[1] for v in case.values()])
    corr = np.array([abs(np.corrcoef(o[:, g], y)[0, 1]) for g in range(o.shape[1])])
    assert corr.max() > 0.5  # module-0 genes are strongly label-associated
    # slides of the same case share omics
    for i in range(len(c)):
        for j in range(i + 1, len(c)):
            if c.case_ids[i] == c.case_ids[j]:
                np.testing.assert_array_equal(c[i].omics, c[j].omics)


def test_external_shift_moves_features():
    a = simulate_slide(CohortConfig(feature_dim=16), label=0, n_patches=300, seed=5)
    b = simulate_slide(CohortConfig(feature_dim=16, shift=1.0), label=0, n_patches=300, seed=5)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert np.abs(a.features - b.features).mean() > 0.5
    ext = simulate_external_cohort(5, **SMALL)
    assert ext.info["config"]["shift"] == 1.0 and ext.name == "external"


def test_prevalence_and_knob_errors():
    c = simulate_cohort(20, seed=0, prevalence=0.25, **SMALL)
    case_lab = dict(zip(c.case_ids, c.labels))
    assert sum(case_lab.values()) == 5
    with pytest.raises(TypeError, match="unknown cohort option"):
        simulate_cohort(4, nonsense=1)
    with pytest.raises(ValueError, match="prevalence"):
        simulate_cohort(4, prevalence=1.5)
    with pytest.raises(ValueError, match="n_cases"):
        simulate_cohort(1)


def test_large_slide_on_request():
    s = simulate_slide(CohortConfig(feature_dim=4), label=1, n_patches=20000, seed=0)
    assert s.n_patches == 20000 and s.signal_mask.any()


def test_cohort_list_access(cohort):
    sub = cohort[[0, 2]]
    assert isinstance(sub, Cohort) and len(sub) == 2 and sub.slide_ids == [cohort.slide_ids[0], cohort.slide_ids[2]]
    assert sub[1] is cohort[2]
    assert len(cohort[1:4]) == 3
    with pytest.raises(IndexError, match="out of range"):
        cohort[len(cohort)]
    assert cohort[-1].slide_id == cohort.slide_ids[-1]


def test_cv_folds_grouped_stratified(cohort):
    folds = cv_folds(cohort.case_ids, cohort.labels, k=5, seed=0)
    assert len(folds) == 5
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(len(cohort)))  # each slide tested exactly once
    case = np.array(cohort.case_ids)
    pos_cases = {c for c, y in zip(cohort.case_ids, cohort.labels) if y}
    for tr, te in folds:
        assert not set(case[tr]) & set(case[te])  # grouped by case
        n_pos = len(set(case[te]) & pos_cases)
        assert abs(n_pos - len(pos_cases) / 5) <= 1  # stratified
    again = cv_folds(cohort.case_ids, cohort.labels, k=5, seed=0)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    with pytest.raises(ValueError, match="at least k cases per class"):
        cv_folds(["a", "b", "c"], [0, 1, 1], k=2)
    with pytest.raises(ValueError, match="different labels"):
        cv_folds(["a", "a", "b", "c"], [0, 1, 1, 0], k=2)


def test_balanced_weights_and_batches(cohort):
    w = class_balanced_weights([0, 0, 0, 1])
    np.testing.assert_allclose(w, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    sb = SlideBatches(cohort, seed=0)
    idx = [sb.index(s) for s in range(400)]
    assert idx == [SlideBatches(cohort, seed=0).index(s) for s in range(400)]
    frac_pos = np.mean(cohort.labels[idx])
    assert 0.4 < frac_pos < 0.6  # balanced although prevalence is 0.3
    seq = SlideBatches(cohort, seed=1, balanced=False)
    n = len(seq)
    assert sorted(seq.index(s) for s in range(n)) == list(range(n))  # a permutation per epoch
    calls = []
    tb = SlideBatches(cohort, seed=0, transform=lambda b: calls.append(1) or {**b, "extra": 1})
    b1, b2 = tb.batch(0), tb.batch(0)
    assert b1["extra"] == 1 and len(calls) == 1 and torch.equal(b1["features"], b2["features"])


def test_subtype_cohort_omics_carry_more_than_the_label_and_slides_get_distractors():
    """subtype_strength > 0: a subtype independent of the label lifts omics module 1 and shifts some tumour
    patches along u (cos(u, v) = subtype_overlap); everything else is the subtype-free cohort."""
    from medvlp_lib.data.pathology import signal_directions

    kw = dict(n_patches=(60, 120), n_genes=40, n_modules=4)
    base = simulate_cohort(24, seed=5, **kw)
    sub = simulate_cohort(24, seed=5, subtype_strength=1.5, subtype_overlap=0.6, **kw)
    types = np.asarray(sub.info["subtype"])
    assert list(sub.labels) == list(base.labels) and 0 < types.sum() < len(types)
    cfg = CohortConfig(**{**kw, "subtype_strength": 1.5, "subtype_overlap": 0.6})
    genes = np.arange(cfg.n_genes)
    o = np.stack([s.omics for s in sub])
    o_base = np.stack([s.omics for s in base])
    changed = np.abs(o - o_base).max(0) > 1e-6   # the genes of module 1
    # only one module's genes move, in subtype-1 cases only, each gene by a fixed loading times the strength
    assert 0 < changed.sum() < len(genes)
    d = (o - o_base)[:, changed]
    assert np.all(np.abs(d[types == 0]) < 1e-6) and np.all(np.abs(d[types == 1]) > 0.5 * 2.0 * 0.5 - 1e-6)
    np.testing.assert_allclose(d[types == 1], np.broadcast_to(d[types == 1][0], d[types == 1].shape), atol=1e-5)
    v = signal_directions(cfg)["label"]
    for s, b, t in zip(sub, base, types):
        d = s.features - b.features
        moved = np.abs(d).sum(1) > 1e-6
        assert moved.any() == bool(t) and np.all(b.tissue[moved] == 1)        # only tumour patches of subtype 1
        if t:
            u = d[moved][0] / np.linalg.norm(d[moved][0])
            assert float(u @ v) == pytest.approx(0.6, abs=1e-5)
            np.testing.assert_allclose(u, signal_directions(cfg)["subtype"], atol=1e-5)
    with pytest.raises(ValueError, match="cosine"):
        simulate_cohort(4, subtype_strength=1.0, subtype_overlap=1.5, **kw)
