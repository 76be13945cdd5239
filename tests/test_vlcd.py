"""VLCD: loss equations vs hand computation, gradient routing (frozen teacher), methods, students."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvlp_lib.methods.contrastive import clip_loss
from medvlp_lib.methods.vlcd import (VLCD, Predistill, feature_distill_loss, gnd_loss, predistill_loss,
                                     teacher_image_embedding, vlcd_loss)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------
# pure losses
# ---------------------------------------------------------------------------------------------------
def test_predistill_loss_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    loss, parts = predistill_loss(s, t)
    assert math.isclose(float(loss), (0.0 + (1 - 1 / math.sqrt(2))) / 2, rel_tol=1e-6)
    assert math.isclose(parts["cos"], (1 + 1 / math.sqrt(2)) / 2, rel_tol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        predistill_loss(s, t[:1])


def test_gnd_loss_hand_cases():
    s = torch.tensor([[3.0, 4.0]])  # ||s|| = 5
    v = torch.tensor([[2.0, 0.0]])  # anchor direction e1 (norm of the anchor is irrelevant)
    # teacher norm 10 > 5: the floor applies, loss = 1 - 3/10
    assert math.isclose(float(gnd_loss(s, v, torch.tensor([[0.0, 10.0]]))[0]), 0.7, rel_tol=1e-6)
    # teacher norm 2 < 5: plain direction term 1 - cos = 1 - 3/5
    assert math.isclose(float(gnd_loss(s, v, torch.tensor([[2.0, 0.0]]))[0]), 0.4, rel_tol=1e-6)
    # no teacher: 1 - cos
    loss, parts = gnd_loss(s, v)
    assert math.isclose(float(loss), 0.4, rel_tol=1e-6)
    assert math.isclose(parts["proj"], 3.0) and math.isclose(parts["s_norm"], 5.0) and math.isnan(parts["t_norm"])
    # aligned student at the teacher's norm reaches 0; opposite reaches 2
    assert float(gnd_loss(torch.tensor([[7.0, 0.0]]), v, torch.tensor([[0.0, 7.0]]))[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(gnd_loss(torch.tensor([[-7.0, 0.0]]), v, torch.tensor([[0.0, 7.0]]))[0]) == pytest.approx(2.0)


def _nd_reference(s, v, t):
    """Wang et al. (2023) ND loss written as their per-sample loop, with the text feature as the centre."""
    total = 0.0
    for si, vi, ti in zip(s, v, t):
        e_c = vi / vi.norm(p=2)
        max_norm = max(si.norm(p=2), ti.norm(p=2))
        total += 1 - torch.dot(si, e_c) / max_norm
    return total / len(s)


def test_gnd_matches_reference_loop():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 5, generator=g) * torch.rand(7, 1, generator=g) * 3
    v = torch.randn(7, 5, generator=g)
    t = torch.randn(7, 5, generator=g) * 2
    assert float(gnd_loss(s, v, t)[0]) == pytest.approx(float(_nd_reference(s, v, t)), rel=1e-6)


def test_gnd_gradients_only_to_student_and_norm_floor():
    s = torch.tensor([[1.0, 1.0], [0.5, -0.2]], requires_grad=True)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t = torch.tensor([[0.0, 4.0], [3.0, 0.0]], requires_grad=True)
    gnd_loss(s, v, t)[0].backward()
    assert v.grad is None and t.grad is None and s.grad is not None
    # below the teacher's norm, growing the student along the anchor lowers the loss (the "norm" part)
    s0 = torch.tensor([[1.0, 0.0]])
    anchor, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    losses = [float(gnd_loss(s0 * k, anchor, teacher)[0]) for k in (1, 2, 3, 4, 5)]
    assert losses == sorted(losses, reverse=True) and losses[3] == pytest.approx(0.0, abs=1e-7)
    assert losses[4] == pytest.approx(0.0, abs=1e-7)  # beyond the floor only the direction matters


def test_feature_distill_kinds():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert float(feature_distill_loss(s, t)) == pytest.approx(0.5)  # (0 + 1) / 2
    assert float(feature_distill_loss(s, t, "mse")) == pytest.approx((1 + 0 + 4 + 4) / 4)
    assert float(feature_distill_loss(s, t, "mse_normalized")) == pytest.approx(2 * 0.5)
    with pytest.raises(ValueError, match="kind must be"):
        feature_distill_loss(s, t, "l1")


def test_vlcd_loss_composition():
    g = torch.Generator().manual_seed(1)
    s, v, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    l_clip, _ = clip_loss(F.normalize(s, dim=-1), F.normalize(v, dim=-1), 10.0)
    base, parts = vlcd_loss(s, v, t, scale=10.0, lam=0.0, mu=0.0)
    assert float(base) == pytest.approx(float(l_clip)) and math.isnan(parts["l_gnd"]) and math.isnan(parts["l_dist"])
    full, parts = vlcd_loss(s, v, t, scale=10.0, lam=0.1, mu=0.5)
    expect = l_clip + 0.1 * gnd_loss(s, v, t)[0] + 0.5 * feature_distill_loss(s, t)
    assert float(full) == pytest.approx(float(expect), rel=1e-6)
    assert parts["l_t"] == pytest.approx(float(l_clip)) and parts["l_gnd"] == pytest.approx(float(gnd_loss(s, v, t)[0]))
    with pytest.raises(ValueError, match="mu > 0 .* needs teacher_img"):
        vlcd_loss(s, v, None, mu=1.0)
    with pytest.raises(ValueError, match="lam must be a finite non-negative"):
        vlcd_loss(s, v, t, lam=-1.0)


# ---------------------------------------------------------------------------------------------------
# methods with tiny stand-in towers
# ---------------------------------------------------------------------------------------------------
class TinyTeacher(nn.Module):
    """DualEncoder-like: image_features / image_proj / encode_image / encode_text / logit_scale (+ a BN)."""

    def __init__(self, d=6):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.body = nn.Linear(16, 8)
        self.image_proj = nn.Linear(8, d)
        self.text_table = nn.Embedding(11, d)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        self.embed_dim = d
        self.image_calls = 0

    def image_features(self, x):
        self.image_calls += 1
        return self.body(self.bn(x).flatten(1))

    def encode_image(self, x):
        return F.normalize(self.image_proj(self.image_features(x)), dim=-1)

    def encode_text(self, texts):
        idx = torch.tensor([sum(map(ord, t)) % 11 for t in texts])
        return F.normalize(self.text_table(idx), dim=-1)


class TinyStudent(nn.Module):
    def __init__(self, d=6):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, d))
        self.out_dim = d

    def forward(self, x):
        return self.net(x)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, 4, 4, generator=g), "text": [f"report {i}" for i in range(n)]}


def test_vlcd_method_gradients_and_state():
    torch.manual_seed(0)
    teacher, student = TinyTeacher(), TinyStudent()
    method = VLCD(student, teacher, lam=0.1, mu=1.0)
    assert method.logit_scale.item() == pytest.approx(math.log(20.0))  # initialised from the teacher
    names = [n for n, _ in method.named_parameters()]
    assert names == ["logit_scale"] + [f"student.{n}" for n, _ in student.named_parameters()]
    assert not any(k.startswith("teacher") for k in method.state_dict())
    method.train()
    assert not teacher.training and student.training  # teacher (and its BN) stays in eval mode
    running = teacher.bn.running_mean.clone()
    out = method.training_step(_batch())
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters()) and method.logit_scale.grad is not None
    assert torch.equal(teacher.bn.running_mean, running)
    for key in ("l_t", "l_gnd", "l_dist", "acc_i2t"):
        assert math.isfinite(out[key])
    # the loss is the documented sum
    with torch.no_grad():
        b = _batch()
        s = student(b["image"])
        v = teacher.encode_text(b["text"])
        t = teacher_image_embedding(teacher, b["image"])
        ref, _ = vlcd_loss(s, v, t, scale=method.scale, lam=0.1, mu=1.0)
    assert float(out["loss"].detach()) == pytest.approx(float(ref), rel=1e-6)
    method.to(torch.float64)
    assert teacher.image_proj.weight.dtype == torch.float64  # frozen towers move with the method


def test_clip_only_never_runs_teacher_images():
    teacher, student = TinyTeacher(), TinyStudent()
    base = VLCD.clip_only(student, teacher)
    out = base.training_step(_batch())
    assert teacher.image_calls == 0 and math.isnan(out["l_gnd"]) and math.isnan(out["l_dist"])
    assert float(out["loss"].detach()) == pytest.approx(out["l_t"])
    # a separate (trainable) text tower instead of a teacher

    class TextTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(11, 6)

        def forward(self, texts):
            return self.table(torch.tensor([len(t) % 11 for t in texts]))

    tt = TextTower()
    m = VLCD.clip_only(student, text_encoder=tt, train_text=True)
    m.training_step(_batch())["loss"].backward()
    assert tt.table.weight.grad is not None and any(k.startswith("text_encoder") for k in m.state_dict())
    frozen = VLCD(student, text_encoder=TextTower(), lam=0.1)  # frozen text tower, gnd without teacher
    assert frozen.training_step(_batch())["l_gnd"] >= 0
    with pytest.raises(ValueError, match="needs a text tower"):
        VLCD(student)
    with pytest.raises(ValueError, match="needs a teacher"):
        VLCD(student, text_encoder=TextTower(), mu=1.0)


def test_predistill_decreases_loss_with_trainer():
    from medvlp_lib.data.natural import NaturalCrops
    from medvlp_lib.models.students import build_student
    from medvlp_lib.train import StepBatches, Trainer

    torch.manual_seed(0)
    teacher = build_student("efficientnet_b0", embed_dim=16, in_chans=1, img_size=32)
    student = build_student("mobilenetv3", embed_dim=16, in_chans=1, img_size=32, proj="linear")
    method = Predistill(student, teacher)
    assert isinstance(method.projector, nn.Linear) and method.projector.in_features == 16
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = NaturalCrops(n=16, size=32, seed=0)
    batches = StepBatches(data, batch_size=8, seed=0)
    method.eval()
    with torch.no_grad():
        first = float(method.training_step(batches.batch(0))["loss"])
    trainer = Trainer(method, lr=3e-3, weight_decay=0.0, total_steps=6, progress=False, device="cpu")
    trainer.fit(batches, steps=6)
    method.eval()
    with torch.no_grad():
        last = float(method.training_step(batches.batch(0))["loss"])
    assert last < 0.5 * first, (first, last)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # teacher weights and BN statistics untouched


# ---------------------------------------------------------------------------------------------------
# students
# ---------------------------------------------------------------------------------------------------
def test_students_build_and_embed():
    from medvlp_lib.models.students import STUDENTS, build_student

    x = torch.rand(2, 1, 64, 64)
    for name in STUDENTS.values():
        m = build_student(name, embed_dim=8, in_chans=1, img_size=64).eval()
        with torch.no_grad():
            e = m(x)
            assert e.shape == (2, 8)
            assert torch.allclose(m.encode_image(x).norm(dim=-1), torch.ones(2), atol=1e-5)
            assert m.image_features(x).shape == (2, m.feature_dim)
    rgb = build_student("efficientnet_b0", embed_dim=4, in_chans=3, img_size=None).eval()
    x3 = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert rgb(x3).shape == (1, 4)
        # a student used as a teacher image tower yields its unnormalised embedding
        assert torch.equal(teacher_image_embedding(rgb, x3), rgb(x3))
    assert not any(k.startswith("image_proj") for k in rgb.state_dict())  # alias, not a second copy


def test_efficientformer_resolution_and_errors(tmp_path):
    from medvlp_lib.models import students
    from medvlp_lib.models.encoders import WeightsNotAvailableError

    big = students.build_student("efficientformer_l1", embed_dim=8, img_size=224).eval()
    with torch.no_grad():
        assert big(torch.rand(1, 1, 224, 224)).shape == (1, 8)
    attn = [m for m in big.modules() if type(m).__name__ == "Attention"][0]
    with torch.no_grad():
        attn.attention_biases.fill_(0.25)
    assert students.set_efficientformer_resolution(big.encoder.backbone, 64) == 1
    assert attn.attention_biases.shape[1] == 4 and attn.attention_bias_idxs.shape == (4, 4)
    assert torch.allclose(attn.attention_biases, torch.full_like(attn.attention_biases, 0.25), atol=1e-5)
    small = students.build_student("efficientformer_l1", embed_dim=8, img_size=64).eval()
    with pytest.raises(ValueError, match="built for img_size=64"):
        small(torch.rand(1, 1, 224, 224))
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        students.build_student("mobilenetv3", pretrained=tmp_path / "nope.safetensors")
    students_cached = students._cached_weight_file
    try:
        students._cached_weight_file = lambda name: None
        with pytest.raises(WeightsNotAvailableError, match="never downloads"):
            students.build_student("mobilenetv3", pretrained=True)
    finally:
        students._cached_weight_file = students_cached
    assert students.resolve_name("MobileNetV3-Large") == "mobilenetv3_large_100"
    assert students.resolve_name("teacher") == "resnet50"


def test_student_loads_weight_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    from medvlp_lib.models.students import build_student

    ref = timm.create_model("mobilenetv3_large_100", num_classes=1000, in_chans=3)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    m = build_student("mobilenetv3", embed_dim=8, in_chans=1, img_size=64, pretrained=tmp_path / "w.safetensors")
    bb = m.encoder.backbone
    assert torch.allclose(bb.conv_stem.weight[:, 0], ref.conv_stem.weight.sum(1))  # RGB stem summed to 1 channel
    assert torch.equal(bb.blocks[3][0].conv_pw.weight, ref.blocks[3][0].conv_pw.weight)


def test_vlcd_end_to_end_with_real_towers():
    """ResNet-50 DualEncoder teacher (stand-in text tower) -> MobileNetV3 student, one VLCD step."""
    from medvlp_lib.models.students import build_student, build_teacher

    class StandInText(nn.Module):  # TextEncoder contract: list[str] -> [B, out_dim]
        out_dim = 10

        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(13, self.out_dim)

        def forward(self, texts):
            return self.table(torch.tensor([sum(map(ord, t)) % 13 for t in texts]))

    torch.manual_seed(0)
    teacher = build_teacher(text_encoder=StandInText(), embed_dim=8, in_chans=1)
    student = build_student("mobilenetv3", embed_dim=8, in_chans=1, img_size=32)
    method = VLCD(student, teacher, lam=0.1, mu=0.5).train()
    batch = {"image": torch.rand(3, 1, 32, 32), "text": ["no acute findings", "small effusion", "cardiomegaly"]}
    out = method.training_step(batch)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"].detach())) and out["t_norm"] > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert student.proj.net[0].weight.grad is not None
    assert method.encode_image(batch["image"]).shape == (3, 8)
