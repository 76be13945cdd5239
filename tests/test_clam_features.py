"""Tests for the CLAM-layout feature reader/writer (medvlp_lib.data.real.clam_features)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from medvlp_lib.data.pathology import Cohort, Slide, simulate_cohort
from medvlp_lib.data.real.clam_features import load_slide_features, read_clam, write_clam


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(5, seed=0, n_patches=(20, 40), feature_dim=8, n_genes=12, n_modules=3)


def _same(a, b):
    assert a.slide_id == b.slide_id and a.case_id == b.case_id and a.label == b.label
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert b.features.dtype == np.float32 and b.coords.dtype == np.int64


@pytest.mark.parametrize("fmt", ["h5", "pt", "both"])
def test_round_trip(tmp_path, cohort, fmt):
    write_clam(cohort, tmp_path, fmt=fmt)
    back = read_clam(tmp_path)
    assert back.slide_ids == cohort.slide_ids and back.case_ids == cohort.case_ids
    assert (back.labels == cohort.labels).all()
    for a, b in zip(cohort, back):
        _same(a, b)
        np.testing.assert_array_equal(a.omics, b.omics)
        if fmt != "pt":
            np.testing.assert_array_equal(a.signal_mask, b.signal_mask)
            np.testing.assert_array_equal(a.tissue, b.tissue)


def test_plain_clam_h5_and_pt_features_only(tmp_path):
    feats = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    coords = np.arange(14).reshape(7, 2) * 512
    slides = [Slide(sid, case, feats, coords, np.zeros(0, np.float32), y, np.zeros(7, bool), np.full(7, -1))
              for sid, case, y in (("s1", "c1", 1), ("s2", "c2", 0))]
    write_clam(Cohort.from_slides(slides), tmp_path, fmt="both", omics_csv=None, extras=False)  # as CLAM writes
    with h5py.File(tmp_path / "h5_files" / "s1.h5", "a") as f:  # int32 coords, as some extractors save them
        del f["coords"]
        f["coords"] = coords.astype(np.int32)
    (tmp_path / "pt_files" / "s1.pt").unlink()
    assert isinstance(torch.load(tmp_path / "pt_files" / "s2.pt", weights_only=True), torch.Tensor)  # features only
    (tmp_path / "labels.csv").write_text("case_id,slide_id,label,extra\nc1,s1,1,x\nc2,s2,0,y\n")
    c = read_clam(tmp_path)
    assert c[0].omics.size == 0 and not c[0].signal_mask.any() and (c[0].tissue == -1).all()
    np.testing.assert_array_equal(c[0].coords, coords)
    arr = load_slide_features(tmp_path, "s2", fmt="pt")
    np.testing.assert_array_equal(arr["features"], feats)
    np.testing.assert_array_equal(arr["coords"], coords)


def _write_h5(path, **datasets):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v


def _root(tmp_path, **datasets):
    _write_h5(tmp_path / "h5_files" / "bad.h5", **datasets)
    (tmp_path / "labels.csv").write_text("case_id,slide_id,label\nc,bad,1\n")
    return tmp_path


def test_missing_dataset(tmp_path):
    root = _root(tmp_path, features=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"bad\.h5: missing dataset 'coords'"):
        read_clam(root)[0]


def test_n_mismatch(tmp_path):
    root = _root(tmp_path, features=np.zeros((3, 4), np.float32), coords=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"bad\.h5: N mismatch.*3 rows.*2"):
        read_clam(root)[0]


def test_nan_features(tmp_path):
    f = np.zeros((3, 4), np.float32)
    f[1, 2] = np.nan
    root = _root(tmp_path, features=f, coords=np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"bad\.h5: 'features' contain NaN/inf in 1 of 3 patches"):
        read_clam(root)[0]


def test_empty_slide(tmp_path):
    root = _root(tmp_path, features=np.zeros((0, 4), np.float32), coords=np.zeros((0, 2), np.int64))
    with pytest.raises(ValueError, match=r"bad\.h5: empty slide"):
        read_clam(root)[0]


def test_bad_coords_shape(tmp_path):
    root = _root(tmp_path, features=np.zeros((3, 4), np.float32), coords=np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match=r"'coords' must be \[N, 2\]"):
        read_clam(root)[0]


def test_missing_dir_csv_and_columns(tmp_path, cohort):
    with pytest.raises(FileNotFoundError, match="does not exist; expected layout"):
        read_clam(tmp_path / "nope")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither h5_files/ nor pt_files/"):
        read_clam(tmp_path / "empty")
    root = write_clam(cohort, tmp_path / "ok")
    (root / "labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="missing labels file .*case_id,slide_id,label"):
        read_clam(root)
    (root / "labels.csv").write_text("case,slide_id,label\nx,y,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['case_id'\]"):
        read_clam(root)
    (root / "labels.csv").write_text("case_id,slide_id,label\nx,y,1\n")
    with pytest.raises(FileNotFoundError, match="slide 'y' listed in .* has no feature file"):
        read_clam(root)
    with pytest.warns(UserWarning, match="skipped 1 of 2 slides"):
        c = read_clam(root, missing="skip") if (root / "labels.csv").write_text(
            f"case_id,slide_id,label\nx,y,1\n{cohort.case_ids[0]},{cohort.slide_ids[0]},0\n") else None
    assert len(c) == 1
    (root / "labels.csv").write_text(f"case_id,slide_id,label\nx,{cohort.slide_ids[0]},maybe\n")
    with pytest.raises(ValueError, match="not an integer; pass label_map"):
        read_clam(root)
    assert read_clam(root, label_map={"maybe": 1}).labels.tolist() == [1]
