"""Chapter 06 experiments: VLCD (Vision-Language Contrastive Distillation, arXiv 2506.02229).

The recipe every experiment here shares (:func:`run_variant`):

1. **Teacher** (:func:`get_teacher`): a ResNet-50 image tower + the frozen packaged MiniLM text tower
   (:func:`medvlp_lib.models.students.build_teacher`) trained with CLIP on the embedded benchmark's training
   split. It is trained once per configuration and cached outside the repository
   (``<cache_root>/vlcd/teacher_<hash>.pt``, ``cache_root`` = ``$MEDVLP_CACHE`` or ``~/.cache/medvlp``):
   "load the checkpoint if present, else train". It stays frozen afterwards; its unnormalised image
   embeddings of the training images and of the natural crops are computed once per process and looked up
   by index (``teacher_cache``), which is exact because no augmentation is used.
2. **Predistillation** (optional): the student (random init) mimics the teacher's image embedding on
   unlabeled natural-image crops of scikit-image's photographs (:class:`~medvlp_lib.data.natural.NaturalCrops`),
   ``L_pre = mean(1 - cos(P s, t))`` (:class:`~medvlp_lib.methods.vlcd.Predistill`).
3. **VLCD training** on image-report pairs: ``L = L_t + lam L_gnd + mu L_dist``
   (:class:`~medvlp_lib.methods.vlcd.VLCD`), the text side being the teacher's frozen text tower.
   ``lam = mu = 0`` without predistillation is the "CLIP alone" baseline (the student never sees the
   teacher's image tower).
4. **Evaluation** (the paper's protocol: linear probe on the frozen image encoder, AUC): pooled backbone
   features of a fixed subset of training images -> one logistic regression per finding (five frequent
   findings, the analogue of the paper's five placenta tasks) -> AUC on the clean test split and on the
   same test reports rendered as degraded "phone captures" (:data:`~medvlp_lib.data.DEGRADE_PRESETS`
   ``["phone"]``: blur, JPEG, perspective, glare), the analogue of the paper's iPad images. The probe is
   fitted on clean images only (deployment: trained on clinical images, applied to phone photos).

Experiments: ``vlcd_students`` (teacher vs three students, CLIP-alone vs VLCD), ``vlcd_predistill``
(MobileNetV3 VLCD with vs without predistillation, clean vs phone), ``vlcd_lambda`` (MobileNetV3, lambda in
{0, 0.01, 0.1, 1, 10}, and plain feature distillation L_dist instead of L_gnd). The efficiency claim reads
``results/bench_vlcd.json`` written by ``python -m benchmarks.bench_vlcd``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ExperimentConfig, require
from ..data import DEGRADE_PRESETS, CXRDataset
from ..data.cache import cache_root
from ..data.natural import NaturalCrops
from ..data.reports import LABELS
from ..eval import linear_probe_auc
from ..methods.clip import CLIP
from ..methods.vlcd import VLCD, Predistill, teacher_image_embedding
from ..models.encoders import count_parameters
from ..models.students import build_student, build_teacher
from ..pipeline import load_benchmark
from ..results import ONE_SEED, Comparison, Wording, claim_verdict, fmt, judge, judge_claim
from ..train import fit
from ..utils import seed_everything
from . import claim, claims_of, register

__all__ = ["FINDINGS", "STUDENT_NAMES", "VLCDConfig", "VLCDStudentsConfig", "VLCDPredistillConfig", "VLCDLambdaConfig",
           "teacher_path", "get_teacher", "probe", "teacher_metrics", "predistilled_student", "run_variant",
           "vlcd_students", "vlcd_predistill", "vlcd_lambda", "CLAIMS"]

FINDINGS = ("opacity", "nodule", "cardiomegaly", "device", "atelectasis")
"""The five most frequent findings of the IU X-Ray corpus (besides "normal"): our five probe tasks."""

STUDENT_NAMES = {"mobilenetv3": "MobileNetV3-Large", "efficientnet_b0": "EfficientNet-B0",
                 "efficientformer_l1": "EfficientFormer-L1"}


@dataclass(frozen=True, kw_only=True)
class VLCDConfig(ExperimentConfig):
    """Chapter 06, what every VLCD experiment shares (and what :func:`run_variant` memoises on): the data
    (``image_size``, ``n_train`` / ``n_test``, ``data_seed``; the probe ``findings``, the ``degrade`` preset of the
    phone captures), the teacher (``teacher_steps`` CLIP steps at ``teacher_batch``, ``teacher_lr``), the student
    schedule (``steps`` at ``batch_size``, ``lr``, ``weight_decay``, warm-up), predistillation
    (``predistill_crops`` natural crops, ``predistill_steps``, ``predistill_lr``) and the linear probe (``probe_n``
    training rows, ``None`` = all; ``probe_C``)."""
    image_size: int = 64
    n_train: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    embed_dim: int = 128
    findings: tuple[str, ...] = FINDINGS
    batch_size: int = 32
    steps: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.05
    predistill_crops: int = 512
    predistill_steps: int = 16
    predistill_lr: float = 1e-3
    probe_n: int | None = 768
    probe_C: float = 1.0
    degrade: str = "phone"
    teacher_steps: int = 40
    teacher_batch: int = 64
    teacher_lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("image_size", "n_train", "n_test", "embed_dim", "batch_size", "steps", "lr",
                                "predistill_crops", "predistill_steps", "predistill_lr", "probe_n", "probe_C",
                                "teacher_steps", "teacher_batch", "teacher_lr"),
                non_negative=("data_seed", "weight_decay"), unit=("warmup_frac",), unique=("findings",))
        unknown = [f for f in self.findings if f not in LABELS]
        if unknown or not self.findings:
            raise ValueError(f"{type(self).__name__}.findings must be non-empty names from {LABELS}, got "
                             f"{self.findings!r}")
        if self.degrade not in DEGRADE_PRESETS:
            raise ValueError(f"{type(self).__name__}.degrade must be one of {sorted(DEGRADE_PRESETS)}, got "
                             f"{self.degrade!r}")


def _student_names(cfg, *names):
    """Every student named in the fields ``names`` of ``cfg`` (a name or a tuple of names) is a known one."""
    for name in names:
        value = getattr(cfg, name)
        bad = [s for s in ((value,) if isinstance(value, str) else value) if s not in STUDENT_NAMES]
        if bad:
            raise ValueError(f"{type(cfg).__name__}.{name}: unknown students {bad}; known: {sorted(STUDENT_NAMES)}")


@dataclass(frozen=True, kw_only=True)
class VLCDStudentsConfig(VLCDConfig):
    """``vlcd_students``: VLCD (``L_t + lam L_gnd``, predistilled) for each of ``students``, CLIP alone for each of
    ``clip_students``."""
    students: tuple[str, ...] = tuple(STUDENT_NAMES)
    clip_students: tuple[str, ...] = ("mobilenetv3",)
    lam: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("lam",), unique=("students", "clip_students"))
        _student_names(self, "students", "clip_students")


@dataclass(frozen=True, kw_only=True)
class VLCDPredistillConfig(VLCDConfig):
    """``vlcd_predistill``: ``student`` trained with ``L_t + lam L_gnd`` with and without predistillation."""
    student: str = "mobilenetv3"
    lam: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("lam",))
        _student_names(self, "student")


@dataclass(frozen=True, kw_only=True)
class VLCDLambdaConfig(VLCDConfig):
    """``vlcd_lambda``: ``student`` with ``L_t + lam L_gnd`` for each of ``lams`` and ``L_t + dist_mu L_dist``."""
    student: str = "mobilenetv3"
    lams: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, 10.0)
    dist_mu: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("lams", "dist_mu"), unique=("lams",))
        _student_names(self, "student")


# cpu profile: sized for a 2-core machine shared by several jobs, where one single-threaded process gets a
# fraction of a core: teacher 40 CLIP steps at batch 64, predistillation one pass over 512 natural crops,
# 32 VLCD steps at batch 32 per student (about 1/3 of an epoch). Short: the accuracy claims are tested for
# their direction only; the gpu profile is the paper-like schedule.
_CPU = VLCDConfig(image_size=64, n_train=None, n_test=None, data_seed=0, embed_dim=128, findings=FINDINGS,
                  batch_size=32, steps=32, lr=1e-3, weight_decay=0.1, warmup_frac=0.05, predistill_crops=512,
                  predistill_steps=16, predistill_lr=1e-3, probe_n=768, probe_C=1.0, degrade="phone",
                  teacher_steps=40, teacher_batch=64, teacher_lr=1e-3)
_BASES = {
    "fast": _CPU.replace(n_train=256, n_test=128, teacher_steps=8, teacher_batch=32, steps=8, predistill_crops=128,
                         predistill_steps=6, probe_n=256),
    "cpu": _CPU,
    "gpu": _CPU.replace(image_size=224, teacher_steps=3000, teacher_lr=1e-4, steps=2000, lr=1e-4, batch_size=64,
                        predistill_crops=50000, predistill_steps=5000, probe_n=None),
}


def _profiles(cls, **per_profile):
    """The three base profiles as ``cls`` with ``per_profile`` fields (``{"fast": ..., "cpu": ..., "gpu": ...}`` or
    one value for all)."""
    def pick(v, p):
        return v[p] if isinstance(v, dict) and set(v) == set(_BASES) else v
    return {p: cls.derive(base, **{k: pick(v, p) for k, v in per_profile.items()}) for p, base in _BASES.items()}


def _shared(cfg) -> dict:
    """The fields of ``cfg`` that every VLCD experiment shares (:class:`VLCDConfig`)."""
    return {k: getattr(cfg, k) for k in VLCDConfig.field_names()}


# ----------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------
def _data(cfg):
    train, test = load_benchmark(cfg.image_size, cfg.n_train, cfg.n_test, cfg.data_seed)
    phone = CXRDataset("test", size=cfg.image_size, seed=cfg.data_seed, n=cfg.n_test,
                       degrade=cfg.degrade, progress=False)
    return train, test, phone


def _teacher_key(cfg) -> str:
    keys = ("image_size", "n_train", "data_seed", "embed_dim", "teacher_steps", "teacher_batch", "teacher_lr",
            "weight_decay", "warmup_frac")
    blob = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def teacher_path(cfg) -> Path:
    """Where the teacher of this configuration is cached (outside the repository)."""
    return cache_root() / "vlcd" / f"teacher_{_teacher_key(cfg)}.pt"


_TEACHERS: dict[str, torch.nn.Module] = {}


def get_teacher(cfg, progress: bool = True):
    """The frozen ResNet-50 CLIP teacher: loaded from :func:`teacher_path` if present, else trained (seed 0)
    with :class:`~medvlp_lib.methods.clip.CLIP` for ``teacher_steps`` steps and saved. Kept per process."""

    key = _teacher_key(cfg)
    if key in _TEACHERS:
        return _TEACHERS[key]
    train, test, _ = _data(cfg)
    seed_everything(0)
    teacher = build_teacher(embed_dim=cfg.embed_dim, in_chans=1)
    if teacher.text_encoder.frozen:
        teacher.text_encoder.precompute(train.texts + test.texts)
    path = teacher_path(cfg)
    if path.is_file():
        teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
    else:
        fit(CLIP(teacher), train, batch_size=cfg.teacher_batch, steps=cfg.teacher_steps,
            lr=cfg.teacher_lr, weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac,
            seed=0, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("text_encoder.")}
        torch.save(state, tmp)
        os.replace(tmp, path)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    _TEACHERS[key] = teacher
    return teacher


@torch.no_grad()
def _batched(fn, images, batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        out.append(fn(images[i:i + batch_size]).float().cpu())
    return torch.cat(out)


def _images(ds, idx=None) -> torch.Tensor:
    arr = ds.images if idx is None else ds.images[idx]
    return torch.from_numpy(arr.astype(np.float32) / 255.0)[:, None]


_CACHE: dict[tuple, object] = {}


def _teacher_targets(cfg, teacher):
    """The teacher's unnormalised image embeddings of every training image (index-aligned), cached."""
    key = ("train", _teacher_key(cfg))
    if key not in _CACHE:
        train, _, _ = _data(cfg)
        teacher.eval()
        _CACHE[key] = _batched(lambda x: teacher_image_embedding(teacher, x), _images(train))
    return _CACHE[key]


