"""InfoNCE / CLIP loss against naive float64 loops; CLIP method on a tiny dual encoder."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvlp_lib.methods.clip import CLIP
from medvlp_lib.methods.contrastive import clip_loss, info_nce, similarity_logits




def naive_info_nce(q, k, pos, scale, mask=None, targets=None):
    total = 0.0
    for i in range(q.shape[0]):
        logits = [scale * float(q[i] @ k[j]) for j in range(k.shape[0])]
        keep = [j for j in range(k.shape[0]) if mask is None or not bool(mask[i, j])]
        lse = math.log(sum(math.exp(logits[j]) for j in keep))
        if targets is None:
            total += lse - logits[pos[i]]
        else:
            t = targets[i].double()
            t = t / t.sum()
            total += sum(float(t[j]) * (lse - logits[j]) for j in keep if float(t[j]) > 0)
    return total / q.shape[0]


@pytest.fixture
def emb():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64), dim=1)  # 5 batch keys + 7 queue
    return q, k


def test_info_nce_default_diagonal_with_queue(emb):
    q, k = emb
    got = info_nce(q, k, scale=10.0)
    assert float(got) == pytest.approx(naive_info_nce(q, k, list(range(5)), 10.0), rel=1e-10)


def test_info_nce_positive_index_and_mask(emb):
    q, k = emb
    pos = torch.tensor([3, 0, 11, 7, 2])
    mask = torch.zeros(5, 12, dtype=torch.bool)
    mask[0, 5], mask[1, 1], mask[4, 9] = True, True, True
    got = info_nce(q, k, positive_index=pos, scale=7.0, mask=mask)
    assert float(got) == pytest.approx(naive_info_nce(q, k, pos.tolist(), 7.0, mask=mask), rel=1e-10)
    per = info_nce(q, k, positive_index=pos, scale=7.0, mask=mask, reduction="none")
    assert per.shape == (5,) and float(per.mean()) == pytest.approx(float(got))
    bad = mask.clone()
    bad[0, 3] = True
    with pytest.raises(ValueError, match="masked"):
        info_nce(q, k, positive_index=pos, mask=bad)


def test_info_nce_soft_and_multi_positive_targets(emb):
    q, k = emb
    soft = torch.rand(5, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = info_nce(q, k, scale=5.0, targets=soft)
    assert float(got) == pytest.approx(naive_info_nce(q, k, None, 5.0, targets=soft), rel=1e-10)
    multi = torch.zeros(5, 12, dtype=torch.bool)
    multi[torch.arange(5), torch.arange(5)] = True
    multi[0, 8] = multi[2, 6] = True
    mask = torch.zeros(5, 12, dtype=torch.bool)
    mask[1, 10] = True
    got = info_nce(q, k, scale=5.0, targets=multi, mask=mask)
    assert float(got) == pytest.approx(naive_info_nce(q, k, None, 5.0, mask=mask, targets=multi.double()), rel=1e-10)
    # one-hot targets == positive_index
    onehot = torch.eye(5, 12, dtype=torch.float64)
    assert float(info_nce(q, k, targets=onehot)) == pytest.approx(float(info_nce(q, k)), rel=1e-12)


def test_info_nce_errors(emb):
    q, k = emb
    with pytest.raises(ValueError, match="2-D"):
        info_nce(q[0], k)
    with pytest.raises(ValueError, match="embedding dim"):
        info_nce(q, k[:, :4])
    with pytest.raises(ValueError, match="K >= B"):
        info_nce(q, k[:3])
    with pytest.raises(ValueError, match="positive_index"):
        info_nce(q, k, positive_index=torch.tensor([0, 1, 2, 3, 99]))
    with pytest.raises(ValueError, match="every key"):
        info_nce(q, k, positive_index=torch.arange(5), mask=torch.ones(5, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive"):
        info_nce(q, k, scale=-1.0)
    with pytest.raises(ValueError, match="targets"):
        info_nce(q, k, targets=torch.zeros(5, 12))


def test_clip_loss_matches_naive_and_is_symmetric():
    g = torch.Generator().manual_seed(2)
    img = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    loss, parts = clip_loss(img, txt, 14.0)
    i2t = naive_info_nce(img, txt, list(range(6)), 14.0)
    t2i = naive_info_nce(txt, img, list(range(6)), 14.0)
    assert float(loss) == pytest.approx((i2t + t2i) / 2, rel=1e-10)
    assert parts["i2t"] == pytest.approx(i2t) and parts["t2i"] == pytest.approx(t2i)
    swapped, _ = clip_loss(txt, img, 14.0)
    assert float(swapped) == pytest.approx(float(loss), rel=1e-12)
    weighted, _ = clip_loss(img, txt, 14.0, image_weight=0.75)
    assert float(weighted) == pytest.approx(0.75 * i2t + 0.25 * t2i, rel=1e-10)
    # perfectly aligned pairs with a large scale: loss -> 0, accuracy 1
    eye = torch.eye(6, dtype=torch.float64)
    small, p = clip_loss(eye, eye, 100.0)
    assert float(small) < 1e-6 and p["acc_i2t"] == 1.0 and p["acc_t2i"] == 1.0


def test_clip_loss_errors():
    with pytest.raises(ValueError, match="same batch size"):
        clip_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="2-D"):
        clip_loss(torch.randn(4, 3, 1), torch.randn(4, 3))
    with pytest.raises(ValueError, match="embedding dim"):
        clip_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(TypeError, match="image_emb"):
        clip_loss([[1.0]], torch.randn(1, 1))


def test_gradients_flow_to_both_sides_and_scale():
    img = torch.randn(4, 8, requires_grad=True)
    txt = torch.randn(4, 8, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss, _ = clip_loss(F.normalize(img, dim=1), F.normalize(txt, dim=1), log_scale.exp())
    loss.backward()
    for t in (img, txt, log_scale):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # finite-difference check of the scale gradient (float64)
    a = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    clip_loss(a, b, s)[0].backward()
    eps = 1e-6
    fd = (float(clip_loss(a, b, 3.0 + eps)[0]) - float(clip_loss(a, b, 3.0 - eps)[0])) / (2 * eps)
    assert float(s.grad) == pytest.approx(fd, rel=1e-5)


def test_similarity_logits():
    q, k = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(similarity_logits(q, k, 2.0), torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]]))


class TinyText(nn.Module):
    """A deterministic bag-of-characters text encoder for tests (no download)."""

    out_dim = 16

    def __init__(self):
        super().__init__()
        self.emb = nn.EmbeddingBag(128, 16)

    def forward(self, texts):
        ids = [torch.tensor([ord(c) % 128 for c in t] or [0]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.emb(torch.cat(ids), offsets)


def tiny_dual():
    from medvlp_lib.models.encoders import DualEncoder, build_image_encoder
    return DualEncoder(build_image_encoder("test_resnet"), TinyText(), embed_dim=8, proj="linear")


def test_clip_method_training_step_and_clamp():
    torch.manual_seed(0)
    model = tiny_dual()
    method = CLIP(model)
    batch = {"image": torch.rand(4, 1, 32, 32), "text": ["a", "bb", "ccc", "dddd"], "labels": torch.zeros(4, 3)}
    out = method.training_step(batch)
    assert set(out) >= {"loss", "scale", "i2t", "t2i"}
    assert out["scale"] == pytest.approx(1 / 0.07, rel=1e-5)
    out["loss"].backward()
    assert model.logit_scale.grad is not None and model.image_proj.net.weight.grad is not None
    with torch.no_grad():
        model.logit_scale.fill_(8.0)  # exp(8) ~ 2981 -> clamped to 100
    assert method.training_step(batch)["scale"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="'image'"):
        method.training_step({"text": ["a"]})
    with pytest.raises(ValueError, match="4 images but 3 texts"):
        method.training_step({"image": batch["image"], "text": ["a", "b", "c"]})
    with pytest.raises(TypeError, match="DualEncoder-like"):
        CLIP(nn.Linear(2, 2))
