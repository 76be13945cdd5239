"""CheXpert-v1.0-small loader (uncertain-label policies, library labels, layout) and the CheXpert 5x200 protocol,
on fixture trees from medvlp_lib.data.real.fixtures and on the real training CSV shipped in torchxrayvision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp_lib.data.real.chexpert import (CHEXPERT_5, CHEXPERT_5_LIBRARY, UNCERTAIN_MGCA, CheXpert, chexpert_5x200,
                                           chexpert_5x200_rows, chexpert_image_path, read_chexpert_csv)
from medvlp_lib.data.real.common import xrv_data_file
from medvlp_lib.data.real.fixtures import write_chexpert
from medvlp_lib.data.real.mimic_cxr import CHEXPERT_LABELS, LIBRARY_MAP
from medvlp_lib.eval.retrieval import class_precision_at_k

COL = {c: j for j, c in enumerate(CHEXPERT_LABELS)}
RECORDS = [  # patient 1: two views; patient 2: uncertain effusion + edema; patient 3: not on disk; 4: valid
    dict(split="train", patient=1, view=1, labels={"Cardiomegaly": 1, "Support Devices": 0}, sex="Male", age=71),
    dict(split="train", patient=1, view=2, frontal=False, labels={"Cardiomegaly": 1}),
    dict(split="train", patient=2, projection="PA", labels={"Pleural Effusion": -1, "Edema": 1, "Consolidation": -1}),
    dict(split="train", patient=3, labels={"No Finding": 1}, image=False),
    dict(split="train", patient=5, labels={"Lung Opacity": -1, "Pneumonia": 1}),
    dict(split="valid", patient=64541, labels={c: 0 for c in CHEXPERT_LABELS} | {"No Finding": 1}),
]


@pytest.fixture(scope="module")
def real_csv():
    return read_chexpert_csv(xrv_data_file("chexpert_train.csv.gz"))


@pytest.fixture()
def root(tmp_path):
    return write_chexpert(tmp_path / "CheXpert-v1.0-small", records=RECORDS, seed=0, size=24)


def test_layout_paths_and_attributes(root):
    ds = CheXpert(root, "train", size=16)
    assert ds.uids == ["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                       "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",
                       "CheXpert-v1.0-small/train/patient00005/study1/view1_frontal.jpg"]
    assert ds.skipped == 1                                            # patient 3 listed, not on disk
    assert ds.files[0] == root / "train/patient00001/study1/view1_frontal.jpg"
    assert ds.patient_ids == ["patient00001", "patient00002", "patient00005"] and ds.study_ids[0] == "study1"
    assert ds.sexes[0] == "Male" and ds.ages[0] == 71 and ds.projections[1] == "PA" and set(ds.views) == {"Frontal"}
    it = ds[1]
    assert it["image"].shape == (1, 16, 16) and it["text"] == "" and it["uid"] == ds.uids[1]
    assert it["labels"].shape == it["label_mask"].shape == (len(LIBRARY_MAP),)
    both = CheXpert(root, "train", size=16, views=("Frontal", "Lateral"))
    assert len(both) == 4 and both.views.count("Lateral") == 1
    assert len(CheXpert(root.parent, "valid", size=8)) == 1           # a root holding CheXpert-v1.0-small/ is followed
    assert chexpert_image_path(root, "test/patient64741/study1/view1_frontal.jpg") == root / "test/patient64741" \
        / "study1/view1_frontal.jpg"                                   # the CheXlocalize test.csv has no prefix


def test_uncertain_policies(root):
    raw = CheXpert(root, "train", size=8, labels="chexpert")
    assert raw.label_names == CHEXPERT_LABELS and np.isnan(raw.raw_labels[0, COL["Edema"]])
    assert raw.raw_labels[1, COL["Pleural Effusion"]] == -1
    zeros = raw.labels
    assert zeros[1, COL["Pleural Effusion"]] == 0 and zeros[1, COL["Edema"]] == 1 and (raw.label_mask == 1).all()
    ones = CheXpert(root, "train", size=8, labels="chexpert", uncertain="ones")
    assert ones.labels[1, COL["Pleural Effusion"]] == 1 and ones.labels[1, COL["Consolidation"]] == 1
    ign = CheXpert(root, "train", size=8, labels="chexpert", uncertain="ignore")
    assert ign.label_mask[1, COL["Pleural Effusion"]] == 0 and ign.labels[1, COL["Pleural Effusion"]] == 0
    assert ign.label_mask.sum() == ign.label_mask.size - 3             # exactly the three -1 entries are masked
    assert torch.equal(ign[1]["label_mask"], torch.from_numpy(ign.label_mask[1]))
    per = CheXpert(root, "train", size=8, labels="chexpert", uncertain=UNCERTAIN_MGCA)
    assert per.labels[1, COL["Pleural Effusion"]] == 1 and per.labels[1, COL["Consolidation"]] == 0
    assert per.labels[2, COL["Lung Opacity"]] == 0                    # not in the dict: U-Zeros
    # library names: opacity = Lung Opacity | Consolidation | Pneumonia
    lib = CheXpert(root, "train", size=8, uncertain="ignore")
    j = lib.label_names.index("opacity")
    assert lib.labels[2, j] == 1 and lib.label_mask[2, j] == 1        # Pneumonia positive beats the uncertain opacity
    assert lib.labels[1, j] == 0 and lib.label_mask[1, j] == 0        # only an uncertain consolidation: unknown
    e = lib.label_names.index("pleural_effusion")
    assert lib.label_mask[1, e] == 0 and lib.label_mask[0, e] == 1
    assert CheXpert(root, "train", size=8, uncertain="one").labels[1, e] == 1   # MIMICCXR's spelling works too


def test_errors_name_the_file_and_what_was_expected(root, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere.*expected layout.*stanfordmlgroup"):
        CheXpert(tmp_path / "nowhere")
    monkeypatch.delenv("MEDVLP_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="MEDVLP_DATA.*CheXpert-v1.0-small"):
        CheXpert()
    with pytest.raises(ValueError, match="uncertain must be 'zeros'"):
        CheXpert(root, uncertain="half")
    with pytest.raises(ValueError, match=r"unknown observation\(s\) \['Effusion'\]"):
        CheXpert(root, uncertain={"Effusion": "ones"})
    with pytest.raises(ValueError, match="split must be"):
        CheXpert(root, "dev")
    with pytest.raises(FileNotFoundError, match="test.csv not found"):
        CheXpert(root, "test")
    text = (root / "train.csv").read_text().replace(",1.0,", ",2.0,", 1)
    (root / "train.csv").write_text(text)
    with pytest.raises(ValueError, match=r"train\.csv, line 2: column .* must be 1, 0, -1 or blank, got '?2"):
        CheXpert(root)
    (root / "valid.csv").write_text("Path,Sex\nx,Male\n")
    with pytest.raises(ValueError, match=r"valid\.csv: missing columns \['Age'"):
        CheXpert(root, "valid")


def test_real_csv_from_torchxrayvision(real_csv):
    df = real_csv
    assert len(df) == 223414 and df["Path"].iloc[0].startswith("CheXpert-v1.0-small/train/patient00001/")
    assert set(np.unique(df[list(CHEXPERT_LABELS)].to_numpy()[~np.isnan(df[list(CHEXPERT_LABELS)].to_numpy())])) \
        == {-1.0, 0.0, 1.0}
    assert (df["Frontal/Lateral"] == "Frontal").sum() == 191027


def test_5x200_rows_equal_the_public_preprocessing_on_the_real_csv(real_csv):
    """rule='mgca', seed 0 on the frontal training CSV = GLoRIA / MGCA's pandas selection (fillna(0), the target
    1 and the twelve other observations but No Finding 0, then DataFrame.sample(200, random_state=0))."""
    fr = real_csv[real_csv["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
    rows, cls = chexpert_5x200_rows(fr[list(CHEXPERT_LABELS)].to_numpy(np.float32), 200, seed=0, rule="mgca")
    filled = fr.fillna(0)
    for k, c in enumerate(CHEXPERT_5):
        keep = filled[c] == 1
        for other in CHEXPERT_LABELS:
            if other not in (c, "No Finding"):
                keep &= filled[other] == 0
        expected = filled[keep].sample(n=200, random_state=0).index.to_numpy()
        assert np.array_equal(rows[cls == k], expected), c
    five, fcls = chexpert_5x200_rows(fr[list(CHEXPERT_LABELS)].to_numpy(np.float32), 200, seed=0)
    raw = fr[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    sel = raw[five][:, [COL[c] for c in CHEXPERT_5]]
    assert ((sel == 1).sum(1) == 1).all() and ((sel == 1).argmax(1) == fcls).all()
    assert len(set(five.tolist())) == 1000
    assert not np.array_equal(five, rows)                            # the two rules are different draws
    assert not np.array_equal(chexpert_5x200_rows(raw, 200, seed=1)[0], five)


def test_5x200_subset_on_a_fixture_tree(tmp_path):
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small", n=60, seed=2, size=16)
    ds = CheXpert(root, "train", size=16)
    sub = chexpert_5x200(ds, n_per_class=6, seed=0)
    assert len(sub) == 30 and sub.classes == tuple(CHEXPERT_5_LIBRARY[c] for c in CHEXPERT_5)
    assert sub.label_names == sub.classes and sub.labels.shape == (30, 5) and (sub.labels.sum(1) == 1).all()
    assert sub.class_index.tolist() == sorted(sub.class_index.tolist())
    raw = sub.raw_labels[:, [COL[c] for c in CHEXPERT_5]]
    assert (raw[np.arange(30), sub.class_index] == 1).all() and ((raw == 1).sum(1) == 1).all()
    assert sub[0]["labels"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0] and sub[0]["uid"] in ds.uids
    assert len(ds) == 60 and ds.labels.shape[1] == len(LIBRARY_MAP)   # the parent dataset is untouched
    assert chexpert_5x200(CheXpert(root, "train", size=16, labels="chexpert"), 2).label_names == CHEXPERT_5
    emb = torch.nn.functional.one_hot(torch.from_numpy(sub.class_index), 5).float()
    assert class_precision_at_k(emb, emb, sub.labels, ks=(1, 5))["i2t_P@5"] == 1.0   # ready for class-level retrieval
    with pytest.raises(ValueError, match=r"only \d+ eligible images for 'Atelectasis', 50 requested"):
        chexpert_5x200(ds, n_per_class=50)
    with pytest.raises(ValueError, match="rule must be"):
        chexpert_5x200(ds, rule="strict")
    with pytest.raises(ValueError, match="seed"):
        chexpert_5x200(ds, seed=1.5)
