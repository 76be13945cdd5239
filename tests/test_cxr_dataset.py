"""CXRDataset contract: item keys, shapes, dtypes, splits, subsets, masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medvlp_lib.data import LABELS, CXRDataset, load_reports, render


@pytest.fixture(scope="module")
def ds():
    return CXRDataset("train", size=64, seed=0, n=48, progress=False)


def test_item_contract(ds):
    it = ds[5]
    assert set(it) == {"image", "text", "labels", "index", "uid", "mask"}
    assert it["image"].shape == (1, 64, 64) and it["image"].dtype == torch.float32
    assert 0 <= float(it["image"].min()) and float(it["image"].max()) <= 1
    assert it["labels"].shape == (len(LABELS),) and it["labels"].dtype == torch.float32
    assert it["mask"].shape == (64, 64) and it["mask"].dtype == torch.bool
    assert isinstance(it["text"], str) and it["text"] and it["index"] == 5 and it["uid"] == ds.uids[5]


def test_attributes(ds):
    n = len(ds)
    assert n == 48 and ds.images.shape == (n, 64, 64) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n, len(LABELS)) and ds.labels.dtype == np.float32
    assert ds.label_names == LABELS and len(ds.texts) == n == len(ds.uids)
    union = np.zeros((n, 64, 64), bool)
    for name in ds.masks:
        m = ds.masks[name]
        assert m.shape == (n, 64, 64) and m.dtype == bool
        union |= m
    assert np.array_equal(union, ds.mask_bits != 0)
    corpus = load_reports()
    assert np.array_equal(ds.labels, corpus.labels(ds.uids))
    assert ds.texts[0] == corpus.get(ds.uids[0]).text


def test_images_match_renderer(ds):
    r = render(load_reports().get(ds.uids[7]), seed=0, size=64)
    assert np.array_equal(ds.images[7], np.round(r.image * 255).astype(np.uint8))


def test_collate(ds):
    b = next(iter(DataLoader(ds, batch_size=8)))
    assert b["image"].shape == (8, 1, 64, 64) and isinstance(b["text"], list) and len(b["text"]) == 8
    assert b["labels"].shape == (8, len(LABELS)) and b["mask"].shape == (8, 64, 64)


def test_splits_disjoint_and_subset_nested():
    tr = CXRDataset("train", size=64, n=40, progress=False)
    va = CXRDataset("val", size=64, n=20, progress=False)
    te = CXRDataset("test", size=64, n=20, progress=False)
    assert not (set(tr.uids) & set(va.uids)) and not (set(va.uids) & set(te.uids))
    small = CXRDataset("val", size=64, n=10, progress=False)
    assert set(small.uids) <= set(va.uids)
    again = CXRDataset("val", size=64, n=20, progress=False)
    assert again.uids == va.uids and np.array_equal(again.images, va.images)
    other = CXRDataset("val", size=64, n=20, seed=1, progress=False)
    assert other.uids != va.uids


def test_site_degrade_dataset():
    a = CXRDataset("test", size=64, n=8, progress=False)
    b = CXRDataset("test", size=64, n=8, site="external", degrade="phone", progress=False)
    assert a.uids == b.uids and a.images.shape == b.images.shape
    assert np.abs(a.images.astype(int) - b.images.astype(int)).mean() > 2


def test_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        CXRDataset("training", size=64, n=4)
    with pytest.raises(ValueError, match="n must be a positive int"):
        CXRDataset("val", size=64, n=0)
    with pytest.raises(ValueError, match="exceeds"):
        CXRDataset("val", size=64, n=100000)
    with pytest.raises(ValueError, match="size must be in"):
        CXRDataset("val", size=32, n=4)
    with pytest.raises(KeyError, match="unknown mask"):
        CXRDataset("val", size=64, n=4, progress=False).masks["heart"]
