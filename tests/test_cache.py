from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from medvlp_lib.data.cache import (CacheError, EmbeddingCache, cache_root, cached_embeddings, collate_cached,
                                   compute_embeddings, data_fingerprint, module_fingerprint)

torch.set_num_threads(1)


class FakeImage(nn.Module):
    """Conv map [B, 3, 2, 2]; counts calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 4, stride=4)
        self.calls = 0
        self.name = "fake-img"

    def forward_features(self, x):
        self.calls += 1
        return self.conv(x)

    def pool(self, f):
        return f.mean((2, 3))


class FakeText(nn.Module):
    """Token i of a text = [len(word_i), i, 1, 0]; mask by word count."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward_tokens(self, texts):
        self.calls += 1
        T = max(len(t.split()) for t in texts)
        h = torch.zeros(len(texts), T, 4)
        m = torch.zeros(len(texts), T, dtype=torch.bool)
        for b, t in enumerate(texts):
            for i, w in enumerate(t.split()):
                h[b, i] = torch.tensor([len(w), i, 1.0, 0.0]) * self.w
                m[b, i] = True
        return h, m


def _data(n=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    texts = ["a bb ccc", "dddd", "e ff", "ggg hh i jjjj k", "ll"][:n]
    return images, texts


def test_compute_embeddings_shapes_and_padding():
    images, texts = _data()
    out = compute_embeddings(FakeImage(), FakeText(), images, texts, batch_size=2, progress=False)
    assert out["img_tokens"].shape == (5, 4, 3) and out["grid"] == (2, 2)
    assert out["txt_tokens"].shape == (5, 5, 4)  # padded to the longest text over all batches
    assert out["txt_mask"].sum(1).tolist() == [3, 1, 2, 5, 1]
    # text pooled = mean over real tokens: first text word lengths 1,2,3 -> 2
    assert out["txt_pooled"][0, 0] == pytest.approx(2.0)
    # image tokens are the row-major flattened map
    f = FakeImage().forward_features(torch.from_numpy(images[:1]).float()[:, None] / 255)
    assert np.allclose(out["img_tokens"][0, 1], f[0, :, 0, 1].detach().numpy(), atol=1e-6)


def test_cache_round_trip_and_reuse(tmp_path):
    images, texts = _data()
    ie, te = FakeImage(), FakeText()
    c1 = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, dtype="float32", progress=False)
    calls = ie.calls
    ref = compute_embeddings(ie, te, images, texts, progress=False)
    c2 = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, dtype="float32", progress=False)
    assert ie.calls == calls + 1  # only the reference call: the second cached_embeddings read the disk
    assert c1.path == c2.path and len(c2) == 5
    for a in ("img_tokens", "img_pooled", "txt_tokens", "txt_pooled"):
        assert torch.allclose(getattr(c2, a), torch.from_numpy(ref[a]), atol=1e-6)
    assert torch.equal(c2.txt_mask, torch.from_numpy(ref["txt_mask"]))
    item = c2[3]
    assert item["img_tokens"].dtype == torch.float32 and item["index"] == 3
    b = collate_cached([c2[1], c2[4]])  # both texts have one word -> trimmed to 1 token
    assert b["txt_tokens"].shape == (2, 1, 4)
    bb = c2.batch([4, 1])
    assert bb["txt_tokens"].shape == (2, 1, 4) and bb["index"].tolist() == [4, 1]
    assert torch.equal(bb["img_pooled"][0], c2.img_pooled[4])


def test_float16_storage_reads_float32(tmp_path):
    images, texts = _data()
    c = cached_embeddings(FakeImage(), FakeText(), images, texts, cache_dir=tmp_path, progress=False)
    assert c.array("txt_tokens").dtype == np.float16
    assert c.txt_tokens.dtype == torch.float32
    assert c.meta["dtype"] == "float16"


def test_key_changes_with_weights_and_data(tmp_path):
    images, texts = _data()
    ie, te = FakeImage(), FakeText()
    p1 = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, progress=False).path
    p2 = cached_embeddings(ie, te, images, texts[:4] + ["other"], cache_dir=tmp_path, progress=False).path
    with torch.no_grad():
        ie.conv.weight.add_(1.0)
    p3 = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, progress=False).path
    assert len({p1, p2, p3}) == 3
    assert module_fingerprint(ie).startswith("fake-img@")
    assert data_fingerprint(images, texts) == data_fingerprint(images.copy(), list(texts))
    assert data_fingerprint(images, texts) != data_fingerprint(images[::-1], texts)


def test_corrupt_cache_recompute_or_raise(tmp_path):
    images, texts = _data()
    ie, te = FakeImage(), FakeText()
    c = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, progress=False)
    good = c.img_pooled.clone()
    np.save(c.path / "img_pooled.npy", np.zeros((2, 2), np.float16))  # wrong shape
    with pytest.raises(CacheError, match="img_pooled.npy has shape"):
        cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, on_invalid="raise", progress=False)
    with pytest.warns(UserWarning, match="recomputing"):
        c2 = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, progress=False)
    assert torch.allclose(c2.img_pooled, good)
    (c2.path / "meta.json").unlink()  # interrupted write
    with pytest.raises(CacheError, match="meta.json is missing"):
        EmbeddingCache(c2.path)
    (c2.path / "meta.json").write_text("{not json")
    with pytest.raises(CacheError, match="not valid JSON"):
        EmbeddingCache(c2.path)


