"""Zero- and few-shot evaluation of a dual encoder on the real datasets (VinDr-CXR, RSNA, SIIM, MIMIC-CXR).

The paper evaluates zero-shot classification AUC on VinDr-CXR, RSNA and SIIM, and few-shot (linear probe on 1 %
/ 10 % of the training labels) AUC; this module runs the book's shared protocol on any loader of
:mod:`medvlp_lib.data.real`:

* :func:`as_labelled` turns a loader into an image + multi-label view with the book's label names
  (RSNA's ``Target`` -> ``opacity``: the challenge's positive class is "Lung Opacity" from pneumonia; SIIM's
  pneumothorax -> ``pneumothorax``; MIMIC-CXR / VinDr already map onto the book's names with
  ``labels="library"``), so the packaged prompt lists (:mod:`medvlp_lib.data.text`) apply;
* :func:`embed_images` embeds images only (no report text is needed for classification);
* :func:`evaluate_real` = zero-shot AUC per label (prompt ensembles, scored relative to ``normal`` as in
  :mod:`medvlp_lib.eval.zero_shot`) + linear-probe AUC at ``fractions`` of the training labels.

Nothing here downloads anything; a GPU user points ``MEDVLP_DATA`` at the datasets (layouts in each loader's
docstring) and calls :func:`evaluate_real` with a trained model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..utils import get_device
from .probe import linear_probe_auc
from .zero_shot import label_prompt_embeddings, zero_shot_auc

__all__ = ["LabelledImages", "as_labelled", "embed_images", "zero_shot_real", "evaluate_real", "BINARY_LABEL"]

BINARY_LABEL = {"RSNAPneumonia": "opacity", "SIIMPneumothorax": "pneumothorax"}
"""Book label name for the binary loaders' single label."""


class LabelledImages(Dataset):
    """Image + multi-label view of a loader: items ``dict(image, labels=FloatTensor[L], index)``; attributes
    ``labels`` (float32 [N, L]) and ``label_names``."""

    def __init__(self, base: Dataset, labels: np.ndarray, label_names: Sequence[str]):
        labels = np.asarray(labels, np.float32)
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.shape != (len(base), len(label_names)):
            raise ValueError(f"labels must be [N={len(base)}, L={len(label_names)}], got {labels.shape}")
        self.base, self.labels, self.label_names = base, labels, tuple(label_names)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        return {"image": item["image"], "labels": torch.from_numpy(self.labels[int(i) % len(self)].copy()),
                "index": item["index"]}


def as_labelled(dataset) -> LabelledImages:
    """Wrap a real loader (or any dataset with ``labels`` and ``label_names``) as :class:`LabelledImages`."""
    if isinstance(dataset, LabelledImages):
        return dataset
    name = type(dataset).__name__
    if name in BINARY_LABEL:
        return LabelledImages(dataset, np.asarray(dataset.labels, np.float32).reshape(-1, 1), (BINARY_LABEL[name],))
    if hasattr(dataset, "label_names") and hasattr(dataset, "labels"):
        return LabelledImages(dataset, dataset.labels, dataset.label_names)
    if hasattr(dataset, "classes") and np.asarray(dataset.labels).ndim == 1:  # multi-class (COVIDx): one-hot
        classes = tuple(dataset.classes)
        return LabelledImages(dataset, np.eye(len(classes), dtype=np.float32)[np.asarray(dataset.labels)], classes)
    raise TypeError(f"{name} has no labels / label_names; known binary loaders: {sorted(BINARY_LABEL)}")


def _image_model(model) -> nn.Module:
    for cand in (model, getattr(model, "model", None), getattr(model, "online", None)):
        if cand is not None and hasattr(cand, "encode_image"):
            return cand
    raise TypeError(f"model must provide encode_image (a dual encoder or a method holding one), "
                    f"got {type(model).__name__}")


