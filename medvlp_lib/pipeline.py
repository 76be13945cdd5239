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
from .eval import embed, label_prompt_embeddings, linear_probe_auc, retrieval_recall, zero_shot_auc
from .methods.clip import CLIP
from .models.encoders import DualEncoder, build_image_encoder, build_text_encoder, parse_trainable
from .utils import get_device, seed_everything

__all__ = ["DualEncoderConfig", "load_benchmark", "build_dual_encoder", "build_clip", "embed_dataset",
           "evaluate_dual_encoder"]


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
    ``"all"``, ``"none"`` or ``"last:N"``; ``embed_dim`` and ``proj`` (``"mlp"`` | ``"linear"``): the heads.
    """
    image_encoder: str = "resnet18"
    text_encoder: str | None = None
    pretrained: bool = False
    image_trainable: str = "all"
    text_trainable: str = "none"
    embed_dim: int = 128
    proj: Literal["mlp", "linear"] = "mlp"

    def __post_init__(self):
        super().__post_init__()
        require(self, positive=("embed_dim",))
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
    ret = retrieval_recall(te["image_emb"], te["text_emb"], texts=test.texts, ks=(1, 5, 10))
    probe = linear_probe_auc(tr["image_feat"], train.labels, te["image_feat"], test.labels,
                             fractions=probe_fractions, seeds=probe_seeds, label_names=labels)
    out = {"zero_shot_auc": zs["mean"], "zero_shot_per_label": zs["per_label"]}
    for key, value in ret.items():
        out[key] = value
    for frac, entry in probe.items():
        out[f"probe_auc@{frac:g}"] = entry["mean"]
    return out
