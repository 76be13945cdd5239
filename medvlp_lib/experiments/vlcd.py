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
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import ExperimentConfig, require, weights_field
from ..data import DEGRADE_PRESETS, CXRDataset
from ..data.cache import cache_root
from ..data.natural import ImageFolderCrops, NaturalCrops
from ..data.real.placenta import PLACENTA_LABELS, PlacentaDataset
from ..data.reports import LABELS
from ..eval import linear_probe_auc
from ..methods.clip import CLIP
from ..methods.vlcd import VLCD, Predistill, teacher_image_embedding
from ..models.encoders import count_parameters
from ..models.students import STUDENTS, TEACHER, build_student, build_teacher
from ..pipeline import SplitView, load_benchmark
from ..results import ONE_SEED, ClaimResult, Comparison, Wording, claim_verdict, fmt, judge, judge_claim
from ..utils import safe_torch_load, seed_everything
from . import claim, claims_of, current_run, fit_run, register

__all__ = ["FINDINGS", "STUDENT_NAMES", "VLCDConfig", "VLCDStudentsConfig", "VLCDPredistillConfig", "VLCDLambdaConfig",
           "teacher_path", "get_teacher", "probe", "teacher_metrics", "predistilled_student", "run_variant",
           "vlcd_students", "vlcd_predistill", "vlcd_lambda", "CLAIMS", "PAPER_EFFECTS", "MATCH_MARGIN"]

FINDINGS = ("opacity", "nodule", "cardiomegaly", "device", "atelectasis")
"""The five most frequent findings of the IU X-Ray corpus (besides "normal"): our five probe tasks (embedded data;
``data="real"`` probes the five placenta tasks :data:`~medvlp_lib.data.real.placenta.PLACENTA_LABELS`)."""

STUDENT_NAMES = {"mobilenetv3": "MobileNetV3-Large", "efficientnet_b0": "EfficientNet-B0",
                 "efficientformer_l1": "EfficientFormer-L1"}


@dataclass(frozen=True, kw_only=True)
class VLCDConfig(ExperimentConfig):
    """Chapter 06, what every VLCD experiment shares (and what :func:`run_variant` memoises on): the data
    (``data``: ``"embedded"`` = the rendered chest films + IU X-Ray reports, natural crops of scikit-image's
    photographs for predistillation; ``"real"`` = the PlacentaCLIP photo folder + report table and an ImageNet-style
    folder under ``MEDVLP_DATA``; ``image_size``, ``n_train`` / ``n_test``, ``data_seed``; the probe ``findings``,
    the ``degrade`` preset of the phone captures, ``probe_test_frac`` of the labelled placenta studies held out for
    the probe's test side), the teacher (``teacher_steps`` CLIP steps at ``teacher_batch``, ``teacher_lr``;
    ``teacher_weights``: the timm ImageNet weights it starts from, ``None`` = random init), the students
    (``student_weights``: timm names of the students that start from ImageNet weights), the student schedule
    (``steps`` at ``batch_size``, ``lr``, ``weight_decay``, warm-up), predistillation (``predistill_crops`` crops,
    ``predistill_steps``, ``predistill_lr``) and the linear probe (``probe_n`` training rows, ``None`` = all;
    ``probe_C``)."""
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
    probe_test_frac: float = 0.5
    degrade: str = "phone"
    teacher_steps: int = 40
    teacher_batch: int = 64
    teacher_lr: float = 1e-3
    teacher_weights: str | None = weights_field(None, source="timm")
    student_weights: tuple[str, ...] = weights_field((), source="timm")

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("image_size", "n_train", "n_test", "embed_dim", "batch_size", "steps", "lr",
                                "predistill_crops", "predistill_steps", "predistill_lr", "probe_n", "probe_C",
                                "teacher_steps", "teacher_batch", "teacher_lr"),
                non_negative=("data_seed", "weight_decay"), unit=("warmup_frac", "probe_test_frac"),
                unique=("findings", "student_weights"))
        known = LABELS if self.data == "embedded" else PLACENTA_LABELS
        unknown = [f for f in self.findings if f not in known]
        if unknown or not self.findings:
            raise ValueError(f"{type(self).__name__}.findings must be non-empty names from {known} (data="
                             f"{self.data!r}), got {self.findings!r}")
        if self.degrade not in DEGRADE_PRESETS:
            raise ValueError(f"{type(self).__name__}.degrade must be one of {sorted(DEGRADE_PRESETS)}, got "
                             f"{self.degrade!r}")
        if self.teacher_weights not in (None, TEACHER):
            raise ValueError(f"{type(self).__name__}.teacher_weights must be None or {TEACHER!r} (the teacher is a "
                             f"ResNet-50), got {self.teacher_weights!r}")
        bad = [w for w in self.student_weights if w not in STUDENTS.values()]
        if bad:
            raise ValueError(f"{type(self).__name__}.student_weights: unknown timm names {bad}; the students are "
                             f"{sorted(STUDENTS.values())}")

    def smoke(self) -> "VLCDConfig":
        """The same data source, loaders and model classes (teacher ResNet-50, every student), randomly
        initialised (no weights are read), at 64 px with two steps per stage and a tiny embedding."""
        return self.replace(image_size=64, n_train=None, n_test=None, embed_dim=32, batch_size=4, steps=2,
                            predistill_crops=8, predistill_steps=2, probe_n=None, teacher_steps=2, teacher_batch=4,
                            teacher_weights=None, student_weights=(), num_workers=0)


