"""Tests for the class-conditional memory, its losses and memory-guided pooling (medvlp_lib.methods.memory)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medvlp_lib.methods.memory import (ClassMemory, MemoryAttentionPool, cosine_kmeans, orthogonality_loss,
                                       soft_angle_loss, vq_commitment_loss)


def _naive_soft_angle(f, y, slots, margin=0.3, lse=5.0, gap=20.0, hard=False):
    out = []
    for fi, yi in zip(f, y):
        fi = fi / fi.norm()
        s = []
        for c in range(slots.shape[0]):
            cos = [float(fi @ (sl / sl.norm())) for sl in slots[c]]
            s.append(max(cos) if hard else math.log(sum(math.exp(lse * v) for v in cos)) / lse)
        own, other = s[int(yi)], s[1 - int(yi)]
        out.append(math.log1p(math.exp(gap * (margin - (own - other)))))
    return sum(out) / len(out)


@pytest.mark.parametrize("hard", [False, True])
def test_soft_angle_matches_naive(hard):
    torch.manual_seed(0)
    f, slots, y = torch.randn(6, 5), torch.randn(2, 3, 5), torch.tensor([0, 1, 1, 0, 1, 0])
    got = soft_angle_loss(f, y, slots, hard_max=hard)
    assert abs(float(got) - _naive_soft_angle(f, y, slots, hard=hard)) < 1e-4


def test_soft_angle_hand_case_and_direction():
    slots = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # C- = e1, C+ = e2
    f = torch.tensor([[0.0, 1.0]])
    # own = 1, other = 0: gap 1 > margin -> softplus(20 * (0.3 - 1)) = softplus(-14)
    assert abs(float(soft_angle_loss(f, 1, slots)) - math.log1p(math.exp(-14))) < 1e-7
    assert float(soft_angle_loss(f, 0, slots)) > 25  # wrong class: softplus(20 * 1.3) = 26
    # gradient moves the feature towards its own class
    f = torch.tensor([[1.0, 1.0]], requires_grad=True)
    soft_angle_loss(f, 1, slots).backward()
    assert f.grad[0, 1] < 0 < f.grad[0, 0]
    # LogSumExp spreads gradient across slots; hard max puts it on one
    slots2 = torch.randn(2, 4, 3, requires_grad=True)
    soft_angle_loss(torch.randn(1, 3), 1, slots2).backward()
    assert (slots2.grad[1].norm(dim=-1) > 0).sum() == 4
    slots3 = slots2.detach().clone().requires_grad_(True)
    soft_angle_loss(torch.randn(1, 3), 1, slots3, hard_max=True).backward()
    assert (slots3.grad[1].norm(dim=-1) > 0).sum() == 1
    with pytest.raises(ValueError, match="labels must be in"):
        soft_angle_loss(torch.randn(2, 3), torch.tensor([0, 2]), torch.randn(2, 1, 3))
    with pytest.raises(ValueError, match="memory must be"):
        soft_angle_loss(torch.randn(2, 3), 0, torch.randn(2, 3))


def test_cosine_kmeans_recovers_clusters_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.eye(4)[:3] + 0.0, dim=-1)
    x = torch.cat([c + 0.05 * torch.randn(50, 4, generator=g) for c in centres])
    a, b = cosine_kmeans(x, 3, seed=1), cosine_kmeans(x, 3, seed=1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    assert ((a @ centres.T).max(0).values > 0.99).all()  # every true centre found
    few = cosine_kmeans(x[:2], 4, seed=0)  # fewer points than clusters
    assert few.shape == (4, 4) and torch.isfinite(few).all()


def test_memory_init_update_and_state_dict():
    mem = ClassMemory(4, n_slots=2, mode="momentum", momentum=0.5)
    assert not bool(mem.initialized) and "slots" in dict(mem.named_buffers())
    feats = torch.cat([torch.tensor([[1.0, 0, 0, 0]] * 5 + [[0, 1.0, 0, 0]] * 5),
                       torch.tensor([[0, 0, 1.0, 0]] * 5 + [[0, 0, 0, 1.0]] * 5)])
    labels = torch.tensor([0] * 10 + [1] * 10)
    mem.init_kmeans(feats, labels, seed=0)
    assert bool(mem.initialized)
    s = mem.normalized()
    assert sorted(s[0].argmax(1).tolist()) == [0, 1] and sorted(s[1].argmax(1).tolist()) == [2, 3]
    # EMA: c <- normalize(0.5 c + 0.5 mean(assigned))
    before = mem.slots.clone()
    f = F.normalize(torch.tensor([[0.1, 0.0, 1.0, 0.2]]), dim=-1)
    moved = mem.momentum_update(f, 1)
    j = int(before[1].mv(f[0]).argmax())
    expected = F.normalize(0.5 * before[1, j] + 0.5 * f[0], dim=0)
    assert moved == 1
    torch.testing.assert_close(mem.slots[1, j], expected)
    torch.testing.assert_close(mem.slots[1, 1 - j], before[1, 1 - j])
    torch.testing.assert_close(mem.slots[0], before[0])
    assert mem.usage[1, j] == 1 and mem.usage.sum() == 1
    # state_dict round trip
    other = ClassMemory(4, n_slots=2)
    other.load_state_dict(mem.state_dict())
    torch.testing.assert_close(other.slots, mem.slots)
    assert bool(other.initialized)


def test_fixed_and_learned_modes():
    fixed = ClassMemory(3, n_slots=2, mode="fixed")
    before = fixed.slots.clone()
    assert fixed.momentum_update(torch.randn(4, 3), 0) == 0
    torch.testing.assert_close(fixed.slots, before)
    assert fixed.usage.sum() == 4  # usage still recorded
    learned = ClassMemory(3, n_slots=2, mode="learned")
    assert isinstance(learned.slots, torch.nn.Parameter)
    soft_angle_loss(torch.randn(2, 3), torch.tensor([0, 1]), learned).backward()
    assert learned.slots.grad is not None and learned.slots.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mode must be one of"):
        ClassMemory(3, mode="ema")


def test_slot_usage():
    mem = ClassMemory(2, n_slots=3, mode="fixed")
    mem.slots.data = torch.tensor([[[1.0, 0], [0, 1.0], [-1.0, 0]], [[1.0, 0], [0, 1.0], [-1.0, 0]]])
    mem.record_usage(torch.tensor([[1.0, 0.1]] * 8 + [[0.1, 1.0]] * 2), 0)
    mem.record_usage(torch.tensor([[1.0, 0.1]] * 10), 1)
    u = mem.slot_usage(min_fraction=0.1)
    assert u["active"] == [2, 1] and u["counts"] == [10.0, 10.0]
    assert abs(u["perplexity"][1] - 1.0) < 1e-9 and u["perplexity"][0] > 1.5


def test_vq_commitment_and_orthogonality():
    slots = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]])
    f = torch.tensor([[1.0, 0.0]], requires_grad=True)
    assert float(vq_commitment_loss(f, 0, slots).detach()) < 1e-12  # exactly on a slot
    f2 = torch.tensor([[0.6, 0.8]], requires_grad=True)
    loss = vq_commitment_loss(f2, 0, slots)  # nearest own slot is (0, 1)
    assert abs(float(loss.detach()) - ((0.6 ** 2 + 0.2 ** 2) / 2)) < 1e-6
    learned = slots.clone().requires_grad_(True)
    vq_commitment_loss(f2, 0, learned).backward()
    assert learned.grad is None  # commitment only: codebook gets no gradient
    vq_commitment_loss(f2, 0, learned, codebook_weight=1.0).backward()
    assert learned.grad[0, 1].abs().sum() > 0 and learned.grad[1].abs().sum() == 0
    assert float(orthogonality_loss(slots)) < 1e-12
    same = torch.ones(2, 2, 3)
    assert abs(float(orthogonality_loss(same)) - 0.5) < 1e-6  # off-diagonals 1: 2 / 4


def test_memory_attention_pool():
    pool = MemoryAttentionPool(tau_init=0.2)
    assert abs(float(pool.tau.detach()) - 0.2) < 1e-6
    slots = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], requires_grad=True)
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    h = torch.randn(3, 4)
    out = pool(p, slots, h)
    torch.testing.assert_close(out["scores"], torch.tensor([1.0, -1.0, 0.2]))
    torch.testing.assert_close(out["attention"], torch.softmax(torch.tensor([1.0, -1.0, 0.2]) / 0.2, 0))
    torch.testing.assert_close(out["pooled"], (out["attention"][:, None] * h).sum(0))
    out["pooled"].sum().backward()
    assert slots.grad is None  # memory detached
    assert p.grad is not None and pool.log_tau.grad is not None
    pool.log_tau.data.fill_(10.0)
    assert float(pool.tau.detach()) == 2.0
    pool.log_tau.data.fill_(-10.0)
    assert abs(float(pool.tau.detach()) - 0.01) < 1e-7
