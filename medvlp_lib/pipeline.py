"""High-level recipes shared by chapters and experiments: load the benchmark, build, evaluate.

These are thin compositions of the library's pieces (data, models, methods, eval) so that every chapter
builds and evaluates the same way; training goes through :func:`medvlp_lib.train.fit`. Each function is short
enough to read in a notebook with ``??`` and says which pieces it composes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from .config import ExperimentConfig, require
from .data import CXRDataset
from .eval import (class_precision_at_k, embed, label_prompt_embeddings, linear_probe_auc, retrieval_recall,
                   zero_shot_auc)
from .methods.clip import CLIP
from .models.encoders import DualEncoder, build_image_encoder, build_text_encoder, parse_trainable
from .utils import get_device, seed_everything

__all__ = ["DualEncoderConfig", "load_benchmark", "load_pretraining", "downstream_datasets", "build_dual_encoder",
           "build_clip", "embed_dataset", "evaluate_dual_encoder", "evaluate_pretraining", "SplitView",
           "REAL_DOWNSTREAM"]


@functools.lru_cache(maxsize=8)
def load_benchmark(image_size: int = 64, n_train: int | None = None, n_test: int | None = None, seed: int = 0):
    """The embedded benchmark's train and test splits (rendered once per process and cached)."""
    train = CXRDataset("train", size=image_size, seed=seed, n=n_train)
    test = CXRDataset("test", size=image_size, seed=seed, n=n_test)
    return train, test


@dataclass(frozen=True, kw_only=True)
class DualEncoderConfig(ExperimentConfig):
    """What :func:`build_dual_encoder` builds; chapter configurations that train a dual encoder extend it.

    ``image_encoder``: a timm name (``pretrained``: ImageNet weights from the local cache); ``text_encoder``: a
    Hugging Face name or folder (``None``: the packaged MiniLM); ``image_trainable`` / ``text_trainable``:
    ``"all"``, ``"none"`` or ``"last:N"``; ``embed_dim`` and ``proj`` (``"mlp"`` | ``"linear"``): the heads;
    ``chexpert_per_class``: images per class of the CheXpert 5x200 evaluation (200; ``data="real"`` only).
    """
    image_encoder: str = "resnet18"
    text_encoder: str | None = None
    pretrained: bool = False
    image_trainable: str = "all"
    text_trainable: str = "none"
    embed_dim: int = 128
    proj: Literal["mlp", "linear"] = "mlp"
    chexpert_per_class: int = 200

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("embed_dim", "chexpert_per_class"))
        for name in ("image_trainable", "text_trainable"):
            try:
                parse_trainable(getattr(self, name))
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}.{name}: {err}") from None


def build_dual_encoder(cfg: DualEncoderConfig, seed: int):
    """Image encoder (timm) + text encoder (Hugging Face; default: the packaged MiniLM) + projections, as
    ``cfg`` (a :class:`DualEncoderConfig` or a chapter configuration extending it) says, seeded by ``seed``."""
    if not isinstance(cfg, DualEncoderConfig):
        raise TypeError(f"cfg must be a DualEncoderConfig (or a chapter config extending it), got "
                        f"{type(cfg).__name__}")
    seed_everything(seed)
    image = build_image_encoder(cfg.image_encoder, pretrained=cfg.pretrained, in_chans=1,
                                trainable=cfg.image_trainable)
    text = build_text_encoder(cfg.text_encoder, trainable=cfg.text_trainable)
    return DualEncoder(image, text, embed_dim=cfg.embed_dim, proj=cfg.proj)


def build_clip(cfg: DualEncoderConfig, seed: int):
    """The CLIP baseline method (symmetric InfoNCE, learnable temperature) on a fresh dual encoder."""
    return CLIP(build_dual_encoder(cfg, seed))


@torch.no_grad()
def embed_dataset(model, dataset, batch_size: int = 256, device=None):
    """Projected image and text embeddings plus pooled backbone image features for a dataset."""
    return embed(model, dataset, batch_size=batch_size, device=device or get_device())


