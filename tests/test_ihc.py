from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp_lib.data.ihc import dab_mask, dab_threshold, ihc_cohort, ihc_image, tile_dab, tile_image
from medvlp_lib.eval import attention_quality
from medvlp_lib.methods.ssl import embed_tiles
from medvlp_lib.models.tile_encoder import TileCNN


@pytest.fixture(scope="module")
def tiled():
    img = ihc_image()
    tiles, coords = tile_image(img, 16)
    feats = embed_tiles(tiles, steps=3, batch_size=64)  # a few SSL steps: cheap, enough for plumbing tests
    return img, tiles, coords, feats


def test_ihc_image_is_the_bundled_picture():
    from skimage import data

    img = ihc_image()
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, data.immunohistochemistry())


def test_tile_image_shapes_and_coords_round_trip():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    tiles, coords = tile_image(img, 8)
    assert tiles.shape == (5 * 6, 8, 8, 3) and tiles.dtype == np.uint8
    assert coords.shape == (30, 2) and coords.dtype == np.int64
    for t, (x, y) in zip(tiles, coords):
        np.testing.assert_array_equal(img[y:y + 8, x:x + 8], t)
    assert coords[:, 0].max() == 40 and coords[:, 1].max() == 32  # the 2-px remainder is dropped
    assert coords[1].tolist() == [8, 0]  # row by row: x varies fastest


@pytest.mark.parametrize("img, patch, match", [
    (np.zeros((16, 16)), 4, r"\[H, W, C\] image"),
    (np.zeros((16, 16, 3)), 0, "patch must be a positive integer"),
    (np.zeros((16, 16, 3)), 2.5, "patch must be a positive integer"),
    (np.zeros((16, 16, 3)), True, "patch must be a positive integer"),
    (np.zeros((16, 16, 3)), 32, "larger than the image"),
])
def test_tile_image_rejects_bad_arguments(img, patch, match):
    with pytest.raises(ValueError, match=match):
        tile_image(img, patch)


def test_dab_mask_calls_brown_positive():
    brown, blue, white = (150, 95, 45), (90, 90, 170), (245, 245, 245)
    rng = np.random.default_rng(0)
    colours = [brown, blue, white] * 4
    tiles = np.stack([np.clip(np.array(c) + rng.normal(0, 4, (8, 8, 3)), 0, 255).astype(np.uint8) for c in colours])
    is_brown = np.array([c == brown for c in colours])
    dab = tile_dab(tiles)
    assert dab[is_brown].min() > 3 * dab[~is_brown].max()
    np.testing.assert_array_equal(dab_mask(tiles), is_brown)  # Otsu
    np.testing.assert_array_equal(dab_mask(tiles, threshold=float(dab[0]) / 2), is_brown)
    assert dab_mask(tiles, quantile=0.5).sum() == 6
    with pytest.raises(ValueError, match="either quantile or threshold"):
        dab_mask(tiles, quantile=0.5, threshold=0.1)
    with pytest.raises(ValueError, match="quantile must be in"):
        dab_mask(tiles, quantile=1.5)
    with pytest.raises(ValueError, match=r"RGB array \[N, p, p, 3\]"):
        dab_mask(np.zeros((4, 8, 8)))


def test_dab_mask_on_the_real_image(tiled):
    _, tiles, _, _ = tiled
    dab = tile_dab(tiles)
    cut = dab_threshold(dab)
    assert 0.02 < cut < 0.1  # the valley between stroma (~0.01) and stained epithelium (~0.09)
    m = dab_mask(tiles)
    assert 0.3 < m.mean() < 0.8
    rgb = tiles.reshape(len(tiles), -1, 3).mean(1)
    assert (rgb[m, 0] - rgb[m, 2]).mean() > (rgb[~m, 0] - rgb[~m, 2]).mean() + 20  # positives are browner


def test_embed_tiles_is_deterministic_and_leaves_the_global_rng_alone(tiled):
    _, tiles, _, _ = tiled
    sub = tiles[:96]
    torch.manual_seed(123)
    a = embed_tiles(sub, seed=1, steps=3, batch_size=32, dim=16)
    after = torch.rand(1)
    torch.manual_seed(123)
    torch.rand(1)
    b = embed_tiles(sub, seed=1, steps=3, batch_size=32, dim=16)
    c = embed_tiles(sub, seed=2, steps=3, batch_size=32, dim=16)
    assert a.shape == (96, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the SSL run did not consume the caller's RNG
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-4)  # standardised
    f, info = embed_tiles(sub, steps=2, batch_size=32, return_info=True)
    assert len(info["ssl_loss"]) == 2 and info["encoder"] == "ssl-cnn"


def test_embed_tiles_with_a_module_and_bad_arguments(tiled):
    _, tiles, _, _ = tiled
    torch.manual_seed(0)
    f = embed_tiles(tiles[:10], TileCNN(dim=8), standardize=False)
    assert f.shape == (10, 8)
    with pytest.raises(ValueError, match="encoder must be 'ssl-cnn'"):
        embed_tiles(tiles[:10], encoder=3)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        embed_tiles(tiles[:10], steps=0)
    with pytest.raises(ValueError, match=r"float tiles must be in \[0, 1\]"):
        embed_tiles(tiles[:10].astype(float))


