"""Tests for medvlp_lib.methods.msd (losses and the MSD method) and medvlp_lib.data.augment."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvlp_lib.data.augment import (RADIOLOGY_SYNONYMS, IdentityTextAugmenter, ImageAugmenter, ReportAugmenter,
                                     TextAugmenter, augment_images, split_sentences)
from medvlp_lib.models.toy import ToyDualEncoder
from medvlp_lib.methods.msd import (ALBEF, MSD, MMMoCo, albef_loss, combine_losses, mm_moco_loss, msd_loss,
                                    soft_targets, uni_modal_loss)


def TinyDual(dtype=torch.float32):
    """The library's toy dual encoder at this file's size (8-d, no norm, a linear text head)."""
    return ToyDualEncoder(8, channels=(4,), norm="none", vocab=64, token_dim=12, text_hidden=None, dtype=dtype)


REPORTS = ["Heart size normal. Lungs are clear. No pneumothorax.",
           "No acute cardiopulmonary abnormality.",
           "Cardiomegaly. Small left pleural effusion.",
           "Right lower lobe consolidation. No pneumothorax.",
           "Calcified granuloma in the left upper lobe. Heart size normal.",
           "Emphysema. Degenerative changes of the thoracic spine."]


def make_batch(n: int, size: int = 16, seed: int = 0, dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(image=torch.rand(n, 1, size, size, generator=g, dtype=dtype),
                text=[REPORTS[i % len(REPORTS)] for i in range(n)], index=torch.arange(n) + 100 * seed)


def rand_unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ---------------------------------------------------------------------------------------------------
# pure losses
# ---------------------------------------------------------------------------------------------------
def test_soft_targets_match_naive_loop_and_sum_to_one():
    q, keys = rand_unit(3, 5, seed=0), rand_unit(7, 5, seed=1)
    tau, a, b = 0.1, 0.3, 0.7
    t = soft_targets(q, None, keys, scale=1 / tau, alpha=a, beta=b)
    for i in range(3):
        lq = torch.tensor([float(q[i] @ keys[j]) / tau for j in range(7)], dtype=torch.float64)
        lk = torch.tensor([float(keys[i] @ keys[j]) / tau for j in range(7)], dtype=torch.float64)
        expect = a * torch.softmax(lq, 0) + b * torch.softmax(lk, 0)
        torch.testing.assert_close(t[i], expect)
    torch.testing.assert_close(t.sum(1), torch.ones(3, dtype=torch.float64))
    # alpha + beta != 1 is renormalised: (0.6, 1.4) == (0.3, 0.7)
    torch.testing.assert_close(soft_targets(q, None, keys, scale=1 / tau, alpha=0.6, beta=1.4), t)
    # scale = 1/tau is the same thing
    torch.testing.assert_close(soft_targets(q, None, keys, scale=1 / tau, alpha=a, beta=b), t)
    # beta = 1: the target peaks on the query's own key (k_i k_i = 1 is the largest similarity)
    t_k = soft_targets(q, None, keys, scale=1 / tau, alpha=0.0, beta=1.0)
    assert torch.equal(t_k.argmax(1), torch.arange(3))
    with pytest.raises(ValueError, match="alpha and beta"):
        soft_targets(q, None, keys, scale=1 / tau, alpha=0.0, beta=0.0)
    # one temperature convention: losses take the multiplier scale = 1/tau, never its log
    with pytest.raises(TypeError, match="scale"):
        soft_targets(q, None, keys, alpha=a, beta=b)
    with pytest.raises(TypeError, match="logit_scale"):
        mm_moco_loss(q, keys, logit_scale=math.log(1000.0))
    with pytest.raises(ValueError, match="scale must be a finite positive"):
        soft_targets(q, None, keys, scale=-10.0)
    with pytest.raises(ValueError, match=r"keys must be a \[N, 5\]"):
        soft_targets(q, None, rand_unit(7, 4), scale=1 / tau)


def test_msd_loss_is_kl_to_target_and_alpha_one_gives_zero_gradient():
    keys = rand_unit(9, 6, seed=3)
    q = rand_unit(4, 6, seed=2).requires_grad_(True)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    loss, parts = msd_loss(q, keys, scale=scale, alpha=0.3, beta=0.7)
    t = soft_targets(q, None, keys, scale=scale, alpha=0.3, beta=0.7)
    p = torch.softmax(scale.detach() * q.detach() @ keys.T, 1)
    kl = (t * (t.log() - p.log())).sum(1).mean()
    torch.testing.assert_close(loss.detach(), kl)
    assert float(loss.detach()) > 0 and set(parts) >= {"target_entropy", "p_pos", "acc"}
    # gradient w.r.t. the logits is (p - t) / B (hand formula)
    z = (scale * q @ keys.T).detach().requires_grad_(True)
    l2 = (t * (t.log() - torch.log_softmax(z, 1))).sum(1).mean()
    (gz,) = torch.autograd.grad(l2, z)
    torch.testing.assert_close(gz, (p - t) / 4)
    # alpha = 1, beta = 0: target = stopgrad(p) -> KL = 0 and gradient = 0 (to rounding)
    q.grad = None
    loss1, _ = msd_loss(q, keys, scale=scale, alpha=1.0, beta=0.0)
    loss1.backward()
    assert abs(float(loss1.detach())) < 1e-14
    assert float(q.grad.abs().max()) < 1e-13 and abs(float(scale.grad)) < 1e-13
    # whereas beta > 0 gives a real signal
    q.grad = None
    msd_loss(q, keys, scale=scale, alpha=0.3, beta=0.7)[0].backward()
    assert float(q.grad.abs().max()) > 1e-3


def test_mm_moco_equals_cross_entropy_and_albef_interpolates():
    q, keys = rand_unit(5, 4, seed=4), rand_unit(12, 4, seed=5)
    logits = q @ keys.T / 0.2
    ce = F.cross_entropy(logits, torch.arange(5))
    torch.testing.assert_close(mm_moco_loss(q, keys, scale=5)[0], ce)
    torch.testing.assert_close(uni_modal_loss(q, keys, scale=5)[0], ce)
    teacher = rand_unit(5, 4, seed=6)
    torch.testing.assert_close(albef_loss(q, keys, k_same=teacher, scale=5, alpha=0.0)[0], ce)
    soft = torch.softmax(teacher @ keys.T / 0.2, 1)
    tgt = 0.4 * soft + 0.6 * F.one_hot(torch.arange(5), 12).double()
    expect = -(tgt * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(albef_loss(q, keys, k_same=teacher, scale=5, alpha=0.4)[0], expect)
    with pytest.raises(ValueError, match="k_same"):
        albef_loss(q, keys, scale=5)
    # custom positive indices
    pos = torch.tensor([3, 0, 7, 11, 2])
    torch.testing.assert_close(mm_moco_loss(q, keys, scale=5, pos=pos)[0], F.cross_entropy(logits, pos))
    with pytest.raises(ValueError, match="pos must be"):
        mm_moco_loss(q, keys, scale=5, pos=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        mm_moco_loss(q, keys, scale=5, reduction="avg")
    per = mm_moco_loss(q, keys, scale=5, reduction="none")[0]
    assert per.shape == (5,) and torch.allclose(per.mean(), ce)


def test_own_id_mask_positive_ignore():
    q, keys = rand_unit(2, 4, seed=7), rand_unit(6, 4, seed=8)
    q_ids = torch.tensor([10, 11])
    key_ids = torch.tensor([10, 11, 10, 5, 11, -1])  # rows 2 and 4 are stale copies of the queries' keys
    logits = q @ keys.T / 0.1
    # ignore == plain CE
    li = mm_moco_loss(q, keys, scale=10, q_ids=q_ids, key_ids=key_ids, own_id="ignore")[0]
    torch.testing.assert_close(li, F.cross_entropy(logits, torch.arange(2)))
    # mask == CE over the keys with the stale copies removed
    lm = mm_moco_loss(q, keys, scale=10, q_ids=q_ids, key_ids=key_ids, own_id="mask")[0]
    e0 = F.cross_entropy(logits[0:1, [0, 1, 3, 4, 5]], torch.tensor([0]))
    e1 = F.cross_entropy(logits[1:2, [0, 1, 2, 3, 5]], torch.tensor([1]))
    torch.testing.assert_close(lm, (e0 + e1) / 2)
    # positive == uniform target over {positive, stale copy}
    lp = mm_moco_loss(q, keys, scale=10, q_ids=q_ids, key_ids=key_ids, own_id="positive")[0]
    lsm = torch.log_softmax(logits, 1)
    torch.testing.assert_close(lp, (-(lsm[0, 0] + lsm[0, 2]) / 2 - (lsm[1, 1] + lsm[1, 4]) / 2) / 2)
    # MSD targets put zero mass on masked keys and still sum to one
    t = soft_targets(q, None, keys, scale=10, q_ids=q_ids, key_ids=key_ids, own_id="mask")
    assert float(t[0, 2]) == 0.0 and float(t[1, 4]) == 0.0
    torch.testing.assert_close(t.sum(1), torch.ones(2, dtype=torch.float64))
    lmsd = msd_loss(q, keys, scale=10, q_ids=q_ids, key_ids=key_ids, own_id="mask")[0]
    assert torch.isfinite(lmsd)
    # unknown ids (-1) never match each other
    lu = mm_moco_loss(q, keys, scale=10, q_ids=torch.tensor([-1, -1]), key_ids=torch.full((6,), -1))[0]
    torch.testing.assert_close(lu, li)
    with pytest.raises(ValueError, match="own_id must be one of"):
        mm_moco_loss(q, keys, scale=10, own_id="drop")
    with pytest.raises(ValueError, match="both q_ids and key_ids"):
        mm_moco_loss(q, keys, scale=10, q_ids=q_ids)


def test_combine_losses_weights_and_shares():
    loss, parts = combine_losses(torch.tensor(2.0), torch.tensor(0.5), 1.0, 10.0)
    assert float(loss) == pytest.approx((2.0 + 5.0) / 11)
    assert float(parts["uni_share"]) == pytest.approx(2 / 7)
    assert float(parts["uni_share"] + parts["multi_share"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="w_uni and w_multi"):
        combine_losses(torch.tensor(1.0), torch.tensor(1.0), 0.0, 0.0)


# ---------------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------------
def test_image_augmenter_shape_range_determinism():
    x = make_batch(4, size=16)["image"]
    torch.manual_seed(0)
    a = augment_images(x)
    torch.manual_seed(0)
    b = ImageAugmenter()(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and not torch.equal(a, x)
    c = ImageAugmenter()(x)  # RNG advanced -> a different view
    assert not torch.equal(a, c)
    # with every jitter off and a full crop, the augmenter is the identity
    ident = ImageAugmenter(scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0, translate=0, brightness=0, contrast=0,
                           noise_std=0)
    torch.testing.assert_close(ident(x), x, atol=1e-5, rtol=0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(ImageAugmenter()(x, generator=g1), ImageAugmenter()(x, generator=g2))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        ImageAugmenter()(x[0])
    with pytest.raises(ValueError, match="scale"):
        ImageAugmenter(scale=(0.0, 1.0))


def test_report_augmenter_synonyms_drop_shuffle_determinism():
    assert len(RADIOLOGY_SYNONYMS) >= 30
    aug = ReportAugmenter(p_synonym=1.0, p_drop=0.0, p_shuffle=0.0)
    assert aug(["No acute cardiopulmonary abnormality."]) == ["No acute cardiopulmonary process."]
    assert aug(["Heart size normal."]) == ["Normal heart size."]
    out = aug(["Small pleural effusion."])[0]
    assert out == "Small pleural fluid."
    text = "Heart size normal. Lungs are clear. No pneumothorax. Degenerative changes."
    shuf = ReportAugmenter(p_synonym=0.0, p_drop=0.0, p_shuffle=1.0)
    torch.manual_seed(1)
    outs = {shuf.augment_one(text) for _ in range(10)}
    assert len(outs) > 1
    assert all(sorted(split_sentences(o)) == sorted(split_sentences(text)) for o in outs)
    drop = ReportAugmenter(p_synonym=0.0, p_drop=1.0, p_shuffle=0.0, min_sentences=2)
    d = drop.augment_one(text)
    assert len(split_sentences(d)) == 2 and set(split_sentences(d)) <= set(split_sentences(text))
    torch.manual_seed(5)
    r1 = ReportAugmenter()(REPORTS)
    torch.manual_seed(5)
    r2 = ReportAugmenter()(REPORTS)
    assert r1 == r2 and len(r1) == len(REPORTS)
    assert isinstance(ReportAugmenter(), TextAugmenter) and isinstance(IdentityTextAugmenter(), TextAugmenter)
    assert IdentityTextAugmenter()(REPORTS) == REPORTS
    with pytest.raises(TypeError, match="single str"):
        aug("Heart size normal.")
    with pytest.raises(ValueError, match="p_drop"):
        ReportAugmenter(p_drop=2.0)


# ---------------------------------------------------------------------------------------------------
# the method module
# ---------------------------------------------------------------------------------------------------
def test_msd_training_step_and_after_optimizer_step():
    torch.manual_seed(0)
    method = MSD(TinyDual(), queue_size=10)
    assert method.alpha == 0.3 and method.beta == 0.7 and method.w_multi == 10 and method.momentum == 0.995
    batch = make_batch(6)
    out = method.training_step(batch)
    assert out["loss"].requires_grad and math.isfinite(float(out["loss"].detach()))
    for k in ("loss_uni", "loss_multi", "uni_share", "multi_share", "loss_i2t", "loss_t2i", "loss_i2i",
              "loss_t2t", "temperature", "momentum"):
        assert isinstance(out[k], float), k
    assert out["uni_share"] + out["multi_share"] == pytest.approx(1.0)
    out["loss"].backward()
    assert method.online.logit_scale.grad is not None
    assert all(p.grad is None for p in method.momentum_encoder.parameters())
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    opt.step()
    mom_before = [p.clone() for p in method.momentum_encoder.parameters()]
    method.after_optimizer_step()
    assert len(method.image_queue) == len(method.text_queue) == 6 and int(method.step) == 1
    assert sorted(method.image_queue.ids().tolist()) == list(range(6))
    # exactly one EMA update with m = 0.995
    for pb, pm, po in zip(mom_before, method.momentum_encoder.parameters(), method.online.parameters()):
        torch.testing.assert_close(pm, 0.995 * pb + 0.005 * po.detach())
    method.after_optimizer_step()  # no pending keys: EMA only, no enqueue
    assert len(method.image_queue) == 6
    # second batch: queue wraps (10 slots), and own ids in the queue are masked
    method.training_step(make_batch(6, seed=0))
    method.after_optimizer_step()
    assert len(method.image_queue) == 10
    sd = method.state_dict()
    assert {"image_queue.feats", "text_queue.sample_ids", "step"} <= set(sd)
    other = MSD(TinyDual(), queue_size=10)
    other.load_state_dict(sd)
    assert torch.equal(other.image_queue.keys(), method.image_queue.keys()) and int(other.step) == 3


def test_msd_step_is_deterministic_under_seed_and_variants_run():
    def run(cls, **kw):
        torch.manual_seed(0)
        m = cls(TinyDual(), queue_size=16, **kw)
        torch.manual_seed(42)
        return m.training_step(make_batch(5))

    a, b = run(MSD), run(MSD)
    assert float(a["loss"].detach()) == float(b["loss"].detach())
    moco, albef = run(MMMoCo), run(ALBEF)
    assert all(math.isfinite(float(o["loss"].detach())) for o in (moco, albef))
    assert float(moco["loss"].detach()) != float(a["loss"].detach())
    # alpha = 1, beta = 0, w_uni = 0: the whole loss has zero gradient (paper: "training failed")
    torch.manual_seed(0)
    m = MSD(TinyDual(dtype=torch.float64), alpha=1.0, beta=0.0, w_uni=0.0, queue_size=8)
    out = m.training_step(make_batch(5, dtype=torch.float64))
    out["loss"].backward()
    assert max(float(p.grad.abs().max()) for p in m.online.parameters() if p.grad is not None) < 1e-12


def test_msd_constructor_and_batch_errors():
    with pytest.raises(ValueError, match="targets must be one of"):
        MSD(TinyDual(), targets="clip")
    with pytest.raises(TypeError, match="encode_image"):
        MSD(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="own_id"):
        MSD(TinyDual(), own_id="keep")
    with pytest.raises(ValueError, match="momentum_end and total_steps"):
        MSD(TinyDual(), momentum_end=1.0)
    m = MSD(TinyDual(), momentum=0.99, momentum_end=1.0, total_steps=10, queue_size=8)
    assert m.current_momentum() == pytest.approx(0.99)
    bad = make_batch(3)
    bad["text"] = bad["text"][:2]
    with pytest.raises(ValueError, match=r"batch\['text'\]"):
        m.training_step(bad)
    bad = make_batch(3)
    bad["index"] = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"batch\['index'\]"):
        m.training_step(bad)


def _train_retrieval(cls, steps=60, **kw) -> tuple[float, float]:
    """Train on 6 distinguishable image-report pairs (no augmentation); image->text R@1 before/after."""
    torch.manual_seed(0)
    m = cls(TinyDual(), queue_size=32, momentum=0.9, image_augment=None, text_augment=None, **kw)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.03)
    b = make_batch(6)
    g = torch.Generator().manual_seed(0)
    b["image"] = torch.rand(6, 1, 16, 16, generator=g) * 0.2 + torch.linspace(0, 0.8, 6).view(6, 1, 1, 1)

    def r_at_1() -> float:
        with torch.no_grad():
            s = m.encode_image(b["image"]) @ m.encode_text(b["text"]).T
        return float((s.argmax(1) == torch.arange(6)).float().mean())

    before = r_at_1()
    for _ in range(steps):
        out = m.training_step(b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.after_optimizer_step()
    return before, r_at_1()


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(n)


def test_msd_learns_alignment_but_alpha_one_does_not():
    before, after = _train_retrieval(MSD)  # alpha 0.3, beta 0.7 + uni-modal terms
    assert after >= 0.8 and before < 0.5
    assert _train_retrieval(MSD, alpha=0.0, beta=1.0)[1] >= 0.8  # beta = 1 (key-to-key only) trains
    assert _train_retrieval(MSD, alpha=1.0, beta=0.0, w_uni=0.0) == (before, before)  # no signal at all


def test_alpha_reading_b_momentum_teacher_gives_a_gradient_reading_a_does_not():
    """Reading (a): alpha = 1 distils the online prediction into itself (zero gradient). Reading (b): the alpha
    term is the momentum encoder's query-to-key distribution, which does move the online encoder."""
    torch.manual_seed(0)
    q = rand_unit(4, 6, seed=0).requires_grad_(True)
    keys = rand_unit(10, 6, seed=1)
    teacher = rand_unit(4, 6, seed=2)
    loss_a, _ = msd_loss(q, keys, scale=10.0, alpha=1.0, beta=0.0)
    (g_a,) = torch.autograd.grad(loss_a, q)
    assert float(g_a.abs().max()) < 1e-6
    loss_b, _ = msd_loss(q, keys, scale=10.0, alpha=1.0, beta=0.0, q_teacher=teacher)
    (g_b,) = torch.autograd.grad(loss_b, q)
    assert float(g_b.abs().max()) > 1e-3
    # the target of reading (b) is softmax(s * q_teacher K^T), and a teacher equal to q gives reading (a)'s target
    torch.testing.assert_close(soft_targets(q, None, keys, scale=10.0, alpha=1.0, beta=0.0, q_teacher=teacher),
                               F.softmax(10.0 * teacher @ keys.T, dim=1))
    same, _ = msd_loss(q, keys, scale=10.0, alpha=0.3, beta=0.7, q_teacher=q.detach())
    torch.testing.assert_close(same, msd_loss(q, keys, scale=10.0, alpha=0.3, beta=0.7)[0])
    with pytest.raises(ValueError, match="q_teacher"):
        msd_loss(q, keys, scale=10.0, q_teacher=teacher[:2])


def test_msd_alpha_teacher_option():
    with pytest.raises(ValueError, match="alpha_teacher"):
        MSD(TinyDual(), alpha_teacher="both")
    with pytest.raises(ValueError, match="targets='msd'"):
        MSD(TinyDual(), targets="mm_moco", alpha_teacher="momentum")
    batch = dict(image=torch.rand(4, 1, 16, 16), text=REPORTS[:4], index=torch.arange(4))
    losses = {}
    for reading in ("online", "momentum"):
        torch.manual_seed(0)
        m = MSD(TinyDual(), alpha=1.0, beta=0.0, w_uni=0.0, queue_size=8, image_augment=None, text_augment=None,
                alpha_teacher=reading)
        out = m.training_step(batch)
        losses[reading] = float(out["loss"])
    # before any update the momentum encoder is the online encoder and the views are equal: same target
    assert losses["online"] == pytest.approx(losses["momentum"], abs=1e-6)