def test_mismatched_key(tmp_path):
    images, texts = _data()
    c = cached_embeddings(FakeImage(), FakeText(), images, texts, cache_dir=tmp_path, progress=False)
    with pytest.raises(CacheError, match="does not match"):
        EmbeddingCache(c.path, expected_key="0" * 24)
    meta = json.loads((c.path / "meta.json").read_text())
    assert meta["n"] == 5 and meta["grid"] == [2, 2]


def test_bad_arguments(tmp_path):
    images, texts = _data()
    with pytest.raises(ValueError, match="same length"):
        compute_embeddings(FakeImage(), FakeText(), images, texts[:3], progress=False)
    with pytest.raises(TypeError, match="forward_tokens"):
        compute_embeddings(FakeImage(), nn.Linear(1, 1), images, texts, progress=False)
    with pytest.raises(ValueError, match="dtype"):
        cached_embeddings(FakeImage(), FakeText(), images, texts, cache_dir=tmp_path, dtype="int8")


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVLP_CACHE", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    assert cache_root(tmp_path / "y") == tmp_path / "y"


def test_adaptor_trains_from_cache(tmp_path):
    from medvlp_lib.methods.adaptor import AdaptorMethod
    from medvlp_lib.models.adaptor import Adaptor

    images, texts = _data()
    c = cached_embeddings(FakeImage(), FakeText(), images, texts, cache_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    m = AdaptorMethod(Adaptor(3, 4, width=8, embed_dim=4, num_heads=2))
    out = m.training_step(c.batch([0, 1, 2, 3]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.adaptor.image_in.weight.grad is not None


def test_real_encoders_integration(tmp_path):
    from medvlp_lib.models.encoders import build_image_encoder, build_text_encoder

    ie = build_image_encoder("resnet18", pretrained=False, trainable="none")
    te = build_text_encoder(trainable="none")
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    texts = ["No acute disease.", "Small left pleural effusion with basilar atelectasis.", "Cardiomegaly."]
    c = cached_embeddings(ie, te, images, texts, cache_dir=tmp_path, progress=False)
    assert c.grid == (2, 2) and c.img_tokens.shape == (3, 4, 512)
    assert c.txt_tokens.shape[2] == 384 and c.txt_mask.sum(1).min() >= 3
    assert torch.allclose(c.txt_pooled, te(texts).float(), atol=1e-2)


def test_feature_index_gives_finer_grid(tmp_path):
    from medvlp_lib.models.encoders import build_image_encoder

    ie = build_image_encoder("resnet18", pretrained=False, trainable="none")
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    texts = ["a b", "c"]
    last = cached_embeddings(ie, FakeText(), images, texts, cache_dir=tmp_path, progress=False, dtype="float32")
    l3 = cached_embeddings(ie, FakeText(), images, texts, cache_dir=tmp_path, progress=False, dtype="float32",
                           feature_index=-2)
    assert last.grid == (2, 2) and l3.grid == (4, 4) and l3.img_tokens.shape == (2, 16, 256)
    assert l3.path != last.path
    assert torch.allclose(l3.img_pooled, last.img_pooled, atol=1e-5)  # pooled = the backbone's own output
    with pytest.raises(ValueError, match="feature_index must be in"):
        compute_embeddings(ie, FakeText(), images, texts, progress=False, feature_index=9)
    with pytest.raises(ValueError, match="forward_intermediates"):
        compute_embeddings(FakeImage(), FakeText(), images[:, :8, :8], texts, progress=False, feature_index=0)


def test_trainer_on_cache_exact_resume(tmp_path):
    """The Adaptor trains through the shared Trainer on cache batches, and resume is exact."""
    from medvlp_lib.methods.adaptor import AdaptorMethod
    from medvlp_lib.models.adaptor import Adaptor
    from medvlp_lib.train import StepBatches, Trainer

    images, texts = _data()
    c = cached_embeddings(FakeImage(), FakeText(), images, texts, cache_dir=tmp_path / "c", progress=False)
    batches = StepBatches(c, batch_size=4, seed=0, collate_fn=collate_cached)

    def run(steps, resume=False):
        torch.manual_seed(0)
        m = AdaptorMethod(Adaptor(3, 4, width=8, embed_dim=4, num_heads=2))
        t = Trainer(m, lr=1e-2, total_steps=6, ckpt_dir=tmp_path / "ck", ckpt_every=3, progress=False, device="cpu")
        t.fit(batches, steps=steps, resume=resume)
        return m, t.history

    full, hist = run(6)
    assert len(hist) == 6 and all(np.isfinite(h["loss"]) for h in hist)
    import shutil
    shutil.rmtree(tmp_path / "ck")
    run(3)
    resumed, _ = run(6, resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