def _crops(cfg):
    key = ("crops", cfg.predistill_crops, cfg.image_size)
    if key not in _CACHE:
        _CACHE[key] = NaturalCrops(n=cfg.predistill_crops, size=cfg.image_size, seed=0, grayscale=True)
    return _CACHE[key]


def _crop_targets(cfg, teacher):
    key = ("crop_targets", cfg.predistill_crops, cfg.image_size, _teacher_key(cfg))
    if key not in _CACHE:
        crops = _crops(cfg)
        x = torch.stack([crops[i]["image"] for i in range(len(crops))])
        _CACHE[key] = _batched(lambda b: teacher_image_embedding(teacher, b), x)
    return _CACHE[key]


def _probe_index(cfg, n_train: int) -> np.ndarray:
    n = cfg.probe_n
    if n is None or n >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(cfg.data_seed).choice(n_train, size=n, replace=False))


def probe(feature_fn, cfg, seed: int) -> dict:
    """Linear-probe AUC of ``feature_fn`` (images -> pooled features) on the five findings, clean and phone.

    Returns ``{"clean": mean AUC, "phone": mean AUC, "clean_per_label": {...}, "phone_per_label": {...},
    "drop": clean - phone}``.
    """
    train, test, phone = _data(cfg)
    cols = [LABELS.index(f) for f in cfg.findings]
    idx = _probe_index(cfg, len(train))
    ftr = _batched(feature_fn, _images(train, idx))
    out = {}
    for name, ds in (("clean", test), ("phone", phone)):
        fte = _batched(feature_fn, _images(ds))
        res = linear_probe_auc(ftr, train.labels[idx][:, cols], fte, ds.labels[:, cols], fractions=(1.0,),
                               seeds=(seed,), label_names=list(cfg.findings), C=cfg.probe_C)[1.0]
        out[name] = res["mean"]
        out[f"{name}_per_label"] = res["per_label"]
    out["drop"] = out["clean"] - out["phone"]
    return out