def evaluate_dual_encoder(model, train, test, probe_fractions=(0.01, 0.1, 1.0), seed: int = 0,
                          probe_seeds=(0,)) -> dict:
    """The book's standard evaluation of a dual encoder (every chapter reports these numbers).

    * zero-shot AUC per finding (prompt ensembles) and their mean;
    * image->text and text->image R@1/5/10 on the test split, an identical report text counting as a hit;
    * linear-probe AUC on pooled backbone features with ``probe_fractions`` of the training labels.
    """
    te = embed_dataset(model, test)
    tr = embed_dataset(model, train)
    labels = [l for l in test.label_names]
    prompts = label_prompt_embeddings(model, labels, seed=seed)
    zs = zero_shot_auc(te["image_emb"], prompts, test.labels, label_names=labels)
    ks = tuple(k for k in (1, 5, 10) if k <= len(test))   # a smoke run's test split may hold fewer than 10
    ret = retrieval_recall(te["image_emb"], te["text_emb"], texts=test.texts, ks=ks)
    probe = linear_probe_auc(tr["image_feat"], train.labels, te["image_feat"], test.labels,
                             fractions=probe_fractions, seeds=probe_seeds, label_names=labels)
    out = {"zero_shot_auc": zs["mean"], "zero_shot_per_label": zs["per_label"]}
    for key, value in ret.items():
        out[key] = value
    # class-level retrieval (a hit = same finding set, as in MGCA's CheXpert 5x200), with its chance and oracle
    for key, value in class_precision_at_k(te["image_emb"], te["text_emb"], test.labels, ks=ks).items():
        out[f"class_{key}" if not key.startswith("class_") else key] = value
    for frac, entry in probe.items():
        out[f"probe_auc@{frac:g}"] = entry["mean"]
    return out


# ------------------------------------------------------------------------------------------------- the data switch
REAL_DOWNSTREAM = ("rsna", "siim", "vindr", "covidx", "chexpert5x200")
"""The downstream datasets of ``data="real"``: zero-shot and linear-probe classification on RSNA Pneumonia,
SIIM-ACR, VinDr-CXR and COVIDx (the MSD paper's and the Adaptor paper's tables) and MGCA's CheXpert 5x200
class-level retrieval."""


class SplitView:
    """Rows ``rows`` of a labelled dataset, keeping ``labels``/``label_names``/``texts`` (what the evaluators
    read): the seeded train/test split of a dataset that has no official one (RSNA, SIIM)."""

    def __init__(self, base, rows):
        import numpy as np
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(base.labels)[self.rows]
        self.label_names = tuple(base.label_names)
        if hasattr(base, "texts"):
            self.texts = [base.texts[int(r)] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[int(self.rows[int(i)])])
        item["index"] = int(i)
        return item


def _seeded_split(dataset, test_frac: float, seed: int):
    import numpy as np

    from .eval.real import as_labelled
    dataset = as_labelled(dataset)
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_test = max(1, int(round(test_frac * len(dataset))))
    return SplitView(dataset, np.sort(order[n_test:])), SplitView(dataset, np.sort(order[:n_test]))


def _field(cfg, name, default):
    return getattr(cfg, name, default)


def load_pretraining(cfg: ExperimentConfig):
    """The pretraining pairs ``(train, test)`` as ``cfg.data`` says.

    ``"embedded"``: :func:`load_benchmark` (IU X-Ray reports + rendered films). ``"real"``: MIMIC-CXR-JPG 2.0
    under ``$MEDVLP_DATA/mimic-cxr-jpg`` (:class:`medvlp_lib.data.real.mimic_cxr.MIMICCXR`): frontal views,
    findings + impression, the official train and test splits; ``n_train`` / ``n_test`` (when the configuration
    has them and they are not ``None``) take seeded subsets. Both give items ``image, text, labels, index`` and
    the attributes ``texts``, ``labels``, ``label_names`` the evaluators read.
    """
    size, seed = _field(cfg, "image_size", 224), _field(cfg, "data_seed", 0)
    n_train, n_test = _field(cfg, "n_train", None), _field(cfg, "n_test", None)
    if cfg.data == "embedded":
        return load_benchmark(size, n_train, n_test, seed)
    if cfg.data != "real":
        raise ValueError(f"{type(cfg).__name__}.data must be one of ('embedded', 'real'), got {cfg.data!r}")
    from .data.real.mimic_cxr import MIMICCXR
    train = MIMICCXR(split="train", size=size, n=n_train, seed=seed)
    test = MIMICCXR(split="test", size=size, n=n_test, seed=seed)
    return train, test