@torch.no_grad()
def embed_images(model, dataset, batch_size: int = 64, device=None, progress: bool = True) -> dict:
    """``{"image_emb" [N, D], "image_feat" [N, F], "labels" [N, L]}`` (CPU float32) for a labelled dataset.

    ``image_feat`` are pooled backbone features when the model has ``encode_image_with_features`` (what the
    linear probe uses), else the embeddings. The model is put in eval mode and restored.
    """

    ds = as_labelled(dataset)
    m = _image_model(model)
    device = torch.device(device) if device is not None else get_device()
    was = m.training
    m.eval()
    m.to(device)
    emb, feat, labels = [], [], []
    try:
        for batch in tqdm(DataLoader(ds, batch_size=batch_size, shuffle=False), desc="embed images",
                          disable=not progress, leave=False):
            x = batch["image"].to(device)
            if hasattr(m, "encode_image_with_features"):
                e, f = m.encode_image_with_features(x)
            else:
                e = f = m.encode_image(x)
            emb.append(e.float().cpu())
            feat.append(f.float().cpu())
            labels.append(batch["labels"].float())
    finally:
        m.train(was)
    return {"image_emb": torch.cat(emb), "image_feat": torch.cat(feat), "labels": torch.cat(labels)}


def zero_shot_real(model, dataset, n_prompts: int | None = None, seed: int = 0, batch_size: int = 64,
                   device=None, progress: bool = True) -> dict:
    """Zero-shot AUC per label (and mean) with the book's prompt ensembles; ``normal`` prompts are always built
    so findings are scored relative to normal (see :mod:`medvlp_lib.eval.zero_shot`)."""
    ds = as_labelled(dataset)
    out = embed_images(model, ds, batch_size=batch_size, device=device, progress=progress)
    return _zero_shot_from(model, ds, out, n_prompts, seed)


def _zero_shot_from(model, ds, out: dict, n_prompts, seed) -> dict:
    prompt_labels = list(dict.fromkeys([*ds.label_names, "normal"]))
    prompts = label_prompt_embeddings(_text_model(model), prompt_labels, n_prompts=n_prompts, seed=seed)
    res = zero_shot_auc(out["image_emb"], prompts, out["labels"].numpy(), label_names=list(ds.label_names))
    return {"zero_shot_auc": res["mean"], "zero_shot_per_label": res["per_label"], "skipped": res["skipped"],
            "n": len(ds)}


def _text_model(model):
    for cand in (model, getattr(model, "model", None), getattr(model, "online", None)):
        if cand is not None and hasattr(cand, "encode_text"):
            return cand
    raise TypeError(f"model must provide encode_text for zero-shot prompts, got {type(model).__name__}")


def evaluate_real(model, train, test, fractions: Sequence[float] = (0.01, 0.1, 1.0), probe_seeds=(0,),
                  n_prompts: int | None = None, seed: int = 0, batch_size: int = 64, device=None,
                  progress: bool = True, zero_shot: bool = True) -> dict:
    """Zero-shot AUC on ``test`` and linear-probe AUC (features of ``train`` at each fraction, tested on
    ``test``); ``train`` may be ``None`` for zero-shot only, ``zero_shot=False`` skips it (labels without
    prompts, e.g. COVIDx's ``covid``). Returns ``zero_shot_auc``, ``zero_shot_per_label``,
    ``probe_auc@<fraction>`` and ``few_shot_gain@<fraction>`` (probe minus zero-shot, with zero-shot)."""

    te = as_labelled(test)
    ete = embed_images(model, te, batch_size=batch_size, device=device, progress=progress)
    out = _zero_shot_from(model, te, ete, n_prompts, seed) if zero_shot else {}
    if train is None:
        if not zero_shot:
            raise ValueError("evaluate_real needs a train split when zero_shot=False (nothing to evaluate)")
        return out
    tr = as_labelled(train)
    if tuple(tr.label_names) != tuple(te.label_names):
        raise ValueError(f"train and test label names differ: {tr.label_names} vs {te.label_names}")
    etr = embed_images(model, tr, batch_size=batch_size, device=device, progress=progress)
    probe = linear_probe_auc(etr["image_feat"], etr["labels"], ete["image_feat"], ete["labels"], fractions=fractions,
                             seeds=probe_seeds, label_names=list(te.label_names))
    for frac, entry in probe.items():
        out[f"probe_auc@{frac:g}"] = entry["mean"]
        if zero_shot:
            out[f"few_shot_gain@{frac:g}"] = entry["mean"] - out["zero_shot_auc"]
    return out
