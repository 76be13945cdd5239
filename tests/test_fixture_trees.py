"""The library's fixture trees (medvlp_lib.data.real.fixtures): every tree written by write_all loads with its loader
from the folder the loader defaults to under MEDVLP_DATA, deterministically, with a label signal a model can learn."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from medvlp_lib.data.natural import ImageFolderCrops
from medvlp_lib.data.real.chexpert import CheXpert, chexpert_5x200
from medvlp_lib.data.real.clam_features import read_clam
from medvlp_lib.data.real.covidx import COVIDX_CLASSES, COVIDx
from medvlp_lib.data.real.fixtures import (GENE_TABLE, TREES, synthetic_radiograph, write_all, write_mimic_cxr,
                                           write_rsna)
from medvlp_lib.data.real.mimic_cxr import LIBRARY_MAP, MIMICCXR
from medvlp_lib.data.real.omics import read_omics_table
from medvlp_lib.data.real.placenta import PlacentaDataset
from medvlp_lib.data.real.rsna import RSNAPneumonia
from medvlp_lib.data.real.siim import SIIMPneumothorax
from medvlp_lib.data.real.vindr import VinDrCXR


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("medvlp_data")
    paths = write_all(root)
    return root, paths


def _digest(folder) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_write_all_uses_the_loaders_default_folders(data_root, monkeypatch):
    root, paths = data_root
    assert set(paths) == set(TREES)
    for name, sub in TREES.items():
        assert (root / sub).is_dir(), name
    monkeypatch.setenv("MEDVLP_DATA", str(root))
    # every loader finds its tree with no root argument
    assert len(MIMICCXR(split="train", size=16)) > 0
    assert len(CheXpert(split="train", size=16)) > 0
    assert len(RSNAPneumonia(size=16)) == 16
    assert len(SIIMPneumothorax(size=16)) == 16
    assert len(VinDrCXR(split="test", size=16)) == 8
    assert len(COVIDx(split="train", size=16)) == 12
    assert len(PlacentaDataset(split="all", size=16)) == 16
    assert len(ImageFolderCrops(size=16)) == 24


def test_trees_are_deterministic(tmp_path):
    a = write_mimic_cxr(tmp_path / "a", n=10, seed=3, size=32)
    b = write_mimic_cxr(tmp_path / "b", n=10, seed=3, size=32)
    c = write_mimic_cxr(tmp_path / "c", n=10, seed=4, size=32)
    assert _digest(a) == _digest(b) != _digest(c)
    assert np.array_equal(synthetic_radiograph(np.random.default_rng(0), 32, ["cardiomegaly"]),
                          synthetic_radiograph(np.random.default_rng(0), 32, ["cardiomegaly"]))


def test_mimic_tree(data_root):
    root = data_root[1]["mimic"]
    splits = {s: MIMICCXR(root, s, size=32) for s in ("train", "validate", "test")}
    assert all(len(d) > 0 for d in splits.values())
    assert not set(splits["train"].subject_ids) & set(splits["test"].subject_ids)
    tr = splits["train"]
    assert tr.label_names == tuple(LIBRARY_MAP) and tr.labels.sum() > 0 and tr.skipped == 0
    assert all(t for t in tr.texts) and set(tr.views) <= {"PA", "AP"}
    assert (root / "mimic-cxr-2.0.0-metadata.csv.gz").exists() and (root / "mimic_cxr_sectioned.csv").exists()
    item = tr[0]
    assert item["image"].shape == (1, 32, 32) and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1


def test_chexpert_tree_and_5x200(data_root):
    root = data_root[1]["chexpert"]
    tr = CheXpert(root, "train", size=16)
    assert len(tr) == 40 and tr.skipped == 0                     # frontal only: the laterals are left out
    assert len(CheXpert(root, "train", size=16, views=("Frontal", "Lateral"))) > 40
    va = CheXpert(root, "valid", size=16, labels="chexpert")
    assert set(np.unique(va.raw_labels)) <= {0.0, 1.0}
    for rule in ("five", "mgca"):
        sub = chexpert_5x200(tr, n_per_class=4, seed=0, rule=rule)
        assert len(sub) == 20 and sub.labels.sum(0).tolist() == [4.0] * 5


def test_binary_and_multiclass_trees(data_root):
    paths = data_root[1]
    rsna = RSNAPneumonia(paths["rsna"], size=32)
    assert 0 < rsna.labels.mean() < 1 and all(len(b) > 0 for b, y in zip(rsna.boxes, rsna.labels) if y)
    pos = int(np.flatnonzero(rsna.labels)[0])
    it = rsna[pos]
    negatives = [rsna[i]["image"][0][it["mask"]].mean() for i in np.flatnonzero(rsna.labels == 0)]
    assert it["mask"].any() and float(it["image"][0][it["mask"]].mean()) > float(np.mean(negatives)) + 0.05
    siim = SIIMPneumothorax(paths["siim"], size=32)
    assert 0 < siim.labels.mean() < 1
    k = int(np.flatnonzero(siim.labels)[0])
    assert siim[k]["mask"].any() and not siim[int(np.flatnonzero(siim.labels == 0)[0])]["mask"].any()
    vtr, vte = VinDrCXR(paths["vindr"], "train", size=16), VinDrCXR(paths["vindr"], "test", size=16)
    assert len(vtr) == len(vte) == 8 and "normal" in vte.label_names
    raw = VinDrCXR(paths["vindr"], "test", size=16, labels="vindr")
    assert len(raw.label_names) == 28
    cx = COVIDx(paths["covidx"], "test", size=16)
    assert cx.classes == COVIDX_CLASSES and set(cx.labels.tolist()) == {0, 1, 2}


def test_placenta_imagenet_and_clam_trees(data_root):
    paths = data_root[1]
    pre = PlacentaDataset(paths["placenta"], "pretrain", size=(24, 32), with_mask=True)
    test = PlacentaDataset(paths["placenta"], "test", size=(24, 32))
    assert len(pre) + len(test) == 16 and not set(pre.uids) & set(test.uids)
    assert all(pre.texts) and not np.isnan(test.labels).any()
    assert pre[0]["mask"].any() and not pre[0]["mask"].all()
    inet = ImageFolderCrops(paths["imagenet"], size=16)
    assert len(inet.classes) == 4 and inet[0]["image"].shape == (3, 16, 16)
    for name, n in (("clam", 12), ("clam_external", 8)):
        c = read_clam(paths[name])
        assert len(set(c.case_ids)) == n and c[0].features.shape[1] == 32 and c[0].omics.size == 0
        assert (paths[name] / "pt_files").is_dir() and (paths[name] / "h5_files").is_dir()
        table = read_omics_table(paths[name] / GENE_TABLE)
        rows, missing = table.match(c.case_ids)
        assert not missing and (rows >= 0).all() and table.values.min() >= 0


def _pixels(ds, n_side=16):
    return np.stack([torch.nn.functional.adaptive_avg_pool2d(ds[i]["image"], n_side).reshape(-1).numpy()
                     for i in range(len(ds))])


def test_images_carry_a_learnable_label_signal(tmp_path):
    """A linear model on 16 x 16 pixels tells the labels apart on held-out images: the signal is there."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    root = write_rsna(tmp_path / "rsna", n=80, seed=1, size=32)
    ds = RSNAPneumonia(root, size=32)
    x, y = _pixels(ds), ds.labels
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x[:50], y[:50])
    assert roc_auc_score(y[50:], clf.decision_function(x[50:])) > 0.8
    m = MIMICCXR(write_mimic_cxr(tmp_path / "m", n=90, seed=2, size=32), "train", size=32)
    x, y = _pixels(m), m.labels[:, m.label_names.index("normal")]
    assert 0 < y.mean() < 1
    half = len(y) // 2
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x[:half], y[:half])
    assert roc_auc_score(y[half:], clf.decision_function(x[half:])) > 0.7
