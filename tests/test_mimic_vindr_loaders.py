"""MIMIC-CXR-JPG and VinDr-CXR loaders on tiny fixture trees in the exact on-disk layouts, the real VinDr box CSV
shipped in torchxrayvision, and the zero-/few-shot driver (medvlp_lib.eval.real) over VinDr / RSNA / SIIM."""
from __future__ import annotations

import importlib.util
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvlp_lib.data.real.fixtures import write_mimic_cxr, write_rsna, write_siim, write_vindr
from medvlp_lib.data.real.mimic_cxr import CHEXPERT_LABELS, LIBRARY_MAP, MIMICCXR, mimic_image_path
from medvlp_lib.data.real.rsna import RSNAPneumonia
from medvlp_lib.data.real.siim import SIIMPneumothorax
from medvlp_lib.data.real.vindr import VinDrCXR, read_vindr_box_labels, read_vindr_image_labels
from medvlp_lib.eval.real import as_labelled, embed_images, evaluate_real, zero_shot_real

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------- MIMIC-CXR
# (dicom_id, subject, study, view, split, on_disk)
MIMIC_IMAGES = [
    ("d1", 10000032, 50414267, "PA", "train", True),
    ("d2", 10000032, 50414267, "LATERAL", "train", True),   # lateral: dropped
    ("d3", 10000032, 50000001, "AP", "test", True),
    ("d4", 11000011, 53000000, "PA", "train", True),         # study without report text: dropped
    ("d5", 11000011, 53000001, "PA", "train", False),        # not downloaded: skipped
    ("d6", 12000022, 54000000, "AP", "train", True),
    ("d7", 12000022, 54000000, "PA", "train", True),         # second frontal image of the same study
    ("d8", 12000022, 54000002, "PA", "validate", True),
]
# study -> CheXpert values (Atelectasis, Cardiomegaly, ..., in CHEXPERT_LABELS order); "" = blank
CHEX = {
    50414267: {"Cardiomegaly": "1.0", "Pleural Effusion": "-1.0", "Support Devices": "0.0"},
    50000001: {"No Finding": "1.0"},
    53000000: {"Edema": "1.0"},
    53000001: {"Pneumonia": "1.0"},
    54000000: {"Consolidation": "-1.0", "Lung Lesion": "1.0"},
    54000002: {"Pneumothorax": "1.0"},
}
SECTIONS = [("s50414267", "Mild cardiomegaly.", "The heart is enlarged. Small effusion."),
            ("s50000001", "No acute process.", ""),
            ("s53000000", "", ""),
            ("s53000001", "Pneumonia.", "Right lower lobe opacity."),
            ("s54000000", "Left upper lobe nodule.", "Patchy opacity, possibly consolidation."),
            ("s54000002", "Small right pneumothorax.", "")]


def make_mimic(root, gz=True):
    studies = {int(st[1:]): {"labels": CHEX.get(int(st[1:])), "impression": imp, "findings": fin}
               for st, imp, fin in SECTIONS}
    images = [dict(dicom_id=d, subject_id=s, study_id=t, view=v, split=sp, **({} if on_disk else {"image": False}))
              for d, s, t, v, sp, on_disk in MIMIC_IMAGES]
    return write_mimic_cxr(root, size=48, images=images, studies=studies, gz=gz)


def test_mimic_layout_and_path():
    p = mimic_image_path("/r", 10000032, 50414267, "abc")
    assert str(p) == "/r/files/p10/p10000032/s50414267/abc.jpg"


def test_mimic_fixture_train_split(tmp_path):
    root = make_mimic(tmp_path / "mimic-cxr-jpg")
    ds = MIMICCXR(root, "train", size=32)
    assert ds.uids == ["d1", "d6", "d7"]           # frontal, train, with text, on disk; sorted by subject/study
    assert ds.skipped == 1 and ds.no_text == 1
    assert ds.views == ["PA", "AP", "PA"] and ds.study_ids == [50414267, 54000000, 54000000]
    assert ds.texts[0] == "The heart is enlarged. Small effusion. Mild cardiomegaly."
    assert ds.label_names == tuple(LIBRARY_MAP)
    lab = dict(zip(ds.label_names, ds.labels[0]))
    # U-Zeros: the uncertain effusion (-1) is negative; blank support devices = 0
    assert lab["cardiomegaly"] == 1 and lab["pleural_effusion"] == 0 and lab["device"] == 0
    lab6 = dict(zip(ds.label_names, ds.labels[1]))
    assert lab6["nodule"] == 1 and lab6["opacity"] == 0   # consolidation uncertain -> 0
    it = ds[1]
    assert it["image"].shape == (1, 32, 32) and it["image"].dtype == torch.float32
    assert 0 <= float(it["image"].min()) and float(it["image"].max()) <= 1
    assert it["text"] == ds.texts[1] and it["uid"] == "d6" and it["labels"].shape == (len(LIBRARY_MAP),)
    imgs = ds.images
    assert imgs.shape == (3, 32, 32) and imgs.dtype == np.uint8
    assert np.allclose(ds[0]["image"][0].numpy(), imgs[0] / 255.0)


