"""Evaluation shared by every chapter: zero-shot AUC, retrieval R@K, linear probe, :func:`embed`, and the
segmentation / attention metrics (Dice, pointing game, attention mass in a mask)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..utils import get_device
from .attention import attention_quality, attention_scores
from .probe import linear_probe_auc, multiclass_probe_accuracy, stratified_subsample
from .retrieval import class_precision_at_k, normalise_text, retrieval_recall
from .segmentation import attention_mass_in_mask, dice_aggregate, dice_per_image, dice_summary, pointing_game
from .zero_shot import binary_auc, label_prompt_embeddings, prompt_similarity, zero_shot_auc, zero_shot_scores

__all__ = ["embed", "zero_shot_auc", "zero_shot_scores", "prompt_similarity", "binary_auc", "retrieval_recall",
           "normalise_text", "linear_probe_auc", "stratified_subsample", "dice_per_image", "dice_aggregate",
           "dice_summary", "pointing_game", "attention_mass_in_mask", "attention_scores", "attention_quality",
           "multiclass_probe_accuracy", "label_prompt_embeddings", "class_precision_at_k"]


@torch.no_grad()
def embed(model, dataset_or_loader, batch_size: int = 256, device=None, progress: bool = False) -> dict:
    """Embed every item: ``{"image_emb" [N, D], "text_emb" [N, D], "image_feat" [N, F], "texts", "labels"}``.

    ``model``: a dual encoder with ``encode_image`` / ``encode_text`` (or a method holding one as ``.model`` or
    ``.online``).
    ``image_feat`` are the pooled backbone features (for the linear probe) when the model offers
    ``encode_image_with_features``, else the image embeddings. ``dataset_or_loader``: a map-style dataset of
    dicts with ``image`` and ``text`` (batched here in order, no shuffling) or any iterable of such batches.
    Tensors are returned on the CPU in float32; ``labels`` only if the items have them. The model is put
    in eval mode and restored afterwards.
    """
    # a method (CLIP: .model, MSD: .online) or the dual encoder itself; prefer one exposing backbone features
    candidates = [model] + [getattr(model, a) for a in ("model", "online") if isinstance(getattr(model, a, None), nn.Module)]
    with_feats = [c for c in candidates if hasattr(c, "encode_image_with_features") and hasattr(c, "encode_text")]
    plain = [c for c in candidates if hasattr(c, "encode_image") and hasattr(c, "encode_text")]
    model = (with_feats or plain or [model])[0]
    for attr in ("encode_image", "encode_text"):
        if not hasattr(model, attr):
            raise TypeError(f"model must provide .{attr} (a DualEncoder or a method with .model), "
                            f"got {type(model).__name__}")
    device = torch.device(device) if device is not None else get_device()
    if isinstance(dataset_or_loader, DataLoader) or not hasattr(dataset_or_loader, "__getitem__"):
        loader = dataset_or_loader
    else:
        loader = DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=False, num_workers=0)
    was_training = model.training
    model.eval()
    model.to(device)
    img, txt, feat, texts, labels = [], [], [], [], []
    try:
        for batch in tqdm(loader, desc="embed", disable=not progress):
            if not isinstance(batch, dict) or "image" not in batch or "text" not in batch:
                raise ValueError("each batch must be a dict with 'image' and 'text'")
            x = batch["image"].to(device)
            if hasattr(model, "encode_image_with_features"):
                e, f = model.encode_image_with_features(x)
            else:
                e = model.encode_image(x)
                f = e
            batch_texts = list(batch["text"])
            img.append(e.float().cpu())
            feat.append(f.float().cpu())
            txt.append(model.encode_text(batch_texts).float().cpu())
            texts.extend(batch_texts)
            if "labels" in batch:
                labels.append(torch.as_tensor(batch["labels"]).float().cpu())
    finally:
        model.train(was_training)
    if not img:
        raise ValueError("dataset_or_loader yielded no batches")
    out = {"image_emb": torch.cat(img), "text_emb": torch.cat(txt), "image_feat": torch.cat(feat), "texts": texts}
    if labels:
        out["labels"] = torch.cat(labels)
    return out