def _student_names(cfg, *names):
    """Every student named in the fields ``names`` of ``cfg`` (a name or a tuple of names) is a known one."""
    for name in names:
        value = getattr(cfg, name)
        bad = [s for s in ((value,) if isinstance(value, str) else value) if s not in STUDENT_NAMES]
        if bad:
            raise ValueError(f"{type(cfg).__name__}.{name}: unknown students {bad}; known: {sorted(STUDENT_NAMES)}")


@dataclass(frozen=True, kw_only=True)
class VLCDStudentsConfig(VLCDConfig):
    """``vlcd_students``: VLCD (``L_t + lam L_gnd``, predistilled) for each of ``students``, the student trained
    alone (CLIP alone: ``L_t`` only, same schedule and seed) for each of ``clip_students`` (every student by
    default)."""
    students: tuple[str, ...] = tuple(STUDENT_NAMES)
    clip_students: tuple[str, ...] = tuple(STUDENT_NAMES)
    lam: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("lam",), unique=("students", "clip_students"))
        _student_names(self, "students", "clip_students")


@dataclass(frozen=True, kw_only=True)
class VLCDPredistillConfig(VLCDConfig):
    """``vlcd_predistill``: ``student`` trained with ``L_t + lam L_gnd`` with and without predistillation, and
    alone."""
    student: str = "mobilenetv3"
    lam: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("lam",))
        _student_names(self, "student")


@dataclass(frozen=True, kw_only=True)
class VLCDLambdaConfig(VLCDConfig):
    """``vlcd_lambda``: ``student`` with ``L_t + lam L_gnd`` for each of ``lams``, ``L_t + dist_mu L_dist``, and
    alone."""
    student: str = "mobilenetv3"
    lams: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, 10.0)
    dist_mu: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        require(self, non_negative=("lams", "dist_mu"), unique=("lams",))
        _student_names(self, "student")

    def smoke(self) -> "VLCDLambdaConfig":
        """The smoke run of :class:`VLCDConfig` with two values of ``lam`` (0 and one > 0: both code paths)."""
        return super().smoke().replace(lams=(0.0, 0.1))


# cpu profile: sized for this 2-core machine shared by several jobs (``--jobs 2``: one single-threaded process per
# seed): teacher 40 CLIP steps at batch 64, predistillation 16 steps over 512 natural crops, 32 VLCD steps at
# batch 32 per student (about 1/3 of an epoch). Short: the accuracy claims are tested for their direction; the
# gpu profile is the paper's setting: placenta photographs + reports, ImageNet predistillation, ImageNet-initialised
# ResNet-50 teacher and students, 224 px.
_CPU = VLCDConfig(image_size=64, n_train=None, n_test=None, data_seed=0, embed_dim=128, findings=FINDINGS,
                  batch_size=32, steps=32, lr=1e-3, weight_decay=0.1, warmup_frac=0.05, predistill_crops=512,
                  predistill_steps=16, predistill_lr=1e-3, probe_n=768, probe_C=1.0, degrade="phone",
                  teacher_steps=40, teacher_batch=64, teacher_lr=1e-3)
_BASES = {
    "fast": _CPU.replace(n_train=256, n_test=128, teacher_steps=8, teacher_batch=32, steps=8, predistill_crops=128,
                         predistill_steps=6, probe_n=256),
    "cpu": _CPU,
    "gpu": _CPU.replace(data="real", findings=PLACENTA_LABELS, image_size=224, teacher_steps=3000, teacher_lr=1e-4,
                        steps=2000, lr=1e-4, batch_size=64, predistill_crops=50000, predistill_steps=5000,
                        probe_n=None, teacher_weights=TEACHER, student_weights=tuple(STUDENTS.values()),
                        num_workers=8),
}
_SEEDS = {"cpu": (0, 1, 2, 3, 4), "gpu": (0, 1, 2, 3, 4)}


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
_CACHE: dict[tuple, object] = {}


def _chans(cfg) -> int:
    """Input channels: grayscale films (embedded) or RGB photographs (real)."""
    return 3 if cfg.data == "real" else 1