def teacher_metrics(cfg, seed: int) -> dict:
    """Probe of the (single, seed-0) teacher. The probe uses all ``probe_n`` training rows and a deterministic
    solver, so its result does not depend on ``seed``: it is computed once per process."""
    teacher = get_teacher(cfg)
    key = ("teacher_probe", _teacher_key(cfg), cfg.probe_n, cfg.probe_C, cfg.n_test)
    if key not in _CACHE:
        teacher.eval()
        _CACHE[key] = probe(teacher.image_encoder, cfg, 0)
    return copy.deepcopy(_CACHE[key])


def _student(cfg, name: str, seed: int):
    seed_everything(seed)
    return build_student(name, embed_dim=cfg.embed_dim, in_chans=1, img_size=cfg.image_size, proj="mlp")


def predistilled_student(cfg, name: str, seed: int, progress: bool = True):
    """A fresh student after predistillation on natural crops (cached per process for reuse across variants).

    Returns ``(student, history)``; the caller gets a deep copy it may train further.
    """
    key = ("pre", name, seed, cfg.predistill_crops, cfg.predistill_steps, cfg.image_size,
           _teacher_key(cfg))
    if key not in _CACHE:
        teacher = get_teacher(cfg)
        student = _student(cfg, name, seed)
        method = Predistill(student, teacher, teacher_cache=_crop_targets(cfg, teacher))
        hist = fit(method, _crops(cfg), batch_size=cfg.batch_size, steps=cfg.predistill_steps,
                   lr=cfg.predistill_lr, weight_decay=cfg.weight_decay,
                   warmup_frac=cfg.warmup_frac, seed=seed, progress=progress)
        _CACHE[key] = (student, [h["cos"] for h in hist])
    student, cos = _CACHE[key]
    return copy.deepcopy(student), list(cos)