def test_embed_tiles_with_a_timm_name(tiled, monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    from medvlp_lib.models.encoders import WeightsNotAvailableError

    _, tiles, _, _ = tiled
    f, info = embed_tiles(tiles[:6], "test_resnet", pretrained=False, input_size=32, return_info=True)
    assert f.shape[0] == 6 and info["encoder"] == "test_resnet" and np.isfinite(f).all()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path), raising=False)
    with pytest.raises(WeightsNotAvailableError, match="pretrained"):
        embed_tiles(tiles[:6], "test_resnet")  # pretrained weights only from the local cache


def test_ihc_cohort_mixture_bags(tiled):
    _, tiles, coords, feats = tiled
    co = ihc_cohort(feats, 24, 64, seed=3)
    again = ihc_cohort(feats, 24, 64, seed=3)
    other = ihc_cohort(feats, 24, 64, seed=4)
    assert len(co) == 24 and co.labels.sum() == 12
    np.testing.assert_array_equal(co.labels, again.labels)
    for i in range(len(co)):
        np.testing.assert_array_equal(co[i].features, again[i].features)
        np.testing.assert_array_equal(co[i].omics, again[i].omics)
    assert any(not np.array_equal(a.coords, b.coords) for a, b in zip(co, other))
    info = co.info
    tr, te = info["train_idx"], info["test_idx"]
    assert len(tr) == len(te) == 12 and co.labels[tr].sum() == co.labels[te].sum() == 6
    split_x = info["split_col"] * info["patch"]
    assert all((co[int(i)].coords[:, 0] < split_x).all() for i in tr)  # spatially disjoint regions
    assert all((co[int(i)].coords[:, 0] >= split_x).all() for i in te)
    mask = info["dab"] > info["dab_cut"]
    assert abs(mask.mean() - 0.2) < 0.01  # default: the 20 % most stained tiles
    for s, idx in zip(co, info["tile_index"]):
        assert s.n_patches == 64 and s.omics.shape == (64,)
        np.testing.assert_array_equal(s.features, feats[idx])
        np.testing.assert_array_equal(s.coords, coords[idx])
        np.testing.assert_array_equal(s.signal_mask, mask[idx])
        k = int(s.signal_mask.sum())
        assert (4 <= k <= 16) if s.label == 1 else k == 0
    w = info["whole_slide"]
    assert w.n_patches == len(tiles) == 1024 and w.label == 1
    np.testing.assert_array_equal(w.signal_mask, mask)


def test_ihc_cohort_crops_and_bad_arguments(tiled):
    _, _, _, feats = tiled
    co = ihc_cohort(feats, 8, 36, seed=0, bags="crops", dab_quantile=None)
    assert co.info["dab_cut"] == pytest.approx(dab_threshold(co.info["dab"]))
    for s in co:
        xy = s.coords // 16
        assert np.ptp(xy[:, 0]) == 5 and np.ptp(xy[:, 1]) == 5  # a 6 x 6 square of tiles
        assert (s.signal_mask.mean() > co.info["label_share"]) == bool(s.label)
    with pytest.raises(ValueError, match="bags must be 'mixture' or 'crops'"):
        ihc_cohort(feats, 8, bags="random")
    with pytest.raises(ValueError, match="square bag_size"):
        ihc_cohort(feats, 8, 40, bags="crops")
    with pytest.raises(ValueError, match="witnesses must be"):
        ihc_cohort(feats, 8, 16, witnesses=(4, 20))
    with pytest.raises(ValueError, match=r"features must be \[N, D\] for the N = 1024 tiles"):
        ihc_cohort(feats[:100], 8)
    with pytest.raises(ValueError, match="either dab_quantile or dab_cut"):
        ihc_cohort(feats, 8, dab_cut=0.1)


def test_momkd_trains_on_the_cohort_and_scores_every_tile_of_the_image(tiled):
    from medvlp_lib import experiments
    from medvlp_lib.experiments import momkd as X

    _, tiles, _, feats = tiled
    co = ihc_cohort(feats, 12, 64, seed=0)
    cfg = experiments.get("momkd_main").config("fast", {"feature_dim": int(feats.shape[1]), "epochs": 1})
    model, history = X.fit_method("momkd", co, co.info["train_idx"], cfg, seed=0)
    assert len(history) >= 1
    out = model.predict(co.info["whole_slide"])
    assert out["scores"].shape == (len(tiles),) and out["attention"].shape == (len(tiles),)
    assert torch.isfinite(out["scores"]).all() and 0 <= out["prob"] <= 1
    aq = attention_quality([out["scores"].numpy()], [co.info["whole_slide"].signal_mask])
    assert 0 <= aq["auroc"] <= 1


def test_data_layer_imports_no_model_code():
    import subprocess
    import sys

    code = ("import sys, medvlp_lib.data.ihc, medvlp_lib.data.pathology; "
            "print(any(m.startswith('medvlp_lib.models') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