class _PhoneView:
    """The rows of a photograph dataset as degraded "phone captures" (``data="real"``): blur, glare and JPEG
    re-compression of :data:`~medvlp_lib.data.DEGRADE_PRESETS` applied to each RGB photograph, seeded by
    ``(seed, row)`` (the film renderer's perspective warp is not applied to photographs)."""

    def __init__(self, base, degrade: str, seed: int):
        self.base, self.d, self.seed = base, DEGRADE_PRESETS[degrade], int(seed)
        self.labels, self.label_names = base.labels, base.label_names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        import io

        from PIL import Image
        from scipy.ndimage import gaussian_filter

        item = dict(self.base[i])
        x = item["image"].numpy().transpose(1, 2, 0).astype(np.float64)   # H, W, C in [0, 1]
        h, w = x.shape[:2]
        rng = np.random.default_rng([self.seed, int(i)])
        if self.d.blur > 0:
            sig = self.d.blur * w / 128
            x = gaussian_filter(x, sigma=(sig, sig, 0), mode="nearest", truncate=3.0)
        if self.d.glare > 0:
            yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
            gx, gy, gr = rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.7), rng.uniform(0.25, 0.5)
            x = x + (self.d.glare * rng.uniform(0.6, 1.0)
                     * np.exp(-(((xx - gx) / (1.6 * gr)) ** 2 + ((yy - gy) / gr) ** 2)))[..., None]
        x = np.clip(x, 0, 1)
        if self.d.jpeg_quality is not None:
            arr = np.round(x * 255).astype(np.uint8)
            img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=int(self.d.jpeg_quality))
            buf.seek(0)
            x = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
            x = x[..., None] if x.ndim == 2 else x
        item["image"] = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))
        return item


def _data(cfg) -> SimpleNamespace:
    """``pairs`` (the image-report pairs the teacher and students train on, ``index`` = row), ``probe_train`` /
    ``probe_test`` (the linear probe's labelled rows) and ``phone`` (``probe_test`` as degraded captures).

    ``data="embedded"``: the benchmark's train split (pairs; ``probe_n`` rows of it for the probe) and test split,
    the phone captures rendered with ``degrade``. ``data="real"``: the PlacentaCLIP folder under ``MEDVLP_DATA``
    (:class:`~medvlp_lib.data.real.placenta.PlacentaDataset`): ``"pretrain"`` studies are the pairs (``n_train``: a
    seeded subset), the labelled ``"test"`` studies are split ``probe_test_frac`` / rest by ``data_seed`` into the
    probe's test and training rows (the paper's five tasks, linear probe on the frozen encoder)."""
    key = ("data", cfg.data, cfg.image_size, cfg.n_train, cfg.n_test, cfg.data_seed, cfg.probe_n,
           cfg.probe_test_frac, cfg.degrade)
    if key in _CACHE:
        return _CACHE[key]
    if cfg.data == "embedded":
        train, test = load_benchmark(cfg.image_size, cfg.n_train, cfg.n_test, cfg.data_seed)
        phone = CXRDataset("test", size=cfg.image_size, seed=cfg.data_seed, n=cfg.n_test, degrade=cfg.degrade,
                           progress=False)
        out = SimpleNamespace(pairs=train, probe_train=SplitView(train, _probe_index(cfg, len(train))),
                              probe_test=test, phone=phone, texts=list(train.texts) + list(test.texts))
    else:
        size = (cfg.image_size, cfg.image_size)
        pairs = PlacentaDataset(split="pretrain", size=size)
        if cfg.n_train is not None and cfg.n_train < len(pairs):
            rows = np.random.default_rng(cfg.data_seed).choice(len(pairs), size=cfg.n_train, replace=False)
            pairs = SplitView(pairs, np.sort(rows))
        labelled = PlacentaDataset(split="test", size=size)
        order = np.random.default_rng(cfg.data_seed).permutation(len(labelled))
        n_test = min(len(labelled) - 1, max(1, int(round(cfg.probe_test_frac * len(labelled)))))
        if cfg.n_test is not None:
            n_test = min(n_test, cfg.n_test)
        train_rows = np.sort(order[n_test:])
        if cfg.probe_n is not None and cfg.probe_n < len(train_rows):
            train_rows = np.sort(np.random.default_rng(cfg.data_seed).choice(train_rows, cfg.probe_n, replace=False))
        probe_test = SplitView(labelled, np.sort(order[:n_test]))
        out = SimpleNamespace(pairs=pairs, probe_train=SplitView(labelled, train_rows), probe_test=probe_test,
                              phone=_PhoneView(probe_test, cfg.degrade, cfg.data_seed), texts=list(pairs.texts))
    _CACHE[key] = out
    return out


def _teacher_key(cfg) -> str:
    keys = ("data", "image_size", "n_train", "data_seed", "embed_dim", "teacher_steps", "teacher_batch", "teacher_lr",
            "weight_decay", "warmup_frac", "teacher_weights")
    blob = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def teacher_path(cfg) -> Path:
    """Where the teacher of this configuration is cached (outside the repository)."""
    return cache_root() / "vlcd" / f"teacher_{_teacher_key(cfg)}.pt"


_TEACHERS: dict[str, torch.nn.Module] = {}