def test_mimic_options(tmp_path):
    root = make_mimic(tmp_path / "m")
    ones = MIMICCXR(root, "train", size=16, labels="chexpert", uncertain="one")
    assert ones.label_names == CHEXPERT_LABELS
    col = {c: j for j, c in enumerate(CHEXPERT_LABELS)}
    assert ones.labels[0, col["Pleural Effusion"]] == 1 and ones.labels[1, col["Consolidation"]] == 1
    assert MIMICCXR(root, "train", size=16, one_per_study=True).uids == ["d1", "d6"]
    assert MIMICCXR(root, "val", size=16).uids == ["d8"]
    test = MIMICCXR(root, "test", size=16, text="impression")
    assert test.uids == ["d3"] and test.texts == ["No acute process."]
    assert dict(zip(test.label_names, test.labels[0]))["normal"] == 1
    assert MIMICCXR(root, "train", size=16, views=("PA",)).uids == ["d1", "d7"]
    sub = MIMICCXR(root, "train", size=16, n=2, seed=1)
    assert len(sub) == 2 and set(sub.uids) <= {"d1", "d6", "d7"} and sub.labels.shape == (2, len(LIBRARY_MAP))
    with pytest.raises(ValueError, match="split must be"):
        MIMICCXR(root, "dev")


