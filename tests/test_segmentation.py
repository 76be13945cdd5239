from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvlp_lib.eval.segmentation import (attention_mass_in_mask, dice_aggregate, dice_per_image, dice_summary,
                                          pointing_game)
from medvlp_lib.methods.segmentation import SegmentationMethod, segmentation_loss
from medvlp_lib.models.segmentation import FrozenBackboneSegmenter, UNetDecoder, multiscale_features

torch.set_num_threads(1)


def _m(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------ Dice, hand-made
def test_dice_hand_made():
    pred = torch.stack([_m([[1, 1], [0, 0]]), _m([[0, 0], [0, 0]]), _m([[1, 0], [0, 0]]), _m([[0, 0], [0, 0]])])
    gt = torch.stack([_m([[1, 0], [0, 0]]), _m([[0, 0], [0, 0]]), _m([[0, 0], [0, 0]]), _m([[1, 1], [1, 1]])])
    d = dice_per_image(pred, gt)
    # 2*1/(2+1); both empty -> 1; pred only -> 0; gt only -> 0
    assert d.tolist() == pytest.approx([2 / 3, 1.0, 0.0, 0.0])
    dn = dice_per_image(pred, gt, empty="nan")
    assert math.isnan(dn[1]) and dn[0] == pytest.approx(2 / 3)
    # aggregate: 2*1 / (3 + 5)
    assert dice_aggregate(pred, gt) == pytest.approx(2 / 8)
    s = dice_summary(pred, gt)
    assert s["dice_mean"] == pytest.approx((2 / 3 + 1) / 4)
    assert s["dice_mean_nonempty"] == pytest.approx((2 / 3 + 0) / 2)
    assert (s["n"], s["n_empty_gt"], s["n_both_empty"]) == (4, 2, 1)


def test_dice_accepts_numpy_and_single_image_and_errors():
    a = np.array([[1, 1], [1, 0]], np.uint8)
    assert dice_per_image(a, a).tolist() == [1.0]
    assert dice_aggregate(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), bool)) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        dice_per_image(a, a[:1])
    with pytest.raises(TypeError, match="threshold"):
        dice_per_image(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="0/1"):
        dice_per_image(a * 2, a)


def test_dice_matches_naive_random():
    rng = np.random.default_rng(0)
    p, g = rng.random((6, 8, 8)) > 0.6, rng.random((6, 8, 8)) > 0.7
    ref = [2 * (pi & gi).sum() / (pi.sum() + gi.sum()) for pi, gi in zip(p, g)]
    assert dice_per_image(p, g).numpy() == pytest.approx(np.array(ref))


# ------------------------------------------------------------------ pointing game / mass
def test_pointing_game_hand_made():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, 0] = True
    masks[1, 3, 3] = True  # map 1 peaks elsewhere
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0, 0, 0] = 1.0
    maps[1, 0, 0] = 1.0
    maps[2, 1, 1] = 1.0  # mask 2 empty -> skipped
    r = pointing_game(maps, masks)
    assert r == {"accuracy": 0.5, "hits": 1, "n": 2, "skipped": 1}


def test_pointing_game_upsamples_low_res_maps():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 4:, 4:] = True  # bottom-right quadrant
    maps = np.array([[[0.1, 0.2], [0.3, 0.9]]], np.float32)
    assert pointing_game(maps, masks)["accuracy"] == 1.0
    maps2 = np.array([[[0.9, 0.2], [0.3, 0.1]]], np.float32)
    assert pointing_game(maps2, masks)["accuracy"] == 0.0


def test_attention_mass_and_lift():
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2, :] = True  # top half, area 0.5
    uniform = np.ones((2, 4, 4), np.float32)
    r = attention_mass_in_mask(uniform, masks)
    assert r["mass"] == pytest.approx(0.5) and r["lift"] == pytest.approx(1.0) and r["area"] == pytest.approx(0.5)
    conc = np.zeros((2, 4, 4), np.float32)
    conc[:, 0, 0] = 1
    r = attention_mass_in_mask(conc, masks)
    assert r["mass"] == pytest.approx(1.0) and r["lift"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="non-negative"):
        attention_mass_in_mask(-uniform, masks)


# ------------------------------------------------------------------ decoder and frozen segmenter
def test_unet_decoder_shapes():
    dec = UNetDecoder([8, 16, 32], num_classes=2, width=32)
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)]
    out = dec(feats, (32, 32))
    assert out.shape == (2, 2, 32, 32)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        dec(feats[:2], (32, 32))


def test_segmentation_loss_reference():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    y = torch.tensor([[[1, 0], [1, 0]]]).bool()
    loss, parts = segmentation_loss(logits, y)
    p = torch.sigmoid(logits)[0, 0]
    yf = y[0].float()
    bce = -(yf * p.log() + (1 - yf) * (1 - p).log()).mean()
    dice = (2 * (p * yf).sum() + 1) / (p.sum() + yf.sum() + 1)
    assert float(loss) == pytest.approx(float(bce + 1 - dice), rel=1e-5)
    assert parts["soft_dice"] == pytest.approx(float(dice), rel=1e-5)


def test_frozen_segmenter_trains_decoder_only():
    from medvlp_lib.models.encoders import build_image_encoder

    torch.manual_seed(0)
    enc = build_image_encoder("resnet18", pretrained=False, trainable="none")
    feats = multiscale_features(enc, torch.rand(1, 1, 64, 64))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    model = FrozenBackboneSegmenter(enc, num_classes=1, width=32)
    method = SegmentationMethod(model)
    enc_before = [p.clone() for p in enc.parameters()]
    bn_before = enc.backbone.bn1.running_mean.clone()
    x = torch.rand(4, 1, 64, 64)
    mask = torch.zeros(4, 64, 64, dtype=torch.bool)
    mask[:, 16:40, 20:44] = True
    x[mask[:, None]] += 1.0  # a bright square: learnable from shallow features
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        out = method.training_step({"image": x, "mask": mask})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(enc_before, enc.parameters()))
    assert torch.equal(bn_before, enc.backbone.bn1.running_mean)
    pred = method.predict(x)
    assert pred.shape == (4, 1, 64, 64) and pred.dtype == torch.bool
    assert dice_summary(pred[:, 0], mask)["dice_mean"] > 0.3


def test_xrv_multiscale_densenet():
    import torchxrayvision as xrv

    from medvlp_lib.models.backbones import XRVImageBackbone

    bb = XRVImageBackbone(xrv.models.DenseNet(num_classes=18), "densenet", "t", 224, resize=False)
    x = torch.rand(1, 1, 64, 64)
    feats = multiscale_features(bb, x)
    assert len(feats) == 5 and feats[-1].shape[1] == 1024
    assert torch.allclose(feats[-1], bb.forward_features(x), atol=1e-5)
    seg = FrozenBackboneSegmenter(bb, width=16)
    assert seg(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