def run_variant(cfg, name: str, seed: int, lam: float, mu: float = 0.0, predistill: bool = True,
                use_teacher: bool = True, progress: bool = True) -> dict:
    """Train one student variant and probe it. ``use_teacher=False`` with ``lam = mu = 0`` and no
    predistillation is the CLIP-alone baseline (the teacher's frozen text tower only).

    Results are memoised per process by (the shared :class:`VLCDConfig` fields, arguments): the same variant (e.g.
    MobileNetV3, lambda = 0.1, predistilled, seed 0) appears in several experiments and training is deterministic, so
    experiments run in one process reuse it instead of training it again."""
    shared = json.dumps(_shared(cfg), sort_keys=True, default=str)
    key = ("variant", shared, name, int(seed), float(lam), float(mu), bool(predistill), bool(use_teacher))
    if key not in _CACHE:
        _CACHE[key] = _run_variant(cfg, name, seed, lam, mu, predistill, use_teacher, progress)
    return copy.deepcopy(_CACHE[key])


def _run_variant(cfg, name, seed, lam, mu, predistill, use_teacher, progress) -> dict:

    teacher = get_teacher(cfg)
    train, _, _ = _data(cfg)
    out = {}
    if predistill:
        student, cos = predistilled_student(cfg, name, seed, progress=progress)
        out["predistill_final_cos"] = float(np.mean(cos[-max(1, len(cos) // 5):]))
        out["predistill_cos_curve"] = [float(c) for c in cos]
    else:
        student = _student(cfg, name, seed)
    distil = use_teacher and (lam > 0 or mu > 0)
    method = VLCD(student, teacher=teacher, lam=lam, mu=mu,
                  teacher_cache=_teacher_targets(cfg, teacher) if distil else None)
    hist = fit(method, train, batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr,
               weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac, seed=seed,
               progress=progress)
    tail = hist[-max(1, len(hist) // 5):]
    out["final_l_t"] = float(np.mean([h["l_t"] for h in tail]))
    out["loss_curve"] = [float(h["loss"]) for h in hist]  # lists are kept per seed, not summarised
    out["l_t_curve"] = [float(h["l_t"]) for h in hist]
    if lam > 0:
        out["final_l_gnd"] = float(np.mean([h["l_gnd"] for h in tail]))
    student.eval()
    out.update(probe(student.image_features, cfg, seed))
    return out


# ----------------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------------
# cpu budget (~20 CPU-minutes for 3 seeds on one shared core): the CLIP-alone baseline is trained for
# MobileNetV3 only; the gpu profile trains it for every student.
_STUDENTS_PROFILES = _profiles(VLCDStudentsConfig, students={"fast": ("mobilenetv3",), "cpu": tuple(STUDENT_NAMES),
                                         "gpu": tuple(STUDENT_NAMES)},
                               clip_students={"fast": ("mobilenetv3",), "cpu": ("mobilenetv3",),
                                              "gpu": tuple(STUDENT_NAMES)}, lam=0.1)


@register("vlcd_students", _STUDENTS_PROFILES,
          description="VLCD chapter 06: ResNet-50 teacher vs three students (CLIP alone vs VLCD)")
def vlcd_students(cfg: VLCDStudentsConfig, seed: int) -> dict:
    """Teacher and, per student, ``vlcd`` (predistillation + L_t + lam L_gnd) and, for the students in
    ``clip_students``, ``clip`` (CLIP alone: L_t, no teacher, no predistillation); linear-probe AUC on clean
    and phone images. The teacher is one trained model (seed 0); its per-seed numbers differ only by the
    probe's seed."""
    out = {"teacher": teacher_metrics(cfg, seed)}
    out["teacher"]["params"] = count_parameters(get_teacher(cfg).image_encoder)
    for name in cfg.students:
        out[name] = {}
        if name in cfg.clip_students:
            out[name]["clip"] = run_variant(cfg, name, seed, lam=0.0, predistill=False, use_teacher=False)
        out[name]["vlcd"] = run_variant(cfg, name, seed, lam=cfg.lam, predistill=True)
        out[name]["params"] = count_parameters(_student(cfg, name, seed).encoder)
    return out


@register("vlcd_predistill", _profiles(VLCDPredistillConfig, student="mobilenetv3", lam=0.1),
          seeds={"cpu": (0, 1, 2, 3, 4)},
          description="VLCD chapter 06: MobileNetV3 VLCD with vs without predistillation, clean vs phone images")
def vlcd_predistill(cfg: VLCDPredistillConfig, seed: int) -> dict:
    name = cfg.student
    return {"pre": run_variant(cfg, name, seed, lam=cfg.lam, predistill=True),
            "nopre": run_variant(cfg, name, seed, lam=cfg.lam, predistill=False)}


@register("vlcd_lambda", _profiles(VLCDLambdaConfig, student="mobilenetv3", dist_mu=1.0,
                                   lams={"fast": (0.0, 0.1), "cpu": (0.0, 0.01, 0.1, 1.0, 10.0),
                                         "gpu": (0.0, 0.01, 0.1, 1.0, 10.0)}),
          description="VLCD chapter 06: lambda sweep and L_gnd vs plain feature distillation (MobileNetV3)")
def vlcd_lambda(cfg: VLCDLambdaConfig, seed: int) -> dict:
    """MobileNetV3 with predistillation, ``L_t + lam L_gnd`` for each lambda, and ``L_t + mu L_dist``
    (cosine feature distillation to the teacher's image embedding, no L_gnd) as the plain-KD alternative."""
    name = cfg.student
    out = {f"lam{lam:g}": run_variant(cfg, name, seed, lam=lam, predistill=True) for lam in cfg.lams}
    out["dist"] = run_variant(cfg, name, seed, lam=0.0, mu=cfg.dist_mu, predistill=True)
    return out


# ----------------------------------------------------------------------------------------------------
# Claims
# ----------------------------------------------------------------------------------------------------
MATCH_MARGIN = 0.02
"""Non-inferiority margin of "students match the teacher" (2 AUC points), pre-registered before the re-run."""


@claim("vlcd-match-teacher", paper="VLCD", chapter="06", claim="students match or beat the teacher's AUC",
       paper_value="5 placenta tasks", result="vlcd_students")
def _claim_match_teacher(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    teacher = s["teacher/clean"]
    students = [n for n in STUDENT_NAMES if f"{n}/vlcd/clean" in s]
    ours = (f"probe AUC (5 findings): teacher {fmt(teacher)}; VLCD students "
            + ", ".join(f"{STUDENT_NAMES[n]} {fmt(s[f'{n}/vlcd/clean'])}" for n in students)
            + f" (n={teacher['n']} seeds, profile {rec['profile']})")
    # the claim: no student is worse than the teacher by more than the pre-registered margin (non-inferiority);
    # "beats it" is reported, not required
    matches = {n: judge(Comparison(s[f"{n}/vlcd/clean"], teacher, kind="non-inferiority", margin=MATCH_MARGIN))
               for n in students}
    worse = [STUDENT_NAMES[n] for n, j in matches.items() if j.opposes]
    better = [STUDENT_NAMES[n] for n in students if judge(Comparison(s[f"{n}/vlcd/clean"], teacher)).supports]
    verdict = claim_verdict(matches.values())
    if verdict == "pending":
        return ours, verdict, ONE_SEED
    if verdict == "reproduced":
        extra = f"; {', '.join(better)} beat it beyond noise" if better else ""
        return ours, verdict, (f"Every VLCD student is within {MATCH_MARGIN * 100:.0f} AUC points of the ResNet-50 "
                               f"teacher or better (one-sided 95 % bound){extra}.")
    if worse:
        return ours, verdict, (f"{', '.join(worse)} {'is' if len(worse) == 1 else 'are'} below the teacher by more "
                               f"than {MATCH_MARGIN * 100:.0f} AUC points beyond noise{extra}.")
    return ours, verdict, (f"At least one student's one-sided 95 % bound does not clear the {MATCH_MARGIN * 100:.0f}-point "
                           f"margin{extra}.")


@claim("vlcd-efficiency", paper="VLCD", chapter="06", claim="students are 1.7-4x faster with 25-50 % of the parameters",
       paper_value="1.7-4x, 25-50 %", result="bench_vlcd")
def _claim_efficiency(rec: dict) -> tuple[str, str, str]:
    """A measured threshold (speed-up and parameter fraction of every student), not a comparison over seeds."""
    rows = rec["rows"]
    size = max(r["size"] for r in rows)
    sel = [r for r in rows if r["size"] == size and r["timm_name"] != "resnet50"]
    by_model: dict[str, dict] = {}
    for r in sel:
        d = by_model.setdefault(r["model"], {"frac": r["param_fraction_vs_teacher"], "speed": []})
        d["speed"].append(r["speedup_vs_teacher"])
    desc = "; ".join(f"{m} {100 * d['frac']:.0f} % params, {min(d['speed']):.1f}-{max(d['speed']):.1f}x"
                     for m, d in by_model.items())
    load = rec.get("loadavg_before", [float("nan")])[0]
    ours = f"{desc} ({size} px, batches {rec.get('batches')}, {rec.get('threads')} thread, loadavg {load:.1f})"
    fast = all(min(d["speed"]) >= 1.7 for d in by_model.values())
    small = all(d["frac"] <= 0.5 for d in by_model.values())
    if fast and small:
        top = max(by_model, key=lambda m: max(by_model[m]["speed"]))
        return ours, "reproduced", (f"Every student is at least 1.7x faster than ResNet-50 on one CPU thread with at "
                                    f"most half its parameters (up to {max(by_model[top]['speed']):.1f}x for {top}).")
    return ours, "contradicted", ("Not every student is >= 1.7x faster with <= 50 % of the teacher's parameters "
                                    "in our measurement (see the efficiency table).")


_PREDISTILL = Wording(
    reproduced="Predistillation raises AUC on degraded phone captures by {d:.1f} points (> 2 standard errors, "
               "{se:.1f}).",
    not_reproduced="The phone-image difference ({d:+.1f} points, standard error {se:.1f}) is not above seed noise.")


@claim("vlcd-predistill", paper="VLCD", chapter="06", claim="predistillation improves robustness on low-quality images",
       paper_value="iPad images", result="vlcd_predistill")
def _claim_predistill(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    pre, nopre = s["pre/phone"], s["nopre/phone"]
    ours = (f"phone-image probe AUC {fmt(pre)} with vs {fmt(nopre)} without predistillation; clean "
            f"{fmt(s['pre/clean'])} vs {fmt(s['nopre/clean'])} (MobileNetV3, n={pre['n']} seeds, "
            f"profile {rec['profile']})")
    return judge_claim(ours, [Comparison(pre, nopre)], _PREDISTILL)


@claim("vlcd-lambda", paper="VLCD", chapter="06", claim="lambda = 0.1 is the best setting", paper_value="sweep 0.01-10",
       result="vlcd_lambda")
def _claim_lambda(rec: dict) -> tuple[str, str, str]:
    s = rec["summary"]
    lams = sorted(float(lam) for lam in rec["config"]["lams"] if f"lam{float(lam):g}/clean" in s)
    entries = {lam: s[f"lam{lam:g}/clean"] for lam in lams}
    best = max(entries, key=lambda k: entries[k]["mean"])
    ours = ("probe AUC " + ", ".join(f"lambda={lam:g}: {fmt(e)}" for lam, e in entries.items()) +
            f" (MobileNetV3, n={entries[best]['n']} seeds, profile {rec['profile']})")
    if 0.1 not in entries or len(entries) < 2:
        return ours, "not testable here", "lambda = 0.1 was not in the sweep, or nothing else was."
    # the claim: lambda = 0.1 beats every other setting
    judgements = {lam: judge(Comparison(entries[0.1], e)) for lam, e in entries.items() if lam != 0.1}
    verdict = claim_verdict(judgements.values())
    beaten = [lam for lam, j in judgements.items() if j.opposes]
    if beaten:
        return ours, verdict, (f"lambda = {', '.join(f'{b:g}' for b in beaten)} "
                               f"{'beats' if len(beaten) == 1 else 'beat'} lambda = 0.1 beyond "
                               "2 standard errors.")
    if verdict == "reproduced":
        return ours, verdict, "lambda = 0.1 beats every other setting by more than 2 standard errors."
    return ours, verdict, (f"No setting beats lambda = 0.1 beyond noise, but 0.1 is not better than all others either "
                           f"(best mean: lambda = {best:g}); the sweep is flat within seed noise at our scale.")


CLAIMS = claims_of(__name__)
