"""PlacentaCLIP on-disk loader on a fixture tree in the exact layout (tiny JPEGs / PNGs written with PIL)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medvlp_lib.data.real.fixtures import write_placenta
from medvlp_lib.data.real.placenta import PLACENTA_LABELS, PlacentaDataset, read_labels, read_reports

REPORTS = {
    "P001": ["Meconium-laden macrophages in the membranes.", "Acute chorioamnionitis."],
    "P002": "Unremarkable placenta.",
    "P003": ["Marginal cord insertion."],
    "P004": ["Fetal inflammatory response, stage 2."],
    "P999": ["Report without a photograph."],
}
LABEL_ROWS = [  # studyid, meconium, fir, mir, chorioamnionitis, insertion
    ("P003", "0", "0", "1", "0", "1"),
    ("P004", "1", "1", "", "1", "0"),
]


def _colour(i: int) -> tuple[int, int, int]:
    return (40 * i % 256, 255 - 30 * i, 90)


def make_tree(root, with_masks=True):
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[2:10, 4:12] = 255
    labels = {sid: [None if v == "" else float(v) for v in vals] for sid, *vals in LABEL_ROWS}
    records = [dict(study_id=sid, report=REPORTS.get(sid), labels=labels.get(sid),  # P005: no report, no label
                    image=np.full((12, 16, 3), _colour(i), np.uint8), mask=mask)
               for i, sid in enumerate(["P001", "P002", "P003", "P004", "P005"])]
    records.append(dict(study_id="P999", report=REPORTS["P999"], image=False, mask=False))
    return write_placenta(root, records=records, masks=with_masks)


def test_round_trip_all_split(tmp_path):
    root = make_tree(tmp_path / "placenta")
    ds = PlacentaDataset(root, split="all", size=(6, 8), with_mask=True)
    assert ds.uids == ["P001", "P002", "P003", "P004"]
    assert ds.skipped == {"no_report_or_label": 1, "report_without_image": 1}
    item = ds[0]
    assert item["image"].shape == (3, 6, 8) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0
    # uniform-colour JPEG round trip: mean colour within JPEG error of what we wrote
    np.testing.assert_allclose(item["image"].mean(dim=(1, 2)).numpy() * 255, _colour(0), atol=4)
    assert item["text"] == "Meconium-laden macrophages in the membranes. Acute chorioamnionitis."
    assert item["uid"] == "P001" and item["index"] == 0
    assert torch.isnan(item["labels"]).all() and item["labels"].shape == (len(PLACENTA_LABELS),)
    assert item["mask"].dtype == torch.bool and item["mask"].shape == (6, 8)
    assert item["mask"].any() and not item["mask"].all()
    lab = ds[3]["labels"]
    assert lab[:2].tolist() == [1.0, 1.0] and torch.isnan(lab[2]) and lab[3:].tolist() == [1.0, 0.0]
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (4, 3, 6, 8) and batch["text"][1] == "Unremarkable placenta."


def test_splits_partition_and_grayscale(tmp_path):
    root = make_tree(tmp_path / "p")
    pre = PlacentaDataset(root, split="pretrain", size=8)
    test = PlacentaDataset(root, split="test", size=8, grayscale=True)
    assert pre.uids == ["P001", "P002"] and test.uids == ["P003", "P004"]
    assert not set(pre.uids) & set(test.uids)
    assert test[0]["image"].shape == (1, 8, 8)
    assert test.labels.shape == (2, 5) and test.labels[0].tolist() == [0, 0, 1, 0, 1]
    assert test.texts[0] == "Marginal cord insertion."


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="placenta root .* does not exist; expected layout .*fetal_side"):
        PlacentaDataset(tmp_path / "nowhere")
    root = make_tree(tmp_path / "p")
    (root / "annotation_diagnosis_new.json").unlink()
    with pytest.raises(FileNotFoundError, match="annotation_diagnosis_new.json"):
        PlacentaDataset(root)
    root2 = make_tree(tmp_path / "q")
    (root2 / "placenta_test_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="placenta_test_labels.csv"):
        PlacentaDataset(root2, split="test")
    assert np.isnan(PlacentaDataset(root2, split="all", size=4).labels).all()  # optional outside "test"
    root3 = make_tree(tmp_path / "r", with_masks=False)
    with pytest.raises(FileNotFoundError, match="mask file"):
        PlacentaDataset(root3, with_mask=True)
    with pytest.raises(ValueError, match="split must be one of"):
        PlacentaDataset(root3, split="train")


def test_bad_csv_and_json(tmp_path):
    root = make_tree(tmp_path / "p")
    csv_path = root / "placenta_test_labels.csv"
    csv_path.write_text("studyid,meconium,fir,mir,insertion\nP003,0,0,1,1\n")
    with pytest.raises(ValueError, match=r"missing columns \['chorioamnionitis'\]"):
        read_labels(csv_path)
    csv_path.write_text("studyid,meconium,fir,mir,chorioamnionitis,insertion\nP003,0,yes,1,0,1\n")
    with pytest.raises(ValueError, match="line 2: column 'fir' must be numeric"):
        PlacentaDataset(root, split="test")
    csv_path.write_text("studyid,meconium,fir,mir,chorioamnionitis,insertion\nP003,0,0,1,0,1\nP003,1,1,1,1,1\n")
    with pytest.raises(ValueError, match="duplicate studyid 'P003'"):
        read_labels(csv_path)
    (root / "annotation_diagnosis_new.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_reports(root / "annotation_diagnosis_new.json")
    (root / "annotation_diagnosis_new.json").write_text(json.dumps({"P001": 3}))
    with pytest.raises(ValueError, match="entry 'P001' must be a string or a list of strings"):
        read_reports(root / "annotation_diagnosis_new.json")


def test_corrupt_image(tmp_path):
    root = make_tree(tmp_path / "p")
    (root / "fetal_side" / "P002.jpg").write_bytes(b"this is not a jpeg")
    ds = PlacentaDataset(root, split="pretrain", size=4)  # lazy: construction succeeds
    assert ds[0]["uid"] == "P001"
    with pytest.raises(ValueError, match=r"could not read image .*P002\.jpg"):
        ds[1]
    with pytest.raises(ValueError, match=r"P002\.jpg"):
        PlacentaDataset(root, split="pretrain", size=4, check=True)


def test_empty_split_and_mismatched_ids(tmp_path):
    root = make_tree(tmp_path / "p")
    (root / "annotation_diagnosis_new.json").write_text(json.dumps({"X1": "text"}))
    with pytest.raises(ValueError, match="split 'pretrain' .* is empty"):
        PlacentaDataset(root, split="pretrain")
