"""Natural-image crops for predistillation: bundled files only, determinism, augmentation maths, folder loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvlp_lib.data.natural import (NATURAL_IMAGES, CropAugment, ImageFolderCrops, NaturalCrops,
                                     available_natural_images, skimage_data_dir)


def test_uses_only_bundled_files():
    found = available_natural_images()
    assert len(found) >= 10  # scikit-image ships most photographs in its wheel
    for name, path in found.items():
        assert path.parent == skimage_data_dir() and path.is_file() and path.stem == name
    ds = NaturalCrops(n=4, size=16)
    assert ds.sources == [n for n in NATURAL_IMAGES if n in found]
    with pytest.raises(FileNotFoundError, match="not bundled in scikit-image"):
        NaturalCrops(n=4, names=["astronaut", "no_such_photo"])
    with pytest.raises(ValueError, match="names must be a non-empty sequence"):
        NaturalCrops(n=4, names=[])


def test_deterministic_in_seed_and_index():
    a = NaturalCrops(n=12, size=24, seed=3)
    b = NaturalCrops(n=50, size=24, seed=3)  # different n, same (seed, index) -> same crop
    c = NaturalCrops(n=12, size=24, seed=4)
    for i in (0, 5, 11):
        assert torch.equal(a[i]["image"], b[i]["image"])
        assert a[i]["source"] == a.source_of(i)
    assert torch.equal(a[-1]["image"], a[11]["image"])
    assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(12))
    imgs = torch.stack([a[i]["image"] for i in range(12)])
    assert imgs.shape == (12, 1, 24, 24) and imgs.min() >= 0 and imgs.max() <= 1
    assert imgs.flatten(1).std(1).min() > 0  # no blank crops
    assert len({a[i]["source"] for i in range(12)}) > 3  # crops from several photographs
    with pytest.raises(IndexError):
        a[12]


def test_rgb_output_and_collate():
    ds = NaturalCrops(n=6, size=20, grayscale=False, names=["astronaut", "coffee"])
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    assert batch["image"].shape == (6, 3, 20, 20)
    # colour photographs keep colour: channels differ somewhere
    assert (batch["image"][:, 0] - batch["image"][:, 2]).abs().max() > 0.05


def test_crop_box_bounds_and_full_crop():
    aug = CropAugment(size=8, scale=(0.2, 0.5))
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, x1, y1 = aug.crop_box(rng, 100, 60)
        assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 60
        frac = (x1 - x0) * (y1 - y0) / 6000
        assert 0.17 <= frac <= 0.53  # within the requested area range up to rounding
    full = CropAugment(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert full.crop_box(np.random.default_rng(0), 50, 50) == (0, 0, 50, 50)
    # impossible aspect for a very wide image -> centred fallback crop with the clamped aspect
    assert full.crop_box(np.random.default_rng(0), 200, 50) == (75, 0, 125, 50)


def test_augment_identity_and_jitter_flip():
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:, :4] = (200, 100, 50)
    img = Image.fromarray(arr)
    plain = CropAugment(size=8, scale=(1, 1), ratio=(1, 1), hflip=0.0, jitter=0.0, grayscale=False)
    out = plain(img, np.random.default_rng(0))
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), arr / 255.0, atol=1e-6)
    flip = CropAugment(size=8, scale=(1, 1), ratio=(1, 1), hflip=1.0, jitter=0.0, grayscale=True)
    g = flip(img, np.random.default_rng(0))[0]
    lum = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    np.testing.assert_allclose(g[:, 4:].numpy(), lum, atol=1e-5)  # flipped: left half moved right
    np.testing.assert_allclose(g[:, :4].numpy(), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="scale must satisfy"):
        CropAugment(scale=(0.5, 0.1))


def _write_folder(root, classes=("n01", "n02"), per=3):
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for j in range(per):
            Image.new("RGB", (20, 16), (60 * ci + 20 * j, 100, 150)).save(root / c / f"{c}_{j}.JPEG")
    return root


def test_image_folder_crops(tmp_path):
    root = _write_folder(tmp_path / "train")
    ds = ImageFolderCrops(root, size=8, seed=1)
    assert len(ds) == 6 and ds.classes == ["n01", "n02"] and ds.labels == [0, 0, 0, 1, 1, 1]
    item = ds[4]
    assert item["image"].shape == (3, 8, 8) and item["label"] == 1 and item["source"] == 4
    assert torch.equal(item["image"], ImageFolderCrops(root, size=8, seed=1)[4]["image"])
    more = ImageFolderCrops(root, size=8, n=10, grayscale=True)
    assert len(more) == 10 and more[7]["source"] == 1 and more[7]["image"].shape == (1, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected layout root/<class>/\*\.JPEG"):
        ImageFolderCrops(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images .* expected layout root/<class>/\*\.JPEG"):
        ImageFolderCrops(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.JPEG")
    with pytest.raises(FileNotFoundError, match="put them in class sub-folders"):
        ImageFolderCrops(flat)
    bad = _write_folder(tmp_path / "bad", classes=("n01",), per=1)
    (bad / "n01" / "broken.JPEG").write_bytes(b"not an image")
    ds = ImageFolderCrops(bad, size=8)
    with pytest.raises(ValueError, match=r"could not read image file .*broken\.JPEG"):
        ds[0]
