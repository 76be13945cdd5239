"""Tests for medvlp_lib.methods.rfbe: the accumulated RFBE gradient equals the full-batch gradient.

All in float64 so that the only differences are summation order (relative error <= 1e-6 required;
we observe ~1e-15). BatchNorm in training mode breaks the equality (per-sub-batch statistics);
GroupNorm or BatchNorm in eval mode restore it.
"""
from __future__ import annotations


import pytest
import torch
from torch import nn

from medvlp_lib.models.toy import ToyDualEncoder
from medvlp_lib.methods.msd import MSD
from medvlp_lib.methods.rfbe import RFBE, rfbe_step

DT = torch.float64
REPORTS = ["Heart size normal. Lungs are clear.", "No acute cardiopulmonary abnormality.",
           "Cardiomegaly. Small left pleural effusion.", "Right lower lobe consolidation.",
           "Calcified granuloma. Heart size normal.", "Emphysema. Degenerative changes of the thoracic spine.",
           "Pulmonary edema.", "No pneumothorax. Stable mediastinum."]


def TinyDual(norm: str = "none"):
    """The library's toy dual encoder at this file's size (float64); ``norm`` in {"none", "bn", "gn"}."""
    norm = {"none": "none", "bn": "batchnorm_train", "gn": "groupnorm"}[norm]
    return ToyDualEncoder(8, channels=(4,), norm=norm, vocab=50, token_dim=10, text_hidden=16, dtype=DT)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(n)


def make_batch(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(image=torch.rand(n, 1, 12, 12, generator=g, dtype=DT),
                text=[REPORTS[(i * 3 + seed) % len(REPORTS)] for i in range(n)],
                index=torch.arange(n) + 10 * seed)


def build(targets="msd", norm="none", w_uni=1.0, w_multi=10.0, prefill=True) -> MSD:
    torch.manual_seed(0)
    method = MSD(TinyDual(norm=norm), targets=targets, w_uni=w_uni, w_multi=w_multi, queue_size=20)
    if prefill:  # a non-empty queue holding stale keys of some of the next batch's samples (ids 0..5)
        for s in (0, 1):
            torch.manual_seed(100 + s)
            method.training_step(make_batch(6, seed=s))
            method.after_optimizer_step()
    for p in method.parameters():
        p.grad = None
    return method


def grads(method: MSD) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                      for p in method.online.parameters()])


def full_and_rfbe(method: MSD, batch: dict, sub_batch: int):
    torch.manual_seed(7)
    out_full = method.training_step(batch)
    out_full["loss"].backward()
    g_full = grads(method).clone()
    for p in method.parameters():
        p.grad = None
    torch.manual_seed(7)  # same augmentation draws
    out_rfbe = rfbe_step(method, batch, sub_batch)
    g_rfbe = grads(method).clone()
    for p in method.parameters():
        p.grad = None
    return out_full, g_full, out_rfbe, g_rfbe


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("targets,w_uni,w_multi", [("msd", 1.0, 10.0), ("mm_moco", 1.0, 10.0),
                                                   ("albef", 1.0, 10.0), ("msd", 1.0, 0.0),
                                                   ("msd", 0.0, 1.0)])
def test_rfbe_gradient_equals_full_batch_gradient(targets, w_uni, w_multi):
    method = build(targets, w_uni=w_uni, w_multi=w_multi)
    assert len(method.image_queue) == 12 and len(method.text_queue) == 12
    batch = make_batch(11, seed=0)  # ids 0..10: ids 0..5 have stale keys in the queue (masked)
    out_full, g_full, out_rfbe, g_rfbe = full_and_rfbe(method, batch, sub_batch=4)  # 4 + 4 + 3
    assert float(g_full.norm()) > 1e-4
    assert rel_err(g_rfbe, g_full) <= 1e-6
    assert out_rfbe["loss"] == pytest.approx(float(out_full["loss"].detach()), rel=1e-10)
    assert out_rfbe["sub_batches"] == 3 and out_rfbe["effective_batch"] == 11
    for k in ("loss_uni", "loss_multi", "uni_share"):
        assert out_rfbe[k] == pytest.approx(out_full[k], rel=1e-9, abs=1e-12), k


def test_rfbe_with_own_id_positive_and_uneven_sub_batches():
    method = build("mm_moco")
    method.own_id = "positive"
    batch = make_batch(7, seed=0)
    for sub in (1, 3, 7, 50):
        _, g_full, _, g_rfbe = full_and_rfbe(method, batch, sub_batch=sub)
        assert rel_err(g_rfbe, g_full) <= 1e-6, sub


def test_batchnorm_train_mode_breaks_equality_groupnorm_and_eval_bn_restore_it():
    batch = make_batch(12, seed=0)
    bn = build("msd", norm="bn", prefill=False)
    _, g_full, _, g_rfbe = full_and_rfbe(bn, batch, sub_batch=4)
    assert rel_err(g_rfbe, g_full) > 1e-3  # per-sub-batch statistics: a different function of the inputs
    gn = build("msd", norm="gn", prefill=False)
    _, g_full, _, g_rfbe = full_and_rfbe(gn, batch, sub_batch=4)
    assert rel_err(g_rfbe, g_full) <= 1e-6
    bn.eval()
    _, g_full, _, g_rfbe = full_and_rfbe(bn, batch, sub_batch=4)
    assert rel_err(g_rfbe, g_full) <= 1e-6


def test_rfbe_wrapper_one_ema_update_and_one_enqueue_per_optimizer_step():
    method = build("msd", prefill=False)
    wrapper = RFBE(method, sub_batch=3)
    assert wrapper.manual_backward is True and not getattr(MSD, "manual_backward")
    opt = torch.optim.SGD([p for p in wrapper.parameters() if p.requires_grad], lr=0.1)
    out = wrapper.training_step(make_batch(8, seed=3))
    assert isinstance(out["loss"], float) and out["sub_batches"] == 3
    assert method.online.logit_scale.grad is not None  # backward already done
    assert len(method.image_queue) == 0  # nothing enqueued before the optimiser step
    mom_before = [p.clone() for p in method.momentum_encoder.parameters()]
    opt.step()
    wrapper.after_optimizer_step()
    assert len(method.image_queue) == len(method.text_queue) == 8 and int(method.step) == 1
    assert sorted(method.text_queue.ids().tolist()) == list(range(30, 38))
    for pb, pm, po in zip(mom_before, method.momentum_encoder.parameters(), method.online.parameters()):
        torch.testing.assert_close(pm, 0.995 * pb + 0.005 * po.detach())
    assert set(wrapper.state_dict()) >= {"method.image_queue.feats", "method.step"}
    x = make_batch(2)["image"]
    torch.testing.assert_close(wrapper.encode_image(x), method.online.encode_image(x))
    with pytest.raises(ValueError, match="sub_batch must be a positive int"):
        RFBE(method, sub_batch=0)
    with pytest.raises(TypeError, match="RFBE protocol"):
        RFBE(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sub_batch must be a positive int"):
        rfbe_step(method, make_batch(4), 0)
