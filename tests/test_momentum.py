"""Tests for medvlp_lib.methods.momentum: EMA update, schedule, momentum encoder, queue."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from medvlp_lib.methods.momentum import MomentumEncoder, MomentumQueue, ema_update_, momentum_schedule


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_ema_update_matches_naive_formula_and_copies_buffers():
    online, target = _net(0), _net(1)
    online.train()
    online(torch.randn(8, 4))  # changes BN running stats and num_batches_tracked
    before = {k: v.clone() for k, v in target.state_dict().items()}
    m = 0.9
    ema_update_(target, online, m)
    for name, p in target.named_parameters():
        expect = m * before[name] + (1 - m) * dict(online.named_parameters())[name].detach()
        torch.testing.assert_close(p, expect, rtol=0, atol=1e-7)
    for name, b in target.named_buffers():
        assert torch.equal(b, dict(online.named_buffers())[name]), name
    assert int(target[1].num_batches_tracked) == 1


def test_ema_update_extremes_and_errors():
    online, target = _net(0), _net(1)
    snap = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(snap, target.parameters()))
    ema_update_(target, online, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
    with pytest.raises(ValueError, match="momentum m must be in"):
        ema_update_(target, online, 1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema_update_(nn.Linear(4, 3), online, 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update_(nn.Linear(4, 3), nn.Linear(5, 3), 0.5)


def test_momentum_schedule_endpoints_monotone_and_errors():
    assert momentum_schedule(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_schedule(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert momentum_schedule(500, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert momentum_schedule(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    vals = [momentum_schedule(s, 100, 0.9, 0.999) for s in range(101)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert momentum_schedule(37, 100, 0.995, 0.995) == pytest.approx(0.995)
    with pytest.raises(ValueError, match="total"):
        momentum_schedule(0, 0, 0.9)
    with pytest.raises(ValueError, match="m0"):
        momentum_schedule(0, 10, 1.2)


def test_momentum_encoder_is_frozen_independent_copy():
    online = _net(0)
    enc = MomentumEncoder(online)
    assert all(not p.requires_grad for p in enc.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(enc.parameters(), online.parameters()))
    online.eval(); enc.eval()
    x = torch.randn(5, 4)
    y = enc(x)
    assert not y.requires_grad
    torch.testing.assert_close(y, online(x))
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    assert not torch.allclose(enc(x), online(x))
    enc.update(online, 0.0)
    torch.testing.assert_close(enc(x), online(x))
    assert enc.run("forward", x).shape == (5, 3)
    with pytest.raises(TypeError, match="nn.Module"):
        MomentumEncoder("not a module")


class _NaiveQueue:
    def __init__(self, size):
        self.size, self.rows = size, []

    def enqueue(self, feats, ids):
        self.rows += list(zip(feats, ids.tolist()))
        self.rows = self.rows[-self.size:]


def _as_set(feats, ids):
    return sorted((int(i), tuple(round(float(v), 6) for v in f)) for f, i in zip(feats, ids))


@pytest.mark.parametrize("size", [5, 8])
def test_queue_any_batch_size_matches_naive_fifo(size):
    torch.manual_seed(0)
    q, ref = MomentumQueue(3, size), _NaiveQueue(size)
    next_id = 0
    for n in [3, 4, 1, 11, 2, 7, 5, 0, 3]:
        f = torch.randn(n, 3)
        ids = torch.arange(next_id, next_id + n)
        next_id += n
        q.enqueue(f, ids)
        ref.enqueue(f, ids)
        assert len(q) == min(len(ref.rows), size) == q.keys().shape[0] == q.ids().shape[0]
        expect = _as_set([r[0] for r in ref.rows], torch.tensor([r[1] for r in ref.rows], dtype=torch.long))
        assert _as_set(q.keys(), q.ids()) == expect
        assert int(q.ptr) == next_id % size
    assert q.ids().dtype == torch.long


def test_queue_batch_larger_than_queue_keeps_newest_and_filled_slots_only():
    q = MomentumQueue(2, 4)
    assert q.keys().shape == (0, 2) and q.ids().shape == (0,)
    q.enqueue(torch.ones(3, 2), torch.tensor([7, 8, 9]))
    assert q.keys().shape == (3, 2) and q.ids().tolist() == [7, 8, 9]
    f = torch.arange(20, dtype=torch.float32).view(10, 2)
    q.enqueue(f, torch.arange(100, 110))
    assert sorted(q.ids().tolist()) == [106, 107, 108, 109]
    for row, i in zip(q.keys(), q.ids()):
        assert torch.equal(row, f[int(i) - 100])
    # keys() is a copy: modifying the queue later does not change a tensor taken earlier
    k = q.keys()
    q.enqueue(torch.zeros(4, 2), torch.arange(4))
    assert not torch.equal(k, q.keys())
    q.enqueue(torch.zeros(2, 2))  # no ids -> unknown (-1)
    assert (q.ids() == -1).sum() == 2
    q.reset()
    assert len(q) == 0 and int(q.ptr) == 0


def test_queue_state_dict_round_trip_and_dtype_cast():
    torch.manual_seed(1)
    q = MomentumQueue(4, 6)
    q.enqueue(torch.randn(5, 4), torch.arange(5))
    q.enqueue(torch.randn(3, 4, dtype=torch.float64), torch.arange(5, 8, dtype=torch.int32))
    q2 = MomentumQueue(4, 6)
    q2.load_state_dict(q.state_dict())
    assert torch.equal(q2.keys(), q.keys()) and torch.equal(q2.ids(), q.ids())
    assert int(q2.ptr) == int(q.ptr) == 2 and len(q2) == 6
    assert set(q.state_dict()) == {"feats", "sample_ids", "ptr", "filled"}
    assert q.keys().dtype == torch.float32


def test_queue_errors_name_the_argument():
    q = MomentumQueue(4, 6)
    with pytest.raises(ValueError, match=r"feats must have shape \[n, 4\]"):
        q.enqueue(torch.randn(2, 3), torch.arange(2))
    with pytest.raises(ValueError, match="feats must have shape"):
        q.enqueue(torch.randn(4), torch.arange(1))
    with pytest.raises(TypeError, match="floating"):
        q.enqueue(torch.ones(2, 4, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match=r"ids must have shape \[2\]"):
        q.enqueue(torch.randn(2, 4), torch.arange(3))
    with pytest.raises(TypeError, match="integer tensor"):
        q.enqueue(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="size must be a positive int"):
        MomentumQueue(4, 0)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        MomentumQueue(0, 4)
    with pytest.raises(TypeError, match="floating dtype"):
        MomentumQueue(4, 4, dtype=torch.long)
    assert "filled=0" in repr(q) and len(q) == 0


def test_momentum_copy_normalises_like_the_online_model_in_train_mode():
    """Regression: the copy's parameters are all frozen, which made ImageEncoder keep *every* BatchNorm of the
    copy in eval mode (running statistics) while the online model used batch statistics; at equal weights the
    keys then differed from the queries and MM-MoCo could not even over-fit one batch."""
    from medvlp_lib.methods.momentum import MomentumEncoder
    from medvlp_lib.models.encoders import build_image_encoder

    torch.manual_seed(0)
    online = build_image_encoder("resnet18", pretrained=False, in_chans=1)
    holder = torch.nn.ModuleDict({"online": online})
    holder["momentum"] = MomentumEncoder(online)
    holder.train()
    x = torch.randn(6, 1, 32, 32)
    with torch.no_grad():
        q = online(x)
        k = holder["momentum"](x)
    torch.testing.assert_close(k, q)
    bns = [m for m in holder["momentum"].module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)
    holder.eval()
    assert not any(m.training for m in holder["momentum"].module.modules())
