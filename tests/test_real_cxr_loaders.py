"""Real CXR loaders (RSNA, SIIM, COVIDx) on tiny fixture trees in the exact on-disk layouts, plus the real
label CSVs shipped inside torchxrayvision for the CSV / RLE logic."""
from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from medvlp_lib.data.real.covidx import COVIDX_BINARY, COVIDX_CLASSES, COVIDx, read_covidx_split
from medvlp_lib.data.real.fixtures import write_covidx, write_rsna, write_siim
from medvlp_lib.data.real.rsna import RSNAPneumonia, boxes_to_mask, load_image_gray, read_rsna_labels, xrv_data_file
from medvlp_lib.data.real.siim import SIIMPneumothorax, mask_from_rles, read_siim_rle, rle_decode, rle_encode

torch.set_num_threads(1)


def _png(path, h=32, w=32, value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w), dtype=np.uint8) if value is None else np.full((h, w), value, np.uint8)
    Image.fromarray(a, mode="L").save(path)
    return a


# ---------------------------------------------------------------------------------------------- SIIM RLE
def _kaggle_rle2mask(rle, width, height):
    """The competition's reference decoder (as in torchxrayvision's SIIM dataset), then transposed."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    current = 0
    for start, length in zip(array[0::2], array[1::2]):
        current += start
        mask[current:current + length] = 1
        current += length
    return mask.reshape(width, height).T


def test_rle_hand_made_column_major_relative():
    # 4x3 grid (H=4, W=3); column-major pixel numbers: col0 = 0..3, col1 = 4..7, col2 = 8..11
    m = rle_decode("1 2 3 2", height=4, width=3)  # pixels 1,2 then offset 3 from end (3) -> 6,7
    expected = np.zeros((4, 3), bool)
    expected[1:3, 0] = True
    expected[2:4, 1] = True
    assert np.array_equal(m, expected)
    assert rle_encode(expected) == "1 2 3 2"
    assert rle_encode(np.zeros((4, 3), bool)) == "-1"
    assert not rle_decode("-1", 4, 3).any() and not rle_decode(" -1", 4, 3).any()


def test_rle_errors():
    with pytest.raises(ValueError, match="even number"):
        rle_decode("1 2 3", 4, 3)
    with pytest.raises(ValueError, match="beyond"):
        rle_decode("10 5", 4, 3)
    with pytest.raises(ValueError, match="integers"):
        rle_decode("a b", 4, 3)


def test_real_siim_csv_round_trip_and_reference_decoder():
    table = read_siim_rle()  # torchxrayvision's copy, header "ImageId, EncodedPixels"
    with gzip.open(xrv_data_file("siim-pneumothorax-train-rle.csv.gz"), "rt") as f:
        assert f.readline().rstrip("\n") == "ImageId, EncodedPixels"
    assert len(table) > 10000
    checked, multi = 0, None
    for iid, rles in list(table.items())[:60]:
        for r in rles:
            if r == "-1":
                continue
            m = rle_decode(r)
            assert m.shape == (1024, 1024)
            assert rle_encode(m) == r
            assert np.array_equal(m, _kaggle_rle2mask(r, 1024, 1024).astype(bool))
            checked += 1
        if len(rles) > 1 and multi is None:
            multi = rles
    assert checked >= 10 and multi is not None
    union = mask_from_rles(multi)
    parts = [rle_decode(r) for r in multi]
    assert np.array_equal(union, np.logical_or.reduce(parts))
    assert union.sum() >= max(p.sum() for p in parts)


def test_siim_fixture_tree(tmp_path):
    m1 = np.zeros((1024, 1024), bool)
    m1[100:200, 300:420] = True
    m2 = np.zeros((1024, 1024), bool)
    m2[600:700, 50:60] = True
    # Kaggle header with the leading space; image A has two regions, B none, C has no image on disk
    root = write_siim(tmp_path / "siim", size=64, records=[
        dict(image_id="A", masks=[m1, m2]), dict(image_id="B", masks=[]), dict(image_id="C", masks=["5 5"],
                                                                              image=False)])
    assert (root / "train-rle.csv").read_text().startswith(f"ImageId, EncodedPixels\nA, {rle_encode(m1)}\n")
    (root / "png_images" / "sub").mkdir()
    (root / "png_images" / "B.png").rename(root / "png_images" / "sub" / "B.png")  # any depth
    ds = SIIMPneumothorax(root, size=64)
    assert ds.uids == ["A", "B"] and ds.skipped == 1
    assert ds.labels.tolist() == [1.0, 0.0]
    full = ds.mask(0, size=1024)
    assert np.array_equal(full, m1 | m2)
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and item["mask"].shape == (64, 64)
    # nearest-neighbour downsample of the 1024 mask: box 100:200 x 300:420 -> rows 6..12, cols 18..26
    assert item["mask"][8, 20] and not item["mask"][30, 30]
    assert item["mask"].sum() > 0 and not ds[1]["mask"].any()
    with pytest.raises(FileNotFoundError, match="expected layout"):
        SIIMPneumothorax(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------- RSNA
def test_real_rsna_csv():
    table = read_rsna_labels()  # torchxrayvision's copy of stage_2_train_labels.csv
    t, boxes = table["00436515-870c-4b36-a041-de91049b9ab4"]
    assert t == 1 and boxes.tolist() == [[264.0, 152.0, 213.0, 379.0], [562.0, 152.0, 256.0, 453.0]]
    t0, b0 = table["0004cfab-14fd-4e49-80ba-63a80b6bddd6"]
    assert t0 == 0 and b0.shape == (0, 4)
    pos = sum(v[0] for v in table.values())
    assert 0.15 < pos / len(table) < 0.3  # ~22.5% positive in stage 2


def test_rsna_fixture_tree(tmp_path):
    root = write_rsna(tmp_path / "rsna", size=64, records=[
        dict(patient_id="p1", image=np.full((64, 64), 255, np.uint8)),
        dict(patient_id="p2", boxes=[(0, 0, 512, 256), (512, 512, 512, 512)]),
        dict(patient_id="p3", image=False)])
    assert (root / "stage_2_train_labels.csv").read_text() == (
        "patientId,x,y,width,height,Target\n"
        "p1,,,,,0\n"
        "p2,0.0,0.0,512.0,256.0,1\n"
        "p2,512.0,512.0,512.0,512.0,1\n"
        "p3,,,,,0\n")
    ds = RSNAPneumonia(root, size=32)
    assert ds.uids == ["p1", "p2"] and ds.skipped == 1
    assert ds.labels.tolist() == [0.0, 1.0]
    it = ds[1]
    assert it["image"].shape == (1, 32, 32) and it["boxes"].shape == (2, 4)
    expected = np.zeros((32, 32), bool)
    expected[0:8, 0:16] = True
    expected[16:32, 16:32] = True
    assert np.array_equal(it["mask"].numpy(), expected)
    assert float(ds[0]["image"].min()) == pytest.approx(1.0)
    assert not ds[0]["mask"].any()
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,x,y,w,h,label\n")
    with pytest.raises(ValueError, match="expected columns patientId"):
        read_rsna_labels(bad)
    with pytest.raises(FileNotFoundError, match="stage_2_train_images"):
        RSNAPneumonia(tmp_path / "empty")


def test_boxes_to_mask_scaling():
    m = boxes_to_mask(np.array([[256, 512, 256, 256]]), 8)
    assert m.sum() == 4 and m[4:6, 2:4].all()


def test_load_image_gray_pads_to_square(tmp_path):
    _png(tmp_path / "r.png", 20, 40, value=200)
    a = load_image_gray(tmp_path / "r.png", 16)
    assert a.shape == (16, 16)
    assert a[8, 8] == pytest.approx(200 / 255, abs=1e-3) and a[0, 8] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("pydicom") is not None, reason="pydicom installed")
def test_dicom_without_pydicom_says_so(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(ImportError, match="pydicom"):
        load_image_gray(tmp_path / "x.dcm")


# ---------------------------------------------------------------------------------------------- COVIDx
def test_covidx_fixture_three_class(tmp_path):
    root = write_covidx(tmp_path / "covidx", size=32, records=[
        dict(patient_id="1", filename="a.png", label="normal", source="rsna"),
        dict(patient_id="2", filename="b.jpg", label="pneumonia", source="rsna", image=np.zeros((32, 32), np.uint8)),
        dict(patient_id="3", filename="c.png", label="COVID-19", source="cohen"),
        dict(patient_id="4", filename="missing.png", label="normal", source="sirm", image=False)])
    lines = (root / "train.txt").read_text().splitlines(keepends=True)
    assert lines[2] == "3 c.png COVID-19 cohen\n"
    (root / "train.txt").write_text("".join(lines[:2] + ["\n"] + lines[2:]))  # a blank line is tolerated
    ds = COVIDx(root, "train", size=16)
    assert ds.classes == COVIDX_CLASSES
    assert ds.uids == ["a.png", "b.jpg", "c.png"] and ds.skipped == 1
    assert ds.labels.tolist() == [0, 1, 2]
    it = ds[2]
    assert it["image"].shape == (1, 16, 16) and int(it["label"]) == 2
    assert it["patient_id"] == "3" and it["source"] == "cohen"


def test_covidx_binary_and_errors(tmp_path):
    f = tmp_path / "test.txt"
    f.write_text("p1 x.png positive bimcv\np2 y.png negative rsna\n")
    entries, classes = read_covidx_split(f)
    assert classes == COVIDX_BINARY and [e.label for e in entries] == ["positive", "negative"]
    f.write_text("p1 x.png positive bimcv\np2 y.png normal rsna\n")
    with pytest.raises(ValueError, match="mixes both"):
        read_covidx_split(f)
    f.write_text("p1 x.png covid bimcv\n")
    with pytest.raises(ValueError, match="unknown label"):
        read_covidx_split(f)
    f.write_text("p1 x.png\n")
    with pytest.raises(ValueError, match="test.txt:1"):
        read_covidx_split(f)
    with pytest.raises(ValueError, match="split must be one of"):
        COVIDx(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="train.txt"):
        COVIDx(tmp_path, "train")
