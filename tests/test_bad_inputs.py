"""Every bad input of issue 14 / issue 11 (item 8): a clear error naming the file / argument and what was
expected, or the documented skip-and-count, never a silent wrong label, a normal film for a typo, or NaN."""
from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from medvlp_lib.data.real.common import CorruptImageError, load_image_gray
from medvlp_lib.data.real.chexpert import CheXpert
from medvlp_lib.data.real.covidx import COVIDx
from medvlp_lib.data.real.fixtures import (write_chexpert, write_covidx, write_mimic_cxr, write_rsna, write_siim,
                                           write_vindr)
from medvlp_lib.data.real.mimic_cxr import MIMICCXR, mimic_image_path
from medvlp_lib.data.real.rsna import RSNAPneumonia
from medvlp_lib.data.real.siim import SIIMPneumothorax, read_siim_rle, rle_runs
from medvlp_lib.data.real.vindr import VinDrCXR

SEEDS = [1.7, "3", [1.5], True, -1]


# ------------------------------------------------------------------------------------------------ helpers
def _jpg(path, truncated=False, seed=0, size=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2] if truncated else data)
    return path


def _truncate(path):
    """Cut a file in half, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rsna(root, bad=False):
    write_rsna(root, size=48, ext=".jpg", records=[dict(patient_id="p1"), dict(patient_id="p2",
                                                                               boxes=[(0, 0, 512, 512)])])
    if bad:
        _truncate(root / "stage_2_train_images" / "p2.jpg")
    return root


def _siim(root, rows, bad=False):
    write_siim(root, size=48, ext=".jpg", records=[dict(image_id=i, masks=[r]) for i, r in rows])
    if bad:
        _truncate(root / "png_images" / f"{rows[-1][0]}.jpg")
    return root


def _covidx(root, bad=False):
    write_covidx(root, size=48, records=[dict(patient_id="1", filename="a.jpg", label="normal", source="src"),
                                         dict(patient_id="2", filename="b.jpg", label="COVID-19", source="src")])
    if bad:
        _truncate(root / "train" / "b.jpg")
    return root


def _mimic(root, bad=False):
    rows = [("d1", 10000032, 50000001), ("d2", 10000033, 50000002)]
    write_mimic_cxr(root, size=48, gz=False, images=[dict(dicom_id=d, subject_id=s, study_id=t) for d, s, t in rows],
                    studies={t: {"labels": {"Cardiomegaly": 1}, "impression": "Enlarged heart.",
                                 "findings": "The heart is enlarged."} for _, _, t in rows})
    if bad:
        _truncate(mimic_image_path(root, *rows[1][1:], rows[1][0]))
    return root


def _vindr(root, bad=False):
    write_vindr(root, size=48, ext=".jpg", label_names=("Cardiomegaly", "No finding"),
                records=[dict(image_id="t1", reads=[(None, {"Cardiomegaly"})]),
                         dict(image_id="t2", reads=[(None, {"No finding"})]),
                         dict(image_id="t3", reads=[(None, {"No finding"})])])
    if bad:
        _truncate(root / "test" / "t3.jpg")
    return root


def _chexpert(root, bad=False):
    write_chexpert(root, size=48, records=[dict(split="train", patient=1, labels={"Edema": 1}),
                                           dict(split="train", patient=2, view=2, labels={"Edema": -1})])
    if bad:
        _truncate(root / "train" / "patient00002" / "study1" / "view2_frontal.jpg")
    return root


LOADERS = {
    "rsna": (_rsna, lambda r, **k: RSNAPneumonia(r, size=16, **k), "p2.jpg"),
    "siim": (lambda r, bad=False: _siim(r, [("i1", "-1"), ("i2", "1 5")], bad), lambda r, **k: SIIMPneumothorax(
        r, size=16, **k), "i2.jpg"),
    "covidx": (_covidx, lambda r, **k: COVIDx(r, "train", size=16, **k), "b.jpg"),
    "mimic": (_mimic, lambda r, **k: MIMICCXR(r, "train", size=16, **k), "d2.jpg"),
    "vindr": (_vindr, lambda r, **k: VinDrCXR(r, "test", size=16, **k), "t3.jpg"),
    "chexpert": (_chexpert, lambda r, **k: CheXpert(r, "train", size=16, **k), "view2_frontal.jpg"),
}


# --------------------------------------------------------------------------------------------- SIIM RLE
@pytest.mark.parametrize("rle,why", [("5 x", "integers"), ("1 2 3", "even number"), ("1048570 10", "beyond"),
                                     ("-3 4", "integers|non-negative")])
def test_malformed_siim_rle_is_an_error_at_construction_naming_image_and_csv(tmp_path, rle, why):
    root = _siim(tmp_path / "siim", [("i1", "-1"), ("bad_image", rle)])
    with pytest.raises(ValueError, match=rf"train-rle\.csv, line 3: ImageId bad_image: malformed .*({why})"):
        SIIMPneumothorax(root, size=16)
    with pytest.raises(ValueError, match="bad_image"):
        read_siim_rle(root / "train-rle.csv")


def test_siim_valid_rows_still_give_the_right_labels(tmp_path):
    root = _siim(tmp_path / "siim", [("i1", "-1"), ("i2", "1 5"), ("i2", "10 2")])
    ds = SIIMPneumothorax(root, size=16)
    assert ds.uids == ["i1", "i2"] and ds.labels.tolist() == [0.0, 1.0]
    assert rle_runs("1 5 3 2", 4, 4) == [(1, 5), (9, 2)]
    assert ds.mask(1, size=1024).sum() == 7


# ----------------------------------------------------------------------------------------------- renderer
def test_unknown_finding_name_is_an_error_with_suggestions():
    from medvlp_lib.data import load_reports
    from medvlp_lib.data.render import render, render_batch
    from medvlp_lib.data.reports import parse_mesh_term

    with pytest.raises(ValueError, match=r"unknown finding 'Cardiomegally'.*did you mean 'cardiomegaly'"):
        render(["Cardiomegally"], size=64)
    with pytest.raises(ValueError, match=r"unknown finding 'Pleural Efusion'.*'pleural effusion'"):
        render_batch([["Pleural Efusion/right"]], 0, 64)
    with pytest.raises(ValueError, match="unknown finding"):
        render(parse_mesh_term("Cardiomegally/mild"), size=64)
    # known names (labels, qualified names, known non-label findings) in any case still render
    for term in ("cardiomegaly/mild", "Cardiac Shadow/enlarged", "Spine/degenerative", "normal"):
        assert render([term], size=64).image.shape == (64, 64)
    # a Report's own unknown terms (real IU annotations) are drawn as nothing, not an error
    corpus = load_reports()
    assert corpus.unknown_terms
    name = next(iter(corpus.unknown_terms))
    rep = next(r for r in corpus if any(f.name == name for f in r.findings_parsed))
    assert render(rep, size=64).image.shape == (64, 64)


# -------------------------------------------------------------------------------------------------- seeds
def _seed_entry_points():
    from medvlp_lib.data import CXRDataset
    from medvlp_lib.data.ihc import ihc_cohort
    from medvlp_lib.data.natural import NaturalCrops
    from medvlp_lib.data.pathology import (CohortConfig, SlideBatches, cv_folds, simulate_cohort,
                                           simulate_external_cohort, simulate_slide)
    from medvlp_lib.data.render import render, render_batch
    from medvlp_lib.data.reports import split_ids
    from medvlp_lib.data.text import build_prompts
    from medvlp_lib.methods.ssl import SSLConfig
    from medvlp_lib.train import StepBatches, Trainer, step_seed
    from medvlp_lib.utils import seed_everything

    cohort = simulate_cohort(4, seed=0, n_patches=(5, 6), feature_dim=4, n_genes=4, n_modules=2)
    return {
        "seed_everything": lambda s: seed_everything(s),
        "render": lambda s: render(["normal"], seed=s, size=64),
        "render_batch": lambda s: render_batch([["normal"]], s, 64),
        "render_batch per item": lambda s: render_batch([["normal"]], [s], 64),
        "CXRDataset": lambda s: CXRDataset("test", size=64, seed=s, n=2, progress=False),
        "split_ids": lambda s: split_ids(["a", "b"], seed=s),
        "build_prompts": lambda s: build_prompts("opacity", n=2, seed=s),
        "simulate_cohort": lambda s: simulate_cohort(4, seed=s),
        "simulate_external_cohort": lambda s: simulate_external_cohort(4, seed=s),
        "simulate_slide": lambda s: simulate_slide(CohortConfig(feature_dim=4, n_genes=4, n_modules=2), label=1,
                                                   n_patches=3, seed=s),
        "cv_folds": lambda s: cv_folds(list("abcdefgh"), [0, 1] * 4, k=2, seed=s),
        "SlideBatches": lambda s: SlideBatches(cohort, seed=s),
        "NaturalCrops": lambda s: NaturalCrops(n=2, seed=s),
        "ihc_cohort": lambda s: ihc_cohort(np.zeros((4, 2), np.float32), seed=s),
        "StepBatches": lambda s: StepBatches(list(range(4)), 2, seed=s),
        "Trainer": lambda s: Trainer(_Lin(), seed=s, device="cpu"),
        "step_seed": lambda s: step_seed(s, 0),
        "SSLConfig": lambda s: SSLConfig(seed=s),
    }


class _Lin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def training_step(self, batch):
        return {"loss": self.w(batch).sum()}


@pytest.mark.parametrize("name", sorted(_seed_entry_points()))
@pytest.mark.parametrize("seed", SEEDS, ids=repr)
def test_bad_seeds_are_rejected_naming_the_argument(name, seed):
    fn = _seed_entry_points()[name]
    with pytest.raises(ValueError, match=r"seed.* must be a non-negative integer"):
        fn(seed)


def test_good_seeds_still_work():
    from medvlp_lib.data.reports import split_ids

    entry = _seed_entry_points()
    for name in ("seed_everything", "render", "split_ids", "build_prompts", "step_seed", "StepBatches", "cv_folds"):
        entry[name](3)
        entry[name](np.int64(3))
    assert split_ids(["a", "b", "c"], seed=np.int64(5)) == split_ids(["a", "b", "c"], seed=5)


@pytest.mark.parametrize("seeds", [[1.7], ["3"], [[1.5]], [True], 3, "3"], ids=repr)
def test_experiment_runner_rejects_bad_seeds(seeds):
    from medvlp_lib.experiments import run

    with pytest.raises(ValueError, match="seeds"):
        run("clip_batch_size", "fast", seeds=seeds, write=False, verbose=False)


@pytest.mark.parametrize("name", ["mimic", "vindr", "chexpert"])
def test_real_loader_subset_seed_is_checked(tmp_path, name):
    make, build, _ = LOADERS[name]
    root = make(tmp_path / name)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        build(root, n=1, seed=1.7)
    assert len(build(root, n=1, seed=3)) == 1


# ------------------------------------------------------------------------------------- corrupt images
def test_truncated_jpeg_names_the_file(tmp_path):
    path = _jpg(tmp_path / "cut.jpg", truncated=True)
    with pytest.raises(CorruptImageError, match=r"cut\.jpg .*truncated"):
        load_image_gray(path, 16)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(CorruptImageError, match=r"text\.png"):
        load_image_gray(tmp_path / "text.png")
    with pytest.raises(FileNotFoundError):
        load_image_gray(tmp_path / "gone.png")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_corrupt_image_policy_is_stop_with_the_path_in_every_cxr_loader(tmp_path, name):
    make, build, bad_file = LOADERS[name]
    root = make(tmp_path / name, bad=True)
    ds = build(root)                                 # listed and on disk: kept (the file is not skipped)
    bad = next(i for i, f in enumerate(ds.files) if f.name == bad_file)
    good = next(i for i in range(len(ds)) if i != bad)
    assert torch.isfinite(ds[good]["image"]).all()
    with pytest.raises(CorruptImageError, match=rf"{bad_file}.*truncated"):
        ds[bad]
    with pytest.raises(CorruptImageError, match=rf"1 of {len(ds)} images cannot be read.*{bad_file}"):
        build(root, check=True)                      # found when the dataset is built
    clean = build(make(tmp_path / f"{name}-ok"), check=True)
    assert len(clean) == len(ds) and clean.skipped == ds.skipped


def test_index_rule(tmp_path):
    ds = COVIDx(_covidx(tmp_path / "c"), "train", size=16)
    assert ds[-1]["uid"] == "b.jpg" and ds[np.int64(0)]["uid"] == "a.jpg"
    with pytest.raises(TypeError, match="COVIDx index must be an integer"):
        ds[1.5]
    with pytest.raises(TypeError, match="integer"):
        ds[True]
    with pytest.raises(IndexError, match="out of range for COVIDx of length 2"):
        ds[2]


# ------------------------------------------------------------------------------------------ missing roots
@pytest.mark.parametrize("name", sorted(LOADERS) + ["placenta", "clam", "imagenet"])
def test_missing_root_names_layout_and_where_to_get_it(tmp_path, monkeypatch, name):
    from medvlp_lib.data.natural import ImageFolderCrops
    from medvlp_lib.data.real.clam_features import read_clam
    from medvlp_lib.data.real.placenta import PlacentaDataset

    build = {**{k: v[1] for k, v in LOADERS.items()}, "placenta": lambda r: PlacentaDataset(r),
             "clam": lambda r: read_clam(r), "imagenet": lambda r: ImageFolderCrops(r)}[name]
    where = r"https://|private: ask"
    with pytest.raises(FileNotFoundError, match=rf"(?s)nowhere.*expected layout.*({where})"):
        build(tmp_path / "nowhere")
    monkeypatch.delenv("MEDVLP_DATA", raising=False)
    if name not in ("clam",):  # read_clam needs an explicit root
        with pytest.raises(FileNotFoundError, match=rf"(?s)MEDVLP_DATA.*({where})"):
            build(None)


# -------------------------------------------------------------------------------------------- CLAM folders
def _h5(path, **datasets):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v


def _clam(root, slides):
    """``slides``: slide_id -> datasets of its h5 file (or a callable writing its files)."""
    for sid, ds in slides.items():
        ds(root) if callable(ds) else _h5(root / "h5_files" / f"{sid}.h5", **ds)
    (root / "h5_files").mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("case_id,slide_id,label\n" + "".join(f"c{k},{s},{k % 2}\n"
                                                                         for k, s in enumerate(slides)))
    return root


def _ok(n=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return dict(features=rng.normal(size=(n, d)).astype(np.float32), coords=np.arange(2 * n).reshape(n, 2))


def _pt_only(sid, n=5, d=4):
    def write(root):
        (root / "pt_files").mkdir(parents=True, exist_ok=True)
        torch.save(torch.zeros(n, d), root / "pt_files" / f"{sid}.pt")
    return write


def _pt_dict(sid, n=5, d=4, nc=5):
    def write(root):
        (root / "pt_files").mkdir(parents=True, exist_ok=True)
        torch.save({"features": torch.zeros(n, d), "coords": torch.zeros(nc, 2)}, root / "pt_files" / f"{sid}.pt")
    return write


@pytest.mark.parametrize("bad,pattern", [
    (dict(features=np.zeros((5, 4), np.float32), coords=np.zeros((3, 2))), r"bad\.h5: N mismatch.*5 rows.*3"),
    (dict(features=np.zeros((0, 4), np.float32), coords=np.zeros((0, 2))), r"bad\.h5: empty slide"),
    (dict(features=np.zeros((5, 4), np.float32)), r"bad\.h5: missing dataset 'coords'"),
    (dict(features=np.zeros((5, 4), np.float32), coords=np.zeros((5, 3))), r"bad\.h5: 'coords' must be \[N, 2\]"),
    (dict(features=np.zeros((5, 4, 2), np.float32), coords=np.zeros((5, 2))), r"bad\.h5: 'features' must be 2-D"),
    (dict(features=np.zeros((5, 6), np.float32), coords=np.zeros((5, 2))), r"bad\.h5: feature dim D=6 but 2"),
    (_pt_only("bad"), r"bad\.pt holds features only and .*bad\.h5 .*does not exist"),
    (_pt_dict("bad", nc=4), r"bad\.pt: N mismatch"),
], ids=["n-mismatch", "empty", "no-coords", "coords-shape", "features-3d", "dim-mismatch", "pt-no-coords",
        "pt-n-mismatch"])
def test_clam_problems_are_found_when_the_cohort_is_built(tmp_path, bad, pattern):
    from medvlp_lib.data.real.clam_features import read_clam

    root = _clam(tmp_path, {"s1": _ok(), "bad": bad, "s3": _ok(seed=3)})
    for validate in ("headers", "auto", "full"):
        with pytest.raises(ValueError, match=rf"read_clam: 1 problem\(s\).*{pattern}"):
            read_clam(root, validate=validate)
    c = read_clam(root, validate="none")             # opt-out: the per-slide checks run at first read
    assert len(c) == 3 and np.isfinite(c[0].features).all()
    if "feature dim" not in pattern:                 # a D of its own is only wrong next to the other slides
        with pytest.raises(ValueError, match=r"bad\.(h5|pt)"):
            c[1]


def test_clam_nan_features_are_found_at_construction_when_small(tmp_path):
    from medvlp_lib.data.real import clam_features as cf

    f = _ok()
    f["features"][2, 1] = np.nan
    g = _ok(seed=1)
    g["features"][0, 0] = np.inf
    root = _clam(tmp_path, {"s1": _ok(), "nan": f, "inf": g})
    with pytest.raises(ValueError, match=r"2 problem\(s\).*nan\.h5: 'features' contain NaN/inf in 1 of 5.*inf\.h5"):
        cf.read_clam(root)                            # auto: the features are tiny, so values are checked too
    lazy = cf.read_clam(root, validate="headers")     # large-cohort mode: headers now, values at first read
    assert lazy.info["validated"] == "headers"
    assert np.isfinite(lazy[0].features).all()
    with pytest.raises(ValueError, match=r"nan\.h5: 'features' contain NaN/inf"):
        lazy[1]
    ok = cf.read_clam(_clam(tmp_path / "ok", {"a": _ok(), "b": _ok(seed=1)}))
    assert ok.info["validated"] == "full"


def test_clam_auto_validation_switches_to_headers_above_the_budget(tmp_path, monkeypatch):
    from medvlp_lib.data.real import clam_features as cf

    f = _ok()
    f["features"][0, 0] = np.nan
    root = _clam(tmp_path, {"s1": _ok(), "nan": f})
    monkeypatch.setattr(cf, "FULL_CHECK_BYTES", 8)
    c = cf.read_clam(root)
    assert c.info["validated"] == "headers"
    with pytest.raises(ValueError, match=r"nan\.h5"):
        c[1]
    with pytest.raises(ValueError, match="validate must be"):
        cf.read_clam(root, validate="some")


# ------------------------------------------------------------------------------------- text encoder folder
@pytest.mark.parametrize("path", ["/nonexistent/models/bert", "./my_bert_folder", "~/no/such/model"])
def test_missing_local_text_encoder_folder_does_not_suggest_a_download(path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)  # nothing may reach the network
    from medvlp_lib.models.encoders import build_text_encoder

    with pytest.raises(FileNotFoundError) as err:
        build_text_encoder(path)
    msg = str(err.value)
    assert "does not exist" in msg and "config.json" in msg and "tokenizer" in msg
    assert "huggingface-cli" not in msg


def test_hub_id_not_in_cache_keeps_the_download_command(monkeypatch):
    from medvlp_lib.models.encoders import WeightsNotAvailableError, build_text_encoder

    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)  # read at import time: set it for this test
    with pytest.raises(WeightsNotAvailableError, match="huggingface-cli download medvlp-test/no-such-model"):
        build_text_encoder("medvlp-test/no-such-model")
