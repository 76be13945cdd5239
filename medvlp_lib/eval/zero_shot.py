"""Zero-shot classification AUC from prompt ensembles (GLoRIA / MedCLIP protocol, adapted to multi-label).

For image embedding ``x`` (L2-normalised) and a finding ``c`` with prompt embeddings ``P_c`` ([P, D]):

* ``reduce="mean"`` (default, CLIP's prompt ensembling): ``sim_c(x) = x . normalize(mean_p normalize(P_c[p]))``;
* ``reduce="max"`` (GLoRIA's reading): ``sim_c(x) = max_p x . normalize(P_c[p])``.

Score (our reading, documented in chapter 01): findings are scored *relative to normal*,

    score_c(x) = sim_c(x) - sim_normal(x)          for every finding c != normal,
    score_normal(x) = sim_normal(x) - mean_{c != normal} sim_c(x),

so an image's overall similarity to "any chest X-ray text" cancels; this is the two-class softmax
"finding vs no finding" of MedCLIP/CheXzero up to a monotone map (sigmoid of the scaled difference), which
leaves the AUC unchanged. Without a ``normal`` entry (or ``subtract_normal=False``) the raw ``sim_c`` is
used. Per finding the AUC of ``score_c`` against the binary labels is computed over the images; findings
with a single class among the evaluated images are skipped and listed under ``skipped``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from ..data.text import build_prompts

__all__ = ["prompt_similarity", "zero_shot_scores", "zero_shot_auc", "binary_auc", "label_prompt_embeddings"]


def _as_tensor(x, name: str, ndim: int) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    return x.detach().float().cpu()


def binary_auc(scores, labels) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (ties count one half); NaN if only one class present."""
    y = np.asarray(labels).astype(float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape} and {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be binary (0/1)")
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def prompt_similarity(image_emb, prompt_emb, reduce: str = "mean") -> torch.Tensor:
    """Similarity ``[N]`` of each image to one class's prompt ensemble (see the module docstring)."""
    x = F.normalize(_as_tensor(image_emb, "image_emb", 2), dim=-1)
    p = F.normalize(_as_tensor(prompt_emb, "prompt embeddings", 2), dim=-1)
    if p.shape[1] != x.shape[1]:
        raise ValueError(f"prompt embeddings have dim {p.shape[1]} but image_emb has dim {x.shape[1]}")
    if reduce == "mean":
        return x @ F.normalize(p.mean(0), dim=0)
    if reduce == "max":
        return (x @ p.t()).max(dim=1).values
    raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")


def zero_shot_scores(image_emb, class_text_embs: Mapping[str, object], label_names: Sequence[str],
                     reduce: str = "mean", normal_label: str = "normal", subtract_normal: bool = True) -> np.ndarray:
    """Scores ``[N, len(label_names)]`` (higher = finding more likely), per the module docstring."""
    missing = [l for l in label_names if l not in class_text_embs]
    if missing:
        raise ValueError(f"class_text_embs has no prompt embeddings for {missing}; got {list(class_text_embs)}")
    sims = {l: prompt_similarity(image_emb, e, reduce) for l, e in class_text_embs.items()}
    use_normal = subtract_normal and normal_label in sims
    others = [l for l in sims if l != normal_label]
    cols = []
    for lab in label_names:
        s = sims[lab]
        if use_normal:
            if lab == normal_label:
                if others:
                    s = s - torch.stack([sims[o] for o in others]).mean(0)
            else:
                s = s - sims[normal_label]
        cols.append(s)
    return torch.stack(cols, dim=1).numpy()


def zero_shot_auc(image_emb, class_text_embs: Mapping[str, object], labels, label_names: Sequence[str] | None = None,
                  reduce: str = "mean", normal_label: str = "normal", subtract_normal: bool = True) -> dict:
    """Per-finding zero-shot AUC and their mean.

    ``image_emb`` [N, D]; ``class_text_embs``: label -> prompt embeddings [P, D] (e.g. the dual encoder's
    ``encode_text(build_prompts(label))``); ``labels`` [N, L] binary, columns in ``label_names`` order
    (default: the keys of ``class_text_embs``). Returns ``{"per_label": {name: auc}, "mean": float,
    "skipped": [names with one class only], "n_skipped": int, "scores": [N, L] array}``.
    """
    if label_names is None:
        label_names = list(class_text_embs)
    label_names = list(label_names)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=float)
    if y.ndim == 1 and len(label_names) == 1:
        y = y[:, None]
    n = _as_tensor(image_emb, "image_emb", 2).shape[0]
    if y.shape != (n, len(label_names)):
        raise ValueError(f"labels must have shape [N, L] = {(n, len(label_names))} (label_names={label_names}), "
                         f"got {y.shape}")
    scores = zero_shot_scores(image_emb, class_text_embs, label_names, reduce, normal_label, subtract_normal)
    per, skipped = {}, []
    for j, lab in enumerate(label_names):
        auc = binary_auc(scores[:, j], y[:, j])
        if np.isnan(auc):
            skipped.append(lab)
        else:
            per[lab] = auc
    mean = float(np.mean(list(per.values()))) if per else float("nan")
    return {"per_label": per, "mean": mean, "skipped": skipped, "n_skipped": len(skipped), "scores": scores}


@torch.no_grad()
def label_prompt_embeddings(model, labels: Sequence[str], n_prompts: int | None = None, seed: int = 0) -> dict:
    """Prompt-ensemble text embeddings per finding: ``{label: [P, D]}`` (GLoRIA-style word lists in
    :func:`medvlp_lib.data.text.build_prompts`), from ``model.encode_text`` in eval mode, on the CPU."""
    model.eval()
    return {lab: model.encode_text(build_prompts(lab, n=n_prompts, seed=seed)).cpu() for lab in labels}