def downstream_datasets(cfg: ExperimentConfig, names=REAL_DOWNSTREAM) -> dict:
    """``{name: (train, test)}`` of the real downstream datasets (``train`` is ``None`` where only zero-shot or
    retrieval applies), read from ``$MEDVLP_DATA`` in their official layouts. RSNA and SIIM have no official
    test labels, so a seeded 70/30 split (``data_seed``) stands in, as MGCA's preprocessing does; VinDr-CXR and
    COVIDx use their official splits; CheXpert 5x200 is MGCA's protocol on the CheXpert training set.
    A dataset missing under ``MEDVLP_DATA`` raises ``FileNotFoundError`` naming its expected layout."""
    size, seed = _field(cfg, "image_size", 224), _field(cfg, "data_seed", 0)
    out = {}
    for name in names:
        if name == "rsna":
            from .data.real.rsna import RSNAPneumonia
            out[name] = _seeded_split(RSNAPneumonia(size=size), 0.3, seed)
        elif name == "siim":
            from .data.real.siim import SIIMPneumothorax
            out[name] = _seeded_split(SIIMPneumothorax(size=size), 0.3, seed)
        elif name == "vindr":
            from .data.real.vindr import VinDrCXR
            out[name] = (VinDrCXR(split="train", size=size), VinDrCXR(split="test", size=size))
        elif name == "covidx":
            from .data.real.covidx import COVIDx
            out[name] = (COVIDx(split="train", size=size), COVIDx(split="test", size=size))
        elif name == "chexpert5x200":
            from .data.real.chexpert import CheXpert, chexpert_5x200
            out[name] = (None, chexpert_5x200(CheXpert(split="train", size=size),
                                              n_per_class=_field(cfg, "chexpert_per_class", 200), seed=seed))
        else:
            raise ValueError(f"unknown downstream dataset {name!r}; expected one of {REAL_DOWNSTREAM}")
    return out


def evaluate_pretraining(model, cfg: ExperimentConfig, train, test, seed: int = 0, probe_seeds=(0,)) -> dict:
    """The book's evaluation of a pretrained dual encoder as ``cfg.data`` says.

    ``"embedded"``: :func:`evaluate_dual_encoder` on the benchmark. ``"real"``: the same on the MIMIC-CXR test
    split (retrieval R@1/5/10, class-level P@K, zero-shot and probe AUC on MIMIC's labels), plus, per downstream
    dataset (:func:`downstream_datasets`), ``<name>/zero_shot_auc`` and ``<name>/probe_auc@<fraction>``
    (:func:`medvlp_lib.eval.real.evaluate_real`; COVIDx: probe only, its ``covid`` class has no prompt list) and,
    for CheXpert 5x200, ``chexpert5x200/zero_shot_auc`` over its five classes.
    """
    fractions = _field(cfg, "probe_fractions", (0.01, 0.1, 1.0))
    out = evaluate_dual_encoder(model, train, test, probe_fractions=fractions, seed=seed, probe_seeds=probe_seeds)
    if cfg.data != "real":
        return out
    from .eval.real import evaluate_real
    for name, (dtrain, dtest) in downstream_datasets(cfg).items():
        res = evaluate_real(model, dtrain, dtest, fractions=fractions, probe_seeds=probe_seeds, seed=seed,
                            progress=False, zero_shot=name != "covidx")
        for key, value in res.items():
            if isinstance(value, (int, float)):   # scalars only (per-label dicts and skipped-label lists stay out)
                out[f"{name}/{key}"] = value
    return out
