"""Chapter 10: the composed pieces (methods.compose), RFBE's gradient equivalence on the Adaptor+MSD model, the
compositions' claims on constructed 5-seed records, and the smoke run of the four experiments."""
import copy

import numpy as np
import pytest
import torch

from medvlp_lib import experiments, ledger
from medvlp_lib.experiments import compose as C
from medvlp_lib.methods.compose import (AdaptorMSD, AdaptorTeacher, MemoryPooling, TextTable, fill_memory_from_reports,
                                        memory_pool)
from medvlp_lib.methods.memory import ClassMemory
from medvlp_lib.methods.rfbe import RFBE, rfbe_step
from medvlp_lib.models.adaptor import Adaptor
from medvlp_lib.results import summary_entry


def _batch(b=12, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, 5, dtype=torch.bool)
    mask[::2, 3:] = False
    return dict(img_tokens=torch.randn(b, 4, 8, generator=g, dtype=dtype),
                txt_tokens=torch.randn(b, 5, 6, generator=g, dtype=dtype), txt_mask=mask, index=torch.arange(b),
                txt_pooled=torch.randn(b, 6, generator=g, dtype=dtype))


def _adaptor(dtype=torch.float32):
    torch.manual_seed(0)
    return Adaptor(8, 6, width=16, embed_dim=8, num_layers=2, num_heads=2).to(dtype)