def test_mimic_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="files/pXX"):
        MIMICCXR(tmp_path / "nothing")
    root = make_mimic(tmp_path / "m")
    (root / "mimic_cxr_sectioned.csv").unlink()
    with pytest.raises(FileNotFoundError, match="mimic_cxr_sectioned.csv"):
        MIMICCXR(root)
    root2 = make_mimic(tmp_path / "m2", gz=False)  # plain .csv works too
    assert len(MIMICCXR(root2, "train", size=8)) == 3
    (root2 / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id,fold\nd1,1,1,train\n")
    with pytest.raises(ValueError, match="missing columns \\['split'\\]"):
        MIMICCXR(root2)


# ---------------------------------------------------------------------------------------------- VinDr-CXR
VINDR_COLS = ["Aortic enlargement", "Atelectasis", "Cardiomegaly", "Consolidation", "Lung Opacity", "Nodule/Mass",
              "Pleural effusion", "Pneumothorax", "Emphysema", "Pneumonia", "No finding"]


def make_vindr(root, ext=".png"):
    train = [("a", [("R1", {"Cardiomegaly"}), ("R2", {"Cardiomegaly"}), ("R3", {"No finding"})]),
             ("b", [("R4", {"Pleural effusion"}), ("R5", {"No finding"}), ("R6", {"No finding"})]),
             ("gone", [("R1", {"No finding"})])]
    test = [("t1", {"Pneumonia", "Nodule/Mass"}), ("t2", {"No finding"}), ("t3", {"Pneumothorax"}),
            ("t4", {"No finding"})]
    records = [dict(image_id=i, split="train", reads=r, **({"image": False} if i == "gone" else {})) for i, r in train]
    records += [dict(image_id=i, split="test", reads=[(None, pos)]) for i, pos in test]
    return write_vindr(root, size=48, records=records, label_names=VINDR_COLS, ext=ext)


def test_vindr_image_labels_any_and_majority(tmp_path):
    root = make_vindr(tmp_path / "vindr-cxr")
    ids, names, lab = read_vindr_image_labels(root / "annotations" / "image_labels_train.csv")
    assert ids == ["a", "b", "gone"] and names == tuple(VINDR_COLS)
    c = {n: j for j, n in enumerate(names)}
    assert lab[0, c["Cardiomegaly"]] == 1 and lab[0, c["No finding"]] == 1          # any radiologist
    assert lab[1, c["Pleural effusion"]] == 1
    _, _, maj = read_vindr_image_labels(root / "annotations" / "image_labels_train.csv", aggregate="majority")
    assert maj[0, c["Cardiomegaly"]] == 1 and maj[0, c["No finding"]] == 0           # 2 of 3 vs 1 of 3
    assert maj[1, c["Pleural effusion"]] == 0 and maj[1, c["No finding"]] == 1


def test_vindr_fixture_dataset(tmp_path):
    root = make_vindr(tmp_path / "vindr-cxr")
    tr = VinDrCXR(root, "train", size=24)
    assert tr.uids == ["a", "b"] and tr.skipped == 1
    assert "device" not in tr.label_names and tr.label_names[0] == "cardiomegaly"
    te = VinDrCXR(root, "test", size=24)
    lab = {u: dict(zip(te.label_names, te.labels[k])) for k, u in enumerate(te.uids)}
    assert lab["t1"]["opacity"] == 1 and lab["t1"]["nodule"] == 1 and lab["t1"]["normal"] == 0
    assert lab["t3"]["pneumothorax"] == 1 and lab["t2"]["normal"] == 1
    it = te[0]
    assert it["image"].shape == (1, 24, 24) and it["text"] == "" and it["labels"].shape == (len(te.label_names),)
    raw = VinDrCXR(root, "test", size=8, labels="vindr")
    assert raw.label_names == tuple(VINDR_COLS)
    with pytest.raises(FileNotFoundError, match="missing.csv not found; expected layout .*image_labels_"):
        VinDrCXR(root, "train", csv_path=root / "annotations" / "missing.csv")
    with pytest.raises(FileNotFoundError, match="expected layout"):
        VinDrCXR(tmp_path / "none", "test")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,Cardiomegaly\nx,maybe\n")
    with pytest.raises(ValueError, match="0/1"):
        read_vindr_image_labels(bad)


@pytest.mark.skipif(importlib.util.find_spec("pydicom") is not None, reason="pydicom installed")
def test_vindr_dicom_without_pydicom_names_it(tmp_path):
    root = write_vindr(tmp_path / "v", records=[dict(image_id="x", reads=[(None, {"No finding"})], image=False)],
                       label_names=VINDR_COLS)
    (root / "test" / "x.dicom").write_bytes(b"\0" * 256)
    ds = VinDrCXR(root, "test", size=16)
    assert ds.uids == ["x"]
    with pytest.raises(ImportError, match="pydicom"):
        ds[0]


def test_vindr_box_csv_matches_torchxrayvision(tmp_path):
    import pandas as pd
    import torchxrayvision as xrv

    from medvlp_lib.data.real.rsna import xrv_data_file

    ids, names, lab = read_vindr_box_labels()  # torchxrayvision's vinbigdata-train.csv.gz (all 15,000 images)
    assert len(ids) == 15000 and "No finding" in names
    # the reference on the rows of 600 images (torchxrayvision's parser is slow on the whole file)
    df = pd.read_csv(xrv_data_file("vinbigdata-train.csv.gz"))
    part = df[df["image_id"].isin(set(ids[:600]))]
    part.to_csv(tmp_path / "part.csv", index=False)
    (tmp_path / "img").mkdir()
    ref = xrv.datasets.VinDr_Dataset(imgpath=str(tmp_path / "img"), csvpath=str(tmp_path / "part.csv"))
    pids, pnames, plab = read_vindr_box_labels(tmp_path / "part.csv")
    assert sorted(pids) == sorted(ref.csv["image_id"]) and set(pids) == set(ids[:600])
    full_rows = [ids.index(i) for i in pids]
    assert np.array_equal(plab, lab[full_rows][:, [names.index(n) for n in pnames]])
    pos = {i: k for k, i in enumerate(pids)}
    rows = [pos[i] for i in ref.csv["image_id"]]
    col = {n.lower(): j for j, n in enumerate(pnames)}
    mapping = {"effusion": "pleural effusion", "pleural_thickening": "pleural thickening"}
    checked = 0
    for j, p in enumerate(ref.pathologies):
        key = mapping.get(p.lower(), p.lower())
        ours = plab[rows, col[key]] if key in col else np.zeros(len(rows), np.float32)
        assert np.array_equal(ours, ref.labels[:, j]), p
        checked += int(ours.sum() > 0)
    assert checked >= 10
    # the box CSV format is accepted by the dataset class too (xrv's training copy, images stored as PNG)
    root = write_vindr(tmp_path / "vb", size=32, label_names=("No finding",),
                       records=[dict(image_id=ids[k], split="train", reads=[("R1", set())]) for k in range(3)])
    ds = VinDrCXR(root, "train", size=8, csv_path=__import__("medvlp_lib.data.real.rsna", fromlist=["x"])
                  .xrv_data_file("vinbigdata-train.csv.gz"))
    assert ds.uids == ids[:3] and ds.skipped == 15000 - 3 and "normal" in ds.label_names


# ---------------------------------------------------------------------------------------------- zero/few-shot
class HashDual(nn.Module):
    """A deterministic stand-in dual encoder (random conv image tower, hashed bag-of-words text tower)."""

    def __init__(self, dim=16, vocab=512):
        super().__init__()
        torch.manual_seed(0)
        self.vocab = vocab
        self.img = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.img_proj = nn.Linear(32, dim)
        self.tok = nn.EmbeddingBag(vocab, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image_with_features(self, x):
        f = self.img(x)
        return F.normalize(self.img_proj(f), dim=-1), f

    def encode_image(self, x):
        return self.encode_image_with_features(x)[0]

    def encode_text(self, texts):
        ids, off = [], []
        for t in texts:
            off.append(len(ids))
            ids += [zlib.crc32(w.encode()) % self.vocab for w in (t.lower().split() or ["<e>"])]
        return F.normalize(self.tok(torch.tensor(ids), torch.tensor(off)), dim=-1)


def test_zero_and_few_shot_on_vindr_rsna_siim_fixtures(tmp_path):
    model = HashDual()
    # VinDr: multi-label, library names
    vroot = make_vindr(tmp_path / "vindr")
    te = VinDrCXR(vroot, "test", size=16)
    zs = zero_shot_real(model, te, n_prompts=4, progress=False)
    assert set(zs["zero_shot_per_label"]) | set(zs["skipped"]) == set(te.label_names)
    assert "normal" in zs["zero_shot_per_label"] and 0 <= zs["zero_shot_auc"] <= 1
    # RSNA (binary -> "opacity") with a probe: 12 images, half positive
    rroot = write_rsna(tmp_path / "rsna", records=[
        dict(patient_id=f"p{k}", boxes=[(100, 100, 200, 200)] if k % 2 == 0 else [],
             image=np.full((32, 32), 200 if k % 2 == 0 else 40, np.uint8)) for k in range(12)])
    rsna = RSNAPneumonia(rroot, size=16)
    lab = as_labelled(rsna)
    assert lab.label_names == ("opacity",) and lab.labels.shape == (12, 1)
    res = evaluate_real(model, rsna, rsna, fractions=(0.5, 1.0), n_prompts=4, progress=False)
    for key in ("zero_shot_auc", "probe_auc@0.5", "probe_auc@1", "few_shot_gain@1"):
        assert np.isfinite(res[key]), key
    assert res["probe_auc@1"] == pytest.approx(1.0)  # bright vs dark images: linearly separable features
    # SIIM (binary -> "pneumothorax")
    m = np.zeros((1024, 1024), bool)
    m[10:20, 10:20] = True
    sroot = write_siim(tmp_path / "siim", size=32, records=[dict(image_id=f"s{k}", masks=[m] if k % 2 else [])
                                                            for k in range(6)])
    siim = SIIMPneumothorax(sroot, size=16)
    e = embed_images(model, siim, progress=False)
    assert e["image_emb"].shape == (6, 16) and e["labels"].tolist() == [[0.0], [1.0]] * 3
    assert zero_shot_real(model, siim, n_prompts=4, progress=False)["n"] == 6


def test_mimic_through_the_pipeline_embedding(tmp_path):
    """MIMIC items have the CXRDataset keys: the library's embed() consumes the dataset directly."""
    from medvlp_lib.eval import embed

    ds = MIMICCXR(make_mimic(tmp_path / "m"), "train", size=16)
    out = embed(HashDual(), ds, batch_size=2, device="cpu")
    assert out["image_emb"].shape == (3, 16) and out["texts"] == ds.texts
    assert out["labels"].shape == (3, len(ds.label_names))