def _load_teacher(teacher, path: Path) -> None:
    """Load a cached teacher: tensors only (:func:`~medvlp_lib.utils.safe_torch_load`, never a pickle that runs
    code) and exactly the keys of this teacher's image tower and heads (the packaged frozen text tower is not
    saved); anything else is an error naming the file."""
    state = safe_torch_load(path, "cached VLCD teacher")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"cached VLCD teacher {path} is not a state dict of tensors; delete it to retrain")
    expected = {k for k in teacher.state_dict() if not k.startswith("text_encoder.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"cached VLCD teacher {path} does not fit this teacher (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}); delete it to retrain")
    teacher.load_state_dict(state, strict=False)   # strict on the checked keys; the text tower stays as built


def get_teacher(cfg, progress: bool = True):
    """The frozen ResNet-50 CLIP teacher: loaded from :func:`teacher_path` if present, else trained (seed 0)
    with :class:`~medvlp_lib.methods.clip.CLIP` for ``teacher_steps`` steps on the pairs (through
    :func:`~medvlp_lib.experiments.fit_run`, tag ``"teacher"``) from ``teacher_weights`` and saved. Kept per
    process."""
    key = _teacher_key(cfg)
    if key in _TEACHERS:
        return _TEACHERS[key]
    d = _data(cfg)
    seed_everything(0)
    teacher = build_teacher(embed_dim=cfg.embed_dim, in_chans=_chans(cfg), pretrained=bool(cfg.teacher_weights))
    if teacher.text_encoder.frozen:
        teacher.text_encoder.precompute(d.texts, progress=False)
    path = teacher_path(cfg)
    if path.is_file():
        _load_teacher(teacher, path)
    else:
        fit_run(CLIP(teacher), d.pairs, tag="teacher", cfg=cfg, batch_size=cfg.teacher_batch,
                steps=cfg.teacher_steps, lr=cfg.teacher_lr, weight_decay=cfg.weight_decay,
                warmup_frac=cfg.warmup_frac, seed=0, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        state = {k: v.detach().cpu() for k, v in teacher.state_dict().items() if not k.startswith("text_encoder.")}
        torch.save(state, tmp)
        os.replace(tmp, path)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    _TEACHERS[key] = teacher
    return teacher


def _device_of(module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _stack_images(items) -> torch.Tensor:
    return torch.stack([it["image"] for it in items])


@torch.no_grad()
def _features(fn, ds, cfg, device, batch_size: int = 256) -> torch.Tensor:
    """``fn`` (images -> features) over every row of ``ds`` in order, on ``device``, returned on the CPU. The
    rendered films (a dataset, or rows of one, holding ``images`` in memory) are sliced directly; any other
    dataset is read through a DataLoader with ``cfg.num_workers``."""
    out = []
    base, rows = getattr(ds, "base", ds), getattr(ds, "rows", None)
    if isinstance(getattr(base, "images", None), np.ndarray):
        idx = np.arange(len(base)) if rows is None else np.asarray(rows)
        for i in range(0, len(idx), batch_size):
            x = torch.from_numpy(base.images[idx[i:i + batch_size]].astype(np.float32) / 255.0)[:, None]
            out.append(fn(x.to(device)).float().cpu())
    else:
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers,
                            collate_fn=_stack_images)
        for x in loader:
            out.append(fn(x.to(device)).float().cpu())
    return torch.cat(out)


def _teacher_targets(cfg, teacher):
    """The teacher's unnormalised image embeddings of every training pair (index-aligned), cached."""
    key = ("train", _teacher_key(cfg))
    if key not in _CACHE:
        teacher.eval()
        _CACHE[key] = _features(lambda x: teacher_image_embedding(teacher, x), _data(cfg).pairs, cfg,
                                _device_of(teacher))
    return _CACHE[key]


def _crops(cfg):
    """Predistillation images: crops of scikit-image's photographs (embedded, grayscale) or of the ImageNet-style
    folder ``$MEDVLP_DATA/imagenet/train`` (real, RGB; :class:`~medvlp_lib.data.natural.ImageFolderCrops`)."""
    key = ("crops", cfg.data, cfg.predistill_crops, cfg.image_size)
    if key not in _CACHE:
        if cfg.data == "real":
            _CACHE[key] = ImageFolderCrops(size=cfg.image_size, seed=0, grayscale=False, n=cfg.predistill_crops)
        else:
            _CACHE[key] = NaturalCrops(n=cfg.predistill_crops, size=cfg.image_size, seed=0, grayscale=True)
    return _CACHE[key]


def _crop_targets(cfg, teacher):
    key = ("crop_targets", cfg.data, cfg.predistill_crops, cfg.image_size, _teacher_key(cfg))
    if key not in _CACHE:
        _CACHE[key] = _features(lambda b: teacher_image_embedding(teacher, b), _crops(cfg), cfg, _device_of(teacher))
    return _CACHE[key]


def _probe_index(cfg, n_train: int) -> np.ndarray:
    n = cfg.probe_n
    if n is None or n >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(cfg.data_seed).choice(n_train, size=n, replace=False))


def _labels(ds, cfg) -> np.ndarray:
    names = list(ds.label_names)
    return np.asarray(ds.labels, dtype=np.float32)[:, [names.index(f) for f in cfg.findings]]


def _probe_auc(ftr, ytr, fte, yte, cfg, seed: int) -> dict:
    """Linear-probe AUC per finding on the rows where it is known (placenta labels may be blank = NaN); a finding
    with one class on either side is skipped; ``mean`` over the rest (NaN if none)."""
    per_label = {}
    for j, name in enumerate(cfg.findings):
        mtr, mte = np.isfinite(ytr[:, j]), np.isfinite(yte[:, j])
        a, b = ytr[mtr, j], yte[mte, j]
        if len(np.unique(a)) < 2 or len(np.unique(b)) < 2:
            continue
        res = linear_probe_auc(ftr[torch.from_numpy(mtr)], a[:, None], fte[torch.from_numpy(mte)], b[:, None],
                               fractions=(1.0,), seeds=(seed,), label_names=[name], C=cfg.probe_C)[1.0]
        per_label.update(res["per_label"])
    return {"mean": float(np.mean(list(per_label.values()))) if per_label else float("nan"), "per_label": per_label}


def probe(feature_fn, cfg, seed: int, device=None) -> dict:
    """Linear-probe AUC of ``feature_fn`` (images -> pooled features) on the five findings, clean and phone.

    Returns ``{"clean": mean AUC, "phone": mean AUC, "clean_per_label": {...}, "phone_per_label": {...},
    "drop": clean - phone}``.
    """
    d = _data(cfg)
    device = device or torch.device("cpu")
    ftr = _features(feature_fn, d.probe_train, cfg, device)
    ytr = _labels(d.probe_train, cfg)
    out = {}
    for name, ds in (("clean", d.probe_test), ("phone", d.phone)):
        res = _probe_auc(ftr, ytr, _features(feature_fn, ds, cfg, device), _labels(ds, cfg), cfg, seed)
        out[name] = res["mean"]
        out[f"{name}_per_label"] = res["per_label"]
    out["drop"] = out["clean"] - out["phone"]
    return out


def teacher_metrics(cfg, seed: int) -> dict:
    """Probe of the (single, seed-0) teacher. The probe uses all ``probe_n`` training rows and a deterministic
    solver, so its result does not depend on ``seed``: it is computed once per process."""
    teacher = get_teacher(cfg)
    key = ("teacher_probe", _teacher_key(cfg), cfg.probe_n, cfg.probe_C, cfg.n_test, cfg.findings,
           cfg.probe_test_frac)
    if key not in _CACHE:
        teacher.eval()
        _CACHE[key] = probe(teacher.image_encoder, cfg, 0, _device_of(teacher))
    return copy.deepcopy(_CACHE[key])


def _student(cfg, name: str, seed: int):
    seed_everything(seed)
    return build_student(name, embed_dim=cfg.embed_dim, in_chans=_chans(cfg), img_size=cfg.image_size, proj="mlp",
                         pretrained=STUDENTS[name] in cfg.student_weights)


def _run_key() -> tuple:
    """What a memoised training result must also match: nothing for plain runs; the run folder, experiment, seed
    and resume flag when the run checkpoints (so a resumed run really resumes through the trainer)."""
    run = current_run()
    return () if run.run_dir is None else (str(run.run_dir), run.name, run.seed, run.resume)


def predistilled_student(cfg, name: str, seed: int, progress: bool = True):
    """A fresh student after predistillation on natural crops (cached per process for reuse across variants),
    trained through :func:`~medvlp_lib.experiments.fit_run` with tag ``"<name>/predistill"``.

    Returns ``(student, history)``; the caller gets a deep copy it may train further.
    """
    key = ("pre", name, seed, cfg.data, cfg.predistill_crops, cfg.predistill_steps, cfg.predistill_lr,
           cfg.image_size, cfg.student_weights, _teacher_key(cfg), _run_key())
    if key not in _CACHE:
        teacher = get_teacher(cfg)
        student = _student(cfg, name, seed)
        method = Predistill(student, teacher, teacher_cache=_crop_targets(cfg, teacher))
        hist = fit_run(method, _crops(cfg), tag=f"{name}/predistill", cfg=cfg, batch_size=cfg.batch_size,
                       steps=cfg.predistill_steps, lr=cfg.predistill_lr, weight_decay=cfg.weight_decay,
                       warmup_frac=cfg.warmup_frac, seed=seed, progress=progress)
        _CACHE[key] = (student, [h["cos"] for h in hist])
    student, cos = _CACHE[key]
    return copy.deepcopy(student), list(cos)


def _variant_tag(name, lam, mu, predistill, use_teacher) -> str:
    if not use_teacher and not predistill and lam == 0 and mu == 0:
        return f"{name}/alone"
    return f"{name}/{'pre' if predistill else 'scratch'}_lam{lam:g}_mu{mu:g}{'' if use_teacher else '_noteacher'}"


def run_variant(cfg, name: str, seed: int, lam: float, mu: float = 0.0, predistill: bool = True,
                use_teacher: bool = True, progress: bool = True) -> dict:
    """Train one student variant and probe it. ``use_teacher=False`` with ``lam = mu = 0`` and no
    predistillation is the student trained alone (CLIP alone: the teacher's frozen text tower only).

    Results are memoised per process by (the shared :class:`VLCDConfig` fields, arguments): the same variant (e.g.
    MobileNetV3, lambda = 0.1, predistilled, seed 0) appears in several experiments and training is deterministic, so
    experiments run in one process reuse it instead of training it again (not across run folders: a checkpointed
    run trains, or resumes, each of its own models)."""
    shared = json.dumps(_shared(cfg), sort_keys=True, default=str)
    key = ("variant", shared, name, int(seed), float(lam), float(mu), bool(predistill), bool(use_teacher), _run_key())
    if key not in _CACHE:
        _CACHE[key] = _run_variant(cfg, name, seed, lam, mu, predistill, use_teacher, progress)
    return copy.deepcopy(_CACHE[key])


def _run_variant(cfg, name, seed, lam, mu, predistill, use_teacher, progress) -> dict:
    teacher = get_teacher(cfg)
    pairs = _data(cfg).pairs
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
    hist = fit_run(method, pairs, tag=_variant_tag(name, lam, mu, predistill, use_teacher), cfg=cfg,
                   batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                   warmup_frac=cfg.warmup_frac, seed=seed, progress=progress)
    tail = hist[-max(1, len(hist) // 5):]
    out["final_l_t"] = float(np.mean([h["l_t"] for h in tail]))
    out["loss_curve"] = [float(h["loss"]) for h in hist]  # lists are kept per seed, not summarised
    out["l_t_curve"] = [float(h["l_t"]) for h in hist]
    if lam > 0:
        out["final_l_gnd"] = float(np.mean([h["l_gnd"] for h in tail]))
    student.eval()
    out.update(probe(student.image_features, cfg, seed, _device_of(student)))
    return out


# ----------------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------------
# Every table has the student trained alone (key "clip": L_t only, no teacher, no predistillation, same schedule and
# seeds) next to the distilled variants, so "distillation helps" is a paired comparison in every record.
_TIMING = (" (timed: 5 steps of each model and one probe in one single-threaded process under a load average of ~13 "
           "on the 2 cores: teacher 9 s/step, students 1.4-2.2 s/step, probe ~200 s, per-process setup ~17 min; "
           "extrapolated, so an upper bound)")
_STUDENTS_PROFILES = _profiles(VLCDStudentsConfig, students={"fast": ("mobilenetv3",), "cpu": tuple(STUDENT_NAMES),
                                                             "gpu": tuple(STUDENT_NAMES)},
                               clip_students={"fast": ("mobilenetv3",), "cpu": tuple(STUDENT_NAMES),
                                              "gpu": tuple(STUDENT_NAMES)}, lam=0.1)


@register("vlcd_students", _STUDENTS_PROFILES, seeds=_SEEDS,
          description="VLCD chapter 06: ResNet-50 teacher vs three students, each trained alone (CLIP alone) and with "
                      "VLCD (predistilled, L_t + 0.1 L_gnd). cpu: seeds 0-4, teacher 40 CLIP steps (once), per student "
                      "16 predistillation + 2 x 32 training steps at 64 px; "
                      "about 100 min wall with --jobs 2 on the 2-core machine" + _TIMING)
def vlcd_students(cfg: VLCDStudentsConfig, seed: int) -> dict:
    """Teacher and, per student, ``vlcd`` (predistillation + L_t + lam L_gnd) and, for the students in
    ``clip_students``, ``clip`` (the student trained alone: L_t, no teacher, no predistillation); linear-probe AUC
    on clean and phone images. The teacher is one trained model (seed 0); its per-seed numbers differ only by the
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


@register("vlcd_predistill", _profiles(VLCDPredistillConfig, student="mobilenetv3", lam=0.1), seeds=_SEEDS,
          description="VLCD chapter 06: MobileNetV3 VLCD with vs without predistillation, and trained alone, clean vs "
                      "phone images. cpu: seeds 0-4, teacher 40 CLIP steps (once), 16 predistillation + 3 x 32 "
                      "training steps at 64 px; about 60 min wall with --jobs 2 on the 2-core machine" + _TIMING)
def vlcd_predistill(cfg: VLCDPredistillConfig, seed: int) -> dict:
    """``pre`` / ``nopre``: ``L_t + lam L_gnd`` with / without predistillation; ``clip``: the student alone."""
    name = cfg.student
    return {"pre": run_variant(cfg, name, seed, lam=cfg.lam, predistill=True),
            "nopre": run_variant(cfg, name, seed, lam=cfg.lam, predistill=False),
            "clip": run_variant(cfg, name, seed, lam=0.0, predistill=False, use_teacher=False)}


@register("vlcd_lambda", _profiles(VLCDLambdaConfig, student="mobilenetv3", dist_mu=1.0,
                                   lams={"fast": (0.0, 0.1), "cpu": (0.0, 0.01, 0.1, 1.0, 10.0),
                                         "gpu": (0.0, 0.01, 0.1, 1.0, 10.0)}), seeds=_SEEDS,
          description="VLCD chapter 06: lambda sweep, L_gnd vs plain feature distillation, and the student trained "
                      "alone (MobileNetV3). cpu: seeds 0-4, teacher 40 CLIP steps (once), 16 predistillation + 7 x 32 "
                      "training steps at 64 px; about 110 min wall with --jobs 2 on the 2-core machine" + _TIMING)
def vlcd_lambda(cfg: VLCDLambdaConfig, seed: int) -> dict:
    """MobileNetV3 with predistillation, ``L_t + lam L_gnd`` for each lambda, ``L_t + mu L_dist`` (cosine feature
    distillation to the teacher's image embedding, no L_gnd) as the plain-KD alternative, and ``clip``: the student
    trained alone."""
    name = cfg.student
    out = {f"lam{lam:g}": run_variant(cfg, name, seed, lam=lam, predistill=True) for lam in cfg.lams}
    out["dist"] = run_variant(cfg, name, seed, lam=0.0, mu=cfg.dist_mu, predistill=True)
    out["clip"] = run_variant(cfg, name, seed, lam=0.0, predistill=False, use_teacher=False)
    return out


# ----------------------------------------------------------------------------------------------------
# Claims
# ----------------------------------------------------------------------------------------------------
MATCH_MARGIN = 0.02
"""Non-inferiority margin of "students match the teacher" (2 AUC points), pre-registered before the re-run."""

PAPER_EFFECTS: dict[str, float | None] = {
    "vlcd-beats-alone": None,
    "vlcd-predistill": None,
    "vlcd-lambda": None,
}
"""The paper's effect of each superiority claim in our metric (mean linear-probe AUC over the five tasks, as a
fraction), stated before the run. ``None``: the paper's tables (placenta AUC per task, arXiv 2506.02229) were not
available to restate here as one number in this metric, so only the direction can decide (``contradicted`` needs the
opposite direction beyond noise); fill in the paper's difference to let a CI below it contradict the claim."""


def _pending_keys(rec: dict, keys) -> list[str]:
    return [k for k in keys if k not in rec["summary"]]


_MISSING = "(re-run pending): the record predates the student-alone rows; re-run the cpu profile with seeds 0-4."


@claim("vlcd-match-teacher", paper="VLCD", chapter="06", claim="students match or beat the teacher's AUC",
       paper_value="5 placenta tasks", result="vlcd_students")
def _claim_match_teacher(rec: dict):
    s = rec["summary"]
    teacher = s["teacher/clean"]
    students = [n for n in STUDENT_NAMES if f"{n}/vlcd/clean" in s]
    ours = (f"probe AUC: teacher {fmt(teacher)}; VLCD students "
            + ", ".join(f"{STUDENT_NAMES[n]} {fmt(s[f'{n}/vlcd/clean'])}" for n in students)
            + f" (n={teacher['n']} seeds, profile {rec['profile']})")
    # the claim: no student is worse than the teacher by more than the pre-registered margin (non-inferiority);
    # "beats it" is reported, not required
    comps = [Comparison(s[f"{n}/vlcd/clean"], teacher, kind="non-inferiority", margin=MATCH_MARGIN) for n in students]
    judgements = [judge(c) for c in comps]
    verdict = claim_verdict(judgements)
    m = f"{MATCH_MARGIN * 100:.0f}"
    if verdict == "pending":
        why = ONE_SEED
    else:
        worse = [STUDENT_NAMES[n] for n, j in zip(students, judgements) if j.opposes]
        better = [STUDENT_NAMES[n] for n in students if judge(Comparison(s[f"{n}/vlcd/clean"], teacher)).supports]
        extra = f"; {', '.join(better)} beat(s) it beyond noise" if better else ""
        if verdict == "reproduced":
            why = (f"Every VLCD student is within {m} AUC points of the ResNet-50 teacher or better (one-sided 95 % "
                   f"bound){extra}.")
        elif worse:
            why = (f"{', '.join(worse)} {'is' if len(worse) == 1 else 'are'} below the teacher by more than {m} AUC "
                   f"points beyond noise{extra}.")
        else:
            why = f"At least one student's one-sided 95 % bound does not clear the {m}-point margin{extra}."
        why += " [" + "; ".join(f"{STUDENT_NAMES[n]}: {j.reason_in(100)}" for n, j in zip(students, judgements)) + "]"
    return ClaimResult(ours, verdict, why, judgements)


@claim("vlcd-beats-alone", paper="VLCD", chapter="06", claim="distillation beats the student trained alone",
       paper_value="VLCD students vs the same students without distillation", result="vlcd_students")
def _claim_beats_alone(rec: dict):
    s = rec["summary"]
    students = [n for n in STUDENT_NAMES if f"{n}/vlcd/clean" in s]
    paired_ = [n for n in students if f"{n}/clip/clean" in s]
    ours = ("probe AUC, VLCD vs trained alone: "
            + ", ".join(f"{STUDENT_NAMES[n]} {fmt(s[f'{n}/vlcd/clean'])} vs "
                        + (fmt(s[f"{n}/clip/clean"]) if n in paired_ else "(re-run pending)") for n in students)
            + f" (profile {rec['profile']})")
    if not paired_:
            return ClaimResult(ours, "pending", _MISSING)
    comps = [Comparison(s[f"{n}/vlcd/clean"], s[f"{n}/clip/clean"], paper_effect=PAPER_EFFECTS["vlcd-beats-alone"])
             for n in paired_]
    missing = [STUDENT_NAMES[n] for n in students if n not in paired_]
    wording = Wording(
        reproduced="Every distilled student beats the same student trained alone (first: {d:+.1f} points).",
        not_reproduced="Not every distilled student beats the same student trained alone beyond noise "
                       "(first: {d:+.1f} points, 95 % CI [{lo:+.1f}, {hi:+.1f}]).",
        opposed="A student trained alone beats its distilled version beyond noise (first: {d:+.1f} points).")
    res = judge_claim(ours, comps, wording)
    if missing and res[1] != "pending":
            return ClaimResult(ours, "pending", f"{', '.join(missing)} {_MISSING}", res.judgements)
    return res


_PREDISTILL = Wording(
    reproduced="Predistillation raises AUC on degraded phone captures by {d:.1f} points (95 % CI [{lo:+.1f}, "
               "{hi:+.1f}]).",
    not_reproduced="The phone-image difference ({d:+.1f} points, 95 % CI [{lo:+.1f}, {hi:+.1f}]) does not show the "
                   "paper's gain.",
    opposed="Predistillation lowers phone-image AUC beyond noise ({d:+.1f} points).")


@claim("vlcd-predistill", paper="VLCD", chapter="06", claim="predistillation improves robustness on low-quality images",
       paper_value="iPad images", result="vlcd_predistill")
def _claim_predistill(rec: dict):
    s = rec["summary"]
    pre, nopre = s["pre/phone"], s["nopre/phone"]
    alone = fmt(s["clip/phone"]) if "clip/phone" in s else "(re-run pending)"
    ours = (f"phone-image probe AUC {fmt(pre)} with vs {fmt(nopre)} without predistillation, {alone} trained alone; "
            f"clean {fmt(s['pre/clean'])} vs {fmt(s['nopre/clean'])} (MobileNetV3, n={pre['n']} seeds, "
            f"profile {rec['profile']})")
    return judge_claim(ours, [Comparison(pre, nopre, paper_effect=PAPER_EFFECTS["vlcd-predistill"])], _PREDISTILL)


@claim("vlcd-lambda", paper="VLCD", chapter="06", claim="lambda = 0.1 is the best setting", paper_value="sweep 0.01-10",
       result="vlcd_lambda")
def _claim_lambda(rec: dict):
    s = rec["summary"]
    lams = sorted(float(lam) for lam in rec["config"]["lams"] if f"lam{float(lam):g}/clean" in s)
    entries = {lam: s[f"lam{lam:g}/clean"] for lam in lams}
    best = max(entries, key=lambda k: entries[k]["mean"])
    alone = fmt(s["clip/clean"]) if "clip/clean" in s else "(re-run pending)"
    ours = ("probe AUC " + ", ".join(f"lambda={lam:g}: {fmt(e)}" for lam, e in entries.items()) +
            f"; trained alone {alone} (MobileNetV3, n={entries[best]['n']} seeds, profile {rec['profile']})")
    if 0.1 not in entries or len(entries) < 2:
        return ours, "not testable here", "lambda = 0.1 was not in the sweep, or nothing else was."
    # the claim: lambda = 0.1 beats every other setting
    others = [lam for lam in entries if lam != 0.1]
    judgements = [judge(Comparison(entries[0.1], entries[lam], paper_effect=PAPER_EFFECTS["vlcd-lambda"]))
                  for lam in others]
    verdict = claim_verdict(judgements)
    beaten = [lam for lam, j in zip(others, judgements) if j.opposes]
    if verdict == "pending":
        why = ONE_SEED
    elif beaten:
        why = f"lambda = {', '.join(f'{b:g}' for b in beaten)} beat(s) lambda = 0.1 beyond noise."
    elif verdict == "reproduced":
        why = "lambda = 0.1 beats every other setting (every paired 95 % CI above 0)."
    else:
        best_txt = "it has the best mean" if best == 0.1 else f"the best mean is lambda = {best:g}'s"
        why = (f"No setting beats lambda = 0.1 beyond noise, and 0.1 does not beat every other setting beyond noise "
               f"either ({best_txt}); the sweep is flat within seed noise at our scale.")
    if verdict != "pending":
        why += " [" + "; ".join(f"vs {lam:g}: {j.reason_in(100)}" for lam, j in zip(others, judgements)) + "]"
    return ClaimResult(ours, verdict, why, judgements)


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


CLAIMS = claims_of(__name__)
