"""Renderer: determinism, bounds, findings change the picture where and as much as they should."""
from __future__ import annotations

import numpy as np
import pytest

from medvlp_lib.data.render import (DEGRADE_PRESETS, MASK_NAMES, SITE_PRESETS, Degradation, SiteShift,
                                    bits_to_masks, render, render_batch)
from medvlp_lib.data.reports import load_reports

S = 64


def _cols(mask):
    return np.nonzero(mask.any(0))[0]


def test_deterministic_bytes_and_seed_dependence():
    a = render(["Opacity/lung/base/left", "Cardiomegaly/mild"], seed=3, size=S)
    b = render(["Cardiomegaly/mild", "Opacity/lung/base/left"], seed=3, size=S)
    assert a.image.tobytes() == b.image.tobytes()
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in MASK_NAMES)
    c = render(["Opacity/lung/base/left", "Cardiomegaly/mild"], seed=4, size=S)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.float32 and a.image.shape == (S, S)
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0


def test_batch_matches_single_and_is_independent_of_neighbours():
    reps = load_reports().reports[:6]
    imgs, bits = render_batch(reps, 5, S)
    imgs2, bits2 = render_batch(reps[2:4], 5, S)
    assert np.array_equal(imgs[2:4], imgs2) and np.array_equal(bits[2:4], bits2)
    one = render(reps[3], seed=5, size=S)
    assert np.array_equal(one.image, imgs[3])
    assert all(np.array_equal(one.masks[k], v) for k, v in bits_to_masks(bits[3]).items())


@pytest.mark.parametrize("size", [63, 257, 0])
def test_size_bounds(size):
    with pytest.raises(ValueError, match="size must be in"):
        render(["normal"], size=size)


def test_size_type_and_bad_inputs():
    with pytest.raises(TypeError, match="size must be an int"):
        render(["normal"], size=64.0)
    with pytest.raises(TypeError, match="findings"):
        render(3, size=S)
    with pytest.raises(ValueError, match="unknown site preset"):
        render(["normal"], size=S, site="mars")
    with pytest.raises(ValueError, match="jpeg_quality"):
        Degradation(jpeg_quality=0)
    with pytest.raises(ValueError, match="resolution"):
        SiteShift(resolution=2.0)


@pytest.mark.parametrize("size", [64, 100, 256])
def test_any_size(size):
    r = render(["Pleural Effusion/right"], seed=0, size=size)
    assert r.image.shape == (size, size) and r.masks["pleural_effusion"].shape == (size, size)


def test_normal_has_no_masks():
    r = render(["normal"], seed=1, size=S)
    assert not r.mask.any()


@pytest.mark.parametrize("name", ["Pleural Effusion", "Pneumothorax"])
def test_side_moves_mask(name):
    key = "pleural_effusion" if name.startswith("Pleural") else "pneumothorax"
    right = render([f"{name}/right/moderate"], seed=2, size=S).masks[key]
    left = render([f"{name}/left/moderate"], seed=2, size=S).masks[key]
    assert right.sum() > 10 and left.sum() > 10
    # radiographic convention: patient's right on the image left
    assert _cols(right).max() < S // 2 + 2 and _cols(left).min() > S // 2 - 2
    both = render([f"{name}/bilateral/moderate"], seed=2, size=S).masks[key]
    assert _cols(both).min() < S // 2 - 4 and _cols(both).max() > S // 2 + 4


def test_location_zone_moves_opacity():
    up = render(["Opacity/lung/upper lobe/right"], seed=0, size=S).masks["opacity"]
    low = render(["Opacity/lung/lower lobe/right"], seed=0, size=S).masks["opacity"]
    rows_up, rows_low = np.nonzero(up.any(1))[0], np.nonzero(low.any(1))[0]
    assert rows_up.mean() < rows_low.mean() - 8


@pytest.mark.parametrize("name,key", [("Pleural Effusion/left", "pleural_effusion"),
                                      ("Pneumothorax/right", "pneumothorax"),
                                      ("Opacity/lung/base/right", "opacity")])
def test_severity_monotone_mask_area(name, key):
    areas = [np.mean([render([f"{name}/{sev}"], seed=s, size=S).masks[key].sum() for s in range(3)])
             for sev in ("mild", "moderate", "severe")]
    assert areas[0] < areas[1] < areas[2], areas


def test_cardiomegaly_widens_heart():
    # heart width = bright run across the row just above the diaphragm, averaged over seeds
    def heart_brightness(term):
        imgs, _ = render_batch([[term]] * 1, [0], S, keys=["same-body"])
        return imgs[0]
    normal = heart_brightness("normal")
    severe = heart_brightness("Cardiomegaly/severe")
    rows = slice(int(S * 0.5), int(S * 0.62))
    cols_l, cols_r = slice(int(S * 0.22), int(S * 0.38)), slice(int(S * 0.62), int(S * 0.8))
    # the enlarged heart replaces dark lung beside the mediastinum on both sides
    assert severe[rows, cols_r].mean() > normal[rows, cols_r].mean() + 0.03
    assert severe[rows, cols_l].mean() >= normal[rows, cols_l].mean()


def test_nodule_and_device_change_image():
    base = render(["normal"], seed=0, size=S, key="k").image
    nod = render(["Nodule/lung/upper lobe/left"], seed=0, size=S, key="k")
    assert nod.masks["nodule"].any()
    assert nod.image[nod.masks["nodule"]].mean() > base[nod.masks["nodule"]].mean() + 0.05
    dev = render(["Implanted Medical Device/left"], seed=0, size=S, key="k").image
    assert dev.max() > 0.95 and np.abs(dev - base).max() > 0.2


def test_emphysema_darker_lungs():
    base = render(["normal"], seed=0, size=S, key="k").image
    emph = render(["Emphysema/severe"], seed=0, size=S, key="k").image
    assert emph.mean() < base.mean() - 0.01


def test_site_and_degrade_change_image_keep_shape():
    base = render(["Cardiomegaly"], seed=0, size=S).image
    for kw in (dict(site="external"), dict(degrade="phone"), dict(site=SITE_PRESETS["external"],
                                                               degrade=DEGRADE_PRESETS["phone"]),
               dict(degrade=Degradation(blur=1.5)), dict(site=SiteShift(resolution=0.5))):
        img = render(["Cardiomegaly"], seed=0, size=S, **kw).image
        assert img.shape == base.shape and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert np.abs(img - base).mean() > 0.005, kw
    again = render(["Cardiomegaly"], seed=0, size=S, site="external", degrade="phone").image
    assert again.tobytes() == render(["Cardiomegaly"], seed=0, size=S, site="external", degrade="phone").image.tobytes()


def test_counterfactual_same_patient():
    """Same key, different findings: the image changes only around the finding."""
    base = render(["normal"], seed=7, size=S, key="patient-1").image
    nod = render(["Nodule/lung/upper lobe/right"], seed=7, size=S, key="patient-1")
    changed = np.abs(nod.image - base) > 0.01
    m = nod.masks["nodule"]
    assert m.any() and changed.any()
    rows, cols = np.nonzero(changed)
    mr, mc = np.nonzero(m)
    assert abs(rows.mean() - mr.mean()) < 3 and abs(cols.mean() - mc.mean()) < 3
    assert changed.sum() < 6 * m.sum()