def test_adaptor_msd_trains_updates_momentum_and_queues():
    m = AdaptorMSD(_adaptor(), queue_size=32, momentum=0.5)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = copy.deepcopy(m.momentum_encoder.state_dict())
    out = m.training_step(_batch())
    assert torch.isfinite(out["loss"]) and 0 <= out["target_entropy"]
    out["loss"].backward()
    assert m.adaptor.image_out.weight.grad is not None                   # the online Adaptor learns
    assert all(p.grad is None for p in m.momentum_encoder.parameters())  # the momentum Adaptor does not
    opt.step()
    m.after_optimizer_step()
    assert len(m.image_queue) == len(m.text_queue) == 12
    after = m.momentum_encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)     # one EMA step
    with pytest.raises(ValueError, match="cached batch"):
        m.training_step({"image": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(ValueError, match="image_augment"):
        AdaptorMSD(_adaptor(), image_augment=lambda x: x)


def test_rfbe_gradient_equals_full_batch_on_adaptor_msd():
    """Chapter 04's check on this model: RFBE's accumulated gradient over 32-row... here 5-row sub-batches equals the
    full batch's gradient (float64, a non-empty queue), because nothing couples rows inside the Adaptor."""
    torch.set_default_dtype(torch.float64)
    try:
        m = AdaptorMSD(_adaptor(torch.float64), queue_size=16, momentum=0.9)
        b = _batch(dtype=torch.float64)
        m.training_step(b)["loss"].backward()
        m.after_optimizer_step()
        m.zero_grad()
        twin = copy.deepcopy(m)
        full = m.training_step(b)
        full["loss"].backward()
        rf = rfbe_step(twin, b, sub_batch=5)
        assert rf["sub_batches"] == 3 and rf["loss"] == pytest.approx(float(full["loss"].detach()), rel=1e-12)
        g1 = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        g2 = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
        assert set(g1) == set(g2) and len(g1) > 10
        for n in g1:
            assert (g1[n] - g2[n]).norm() <= 1e-10 * (g1[n].norm() + 1e-30), n
        wrapped = RFBE(copy.deepcopy(m), sub_batch=4)
        assert wrapped.training_step(b)["effective_batch"] == 12
    finally:
        torch.set_default_dtype(torch.float32)


def test_text_table_and_adaptor_teacher():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = TextTable(["a", "b", "a"], emb)
    out = t.encode_text(["a", "b"])
    assert torch.allclose(out[0], torch.nn.functional.normalize(torch.tensor([1.0, 0.5]), dim=0))
    with pytest.raises(KeyError, match="'zzz'"):
        t.encode_text(["zzz"])

    class _Backbone(torch.nn.Module):  # a feature map [B, 8, 2, 2] from a [B, 1, 8, 8] image
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 4, stride=4)

        def forward_features(self, x):
            return self.conv(x)

    a = _adaptor()
    teacher = AdaptorTeacher(_Backbone(), a, torch.zeros(1, 1, 6), TextTable(["r"], torch.ones(1, 8)),
                             feature_index=None)
    x = torch.rand(3, 1, 8, 8)
    e = teacher.encode_image(x)
    assert e.shape == (3, 8) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert teacher.image_features(x).shape == (3, 16)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training


def test_memory_pool_and_filling():
    slots = torch.nn.functional.normalize(torch.eye(4)[:2].reshape(2, 1, 4), dim=-1)
    p = torch.zeros(1, 3, 4)
    p[0, 0, 0] = 1.0                     # token 0 matches a prototype exactly
    p[0, 1, 2] = 1.0
    p[0, 2, 3] = 1.0
    values = torch.arange(3.0).reshape(1, 3, 1)
    out = memory_pool(p, slots, values, torch.tensor(0.05))
    assert out["attention"][0, 0] > 0.99 and out["pooled"][0, 0] < 0.02
    assert torch.allclose(out["attention"].sum(1), torch.ones(1))
    with pytest.raises(ValueError, match="share B and N"):
        memory_pool(p, slots, values[:, :2], torch.tensor(1.0))
    mem = ClassMemory(6, n_slots=2, n_classes=3)
    rep = torch.randn(30, 6)
    labels = np.zeros((30, 3))
    labels[:10, 0] = labels[10:20, 1] = labels[20:, 2] = 1
    labels[:5, 2] = 1                    # multi-label reports count for each finding
    fill_memory_from_reports(mem, rep, labels)
    assert bool(mem.initialized)
    with pytest.raises(ValueError, match="no report"):
        fill_memory_from_reports(ClassMemory(6, n_slots=1, n_classes=3), rep, np.c_[labels[:, :2], 0 * labels[:, 2]])
    model = MemoryPooling(mem, image_dim=8, text_dim=6, embed_dim=4)
    out = model.training_step(_batch())
    out["loss"].backward()
    assert model.token_proj.weight.grad is not None and model.memory.slots.grad is None
    assert model.pool(_batch()["img_tokens"])["pooled"].shape == (12, 8)


def test_profiles_and_smoke_configs():
    for name in C.NAMES:
        exp = experiments.get(name)
        assert exp.seeds["cpu"] == (0, 1, 2, 3, 4)
        gpu_data = "embedded" if name == "compose_adaptor_teacher" else "real"   # see C.TEACHER_PROFILES
        assert exp.profiles["gpu"].data == gpu_data and exp.profiles["cpu"].data == "embedded"
        smoke = exp.profiles["gpu"].smoke()
        assert smoke.data == gpu_data and smoke.n_train <= 32
    with pytest.raises(ValueError, match="multiple of rfbe_sub_batch"):
        C.PROFILES["cpu"].replace(rfbe_batch=500)


def _entry(values):
    return summary_entry(list(values), seeds=list(range(len(values))))


def _record(name, pairs, n=5):
    """A constructed record: ``pairs`` = {summary key: (mean, paired offset per seed)}."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.02, n)
    summary = {k: _entry(base + d + rng.normal(0, noise, n)) for k, (d, noise) in pairs.items()}
    cfg = C.PROFILES["cpu"].to_dict()
    return {"experiment": name, "config": cfg, "summary": summary}


def _msd_record(d, noise=0.002, n=5):
    keys = {f"cls/{m}_b{b}/binary_auc@0.1": ((d if m == "msd" and b == 16 else 0.0), noise)
            for m in ("msd", "clip") for b in (16, 128)}
    return _record("compose_msd_adaptor", keys, n)


def test_claims_reach_their_verdicts_on_constructed_records():
    ev = experiments.claim_evaluators()
    assert ev["compose-msd-adaptor"](_msd_record(0.03))[1] == "reproduced"
    assert ev["compose-msd-adaptor"](_msd_record(-0.03))[1] == "contradicted"
    assert ev["compose-msd-adaptor"](_msd_record(0.005, noise=0.03))[1] == "inconclusive"
    assert ev["compose-msd-adaptor"](_msd_record(0.03, n=3))[1] == "pending"
    rf = lambda d: _record("compose_rfbe_adaptor", {"cls/rfbe_b512/binary_auc@0.1": (d, 0.002),  # noqa: E731
                                                    "cls/msd_b32/binary_auc@0.1": (0.0, 0.002)})
    assert ev["compose-rfbe-adaptor"](rf(-0.005))[1] == "reproduced"       # within the 2-point margin
    assert ev["compose-rfbe-adaptor"](rf(-0.06))[1] == "contradicted"
    te = lambda d: _record("compose_adaptor_teacher", {"student/adaptor/clean": (d, 0.002),  # noqa: E731
                                                       "student/r50/clean": (0.0, 0.002),
                                                       "teacher/adaptor/clean": (0.0, 0.002),
                                                       "teacher/r50/clean": (0.0, 0.002)})
    assert ev["compose-adaptor-teacher"](te(0.0))[1] == "reproduced"
    assert ev["compose-adaptor-teacher"](te(-0.05))[1] == "contradicted"
    me = lambda d: _record("compose_memory_pooling", {"cls/memory/binary_auc@0.01": (d, 0.002),  # noqa: E731
                                                      "cls/adaptor/binary_auc@0.01": (0.0, 0.002),
                                                      "cls/clip/binary_auc@0.01": (0.0, 0.002)})
    assert ev["compose-memory"](me(0.04))[1] == "reproduced"
    assert ev["compose-memory"](me(-0.04))[1] == "contradicted"
    rows = {c.id: c for c in ledger.CLAIMS}
    for cid in C.KEYS:
        assert rows[cid].paper == C.NEW and rows[cid].chapter == "10"


def test_smoke_of_the_four_compositions(tmp_path):
    report = experiments.smoke(list(C.NAMES), out=tmp_path, verbose=False)
    for name in C.NAMES:
        res = report["experiments"][name]
        assert res["ok"], (name, res.get("error"))
        assert not res.get("resume_mismatch"), (name, res.get("resume_mismatch"))
