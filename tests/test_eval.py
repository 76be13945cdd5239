"""Evaluation metrics on hand-made cases: AUC, zero-shot scoring, R@K (strict and text-aware), linear probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medvlp_lib.data.text import PROMPT_LABELS, PROMPT_WORDS, all_prompts, build_prompts
from medvlp_lib.eval import (binary_auc, embed, linear_probe_auc, retrieval_recall, stratified_subsample,
                             zero_shot_auc, zero_shot_scores)



LABELS = ("cardiomegaly", "pleural_effusion", "opacity", "atelectasis", "nodule", "emphysema", "edema",
          "pneumothorax", "device", "normal")


def test_binary_auc_hand_cases():
    y = [0, 0, 1, 1]
    assert binary_auc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert binary_auc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert binary_auc([0.5, 0.5, 0.5, 0.5], y) == 0.5
    assert binary_auc([0.1, 0.6, 0.5, 0.9], y) == 0.75  # one of four pairs mis-ordered
    assert np.isnan(binary_auc([0.1, 0.2], [1, 1]))


def _onehot(i, d=4):
    v = torch.zeros(d)
    v[i] = 1.0
    return v


def test_zero_shot_auc_perfect_and_reversed():
    # axis 0 = "cardiomegaly", axis 1 = "normal"; images with the finding lie closer to axis 0
    prompts = {"cardiomegaly": torch.stack([_onehot(0), _onehot(0) + 0.1 * _onehot(2)]),
               "normal": torch.stack([_onehot(1)])}
    angles = torch.tensor([0.1, 0.3, 1.2, 1.4])
    img = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(4), torch.zeros(4)], dim=1)
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    out = zero_shot_auc(img, prompts, y, label_names=["cardiomegaly", "normal"])
    assert out["per_label"] == {"cardiomegaly": 1.0, "normal": 1.0} and out["mean"] == 1.0
    assert out["n_skipped"] == 0 and out["scores"].shape == (4, 2)
    rev = zero_shot_auc(img, prompts, 1 - y, label_names=["cardiomegaly", "normal"])
    assert rev["mean"] == 0.0
    for reduce in ("mean", "max"):
        assert zero_shot_auc(img, prompts, y, label_names=["cardiomegaly", "normal"], reduce=reduce)["mean"] == 1.0


def test_zero_shot_scores_reading():
    img = F.normalize(torch.tensor([[1.0, 0.5, 0.0], [0.2, 1.0, 0.3]]), dim=1)
    p = {"a": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), "normal": torch.tensor([[0.0, 1.0, 0.0]])}
    s = zero_shot_scores(img, p, ["a", "normal"], reduce="mean")
    centroid = F.normalize(torch.tensor([1.0, 0.0, 1.0]), dim=0)
    sim_a, sim_n = img @ centroid, img[:, 1]
    np.testing.assert_allclose(s[:, 0], (sim_a - sim_n).numpy(), atol=1e-6)
    np.testing.assert_allclose(s[:, 1], (sim_n - sim_a).numpy(), atol=1e-6)
    smax = zero_shot_scores(img, p, ["a"], reduce="max")
    np.testing.assert_allclose(smax[:, 0], (torch.maximum(img[:, 0], img[:, 2]) - sim_n).numpy(), atol=1e-6)
    raw = zero_shot_scores(img, p, ["a"], subtract_normal=False)
    np.testing.assert_allclose(raw[:, 0], sim_a.numpy(), atol=1e-6)


def test_zero_shot_skips_and_errors():
    img = torch.randn(4, 3)
    p = {"a": torch.randn(2, 3), "b": torch.randn(2, 3)}
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    out = zero_shot_auc(img, p, y, label_names=["a", "b"])
    assert out["skipped"] == ["b"] and out["n_skipped"] == 1 and list(out["per_label"]) == ["a"]
    with pytest.raises(ValueError, match="no prompt embeddings"):
        zero_shot_auc(img, p, y, label_names=["a", "c"])
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        zero_shot_auc(img, p, y[:3], label_names=["a", "b"])
    with pytest.raises(ValueError, match="reduce"):
        zero_shot_auc(img, p, y, label_names=["a", "b"], reduce="median")


def test_retrieval_recall_by_hand():
    img = torch.eye(4)  # similarity(image i, text j) = normalised component i of text j
    txt = torch.tensor([[1.0, 0.0, 0.0, 0.0],   # t0 -> img0 first
                        [0.0, 0.2, 1.0, 0.1],   # t1: img2 (0.976) > img1 (0.195) > img3 (0.098)
                        [0.0, 0.9, 1.0, 0.0],   # t2: img2 (0.743) > img1 (0.669)
                        [0.0, 0.0, 0.0, 1.0]])  # t3 -> img3 first
    # image -> text: img0 [t0], img1 [t2 .669, t1 .195], img2 [t1 .976, t2 .743], img3 [t3]
    # text -> image: t0 [img0], t1 [img2, img1], t2 [img2], t3 [img3]
    out = retrieval_recall(img, txt, ks=(1, 2))
    assert out["i2t_R@1"] == 0.5 and out["i2t_R@2"] == 1.0
    assert out["t2i_R@1"] == 0.75 and out["t2i_R@2"] == 1.0
    assert out["i2t_R@1_strict"] == 0.5 and out["n_unique_texts"] == 4
    with pytest.raises(ValueError, match="exceeds"):
        retrieval_recall(img, txt, ks=(5,))
    with pytest.raises(ValueError, match="pair row by row"):
        retrieval_recall(img, txt[:3])


def test_retrieval_identical_text_counts_as_hit():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # images 0/1 retrieve each other's text
    texts = ["No acute disease.", "no  acute   DISEASE.", "Small left effusion."]
    strict = retrieval_recall(img, txt, ks=(1,))
    aware = retrieval_recall(img, txt, texts=texts, ks=(1,))
    assert strict["i2t_R@1"] == pytest.approx(1 / 3) and strict["t2i_R@1"] == pytest.approx(1 / 3)
    assert aware["i2t_R@1"] == 1.0 and aware["t2i_R@1"] == 1.0
    assert aware["i2t_R@1_strict"] == pytest.approx(1 / 3) and aware["n_unique_texts"] == 2
    different = retrieval_recall(img, txt, texts=["a", "b", "c"], ks=(1,))
    assert different["i2t_R@1"] == pytest.approx(1 / 3)


def test_stratified_subsample_has_both_classes():
    rng = np.random.default_rng(0)
    y = (rng.random((500, 4)) < np.array([0.5, 0.02, 0.01, 0.3])).astype(float)
    for seed in range(5):
        idx = stratified_subsample(y, 0.01, seed)
        assert len(set(idx.tolist())) == len(idx) >= 5
        sub = y[idx]
        assert (sub.max(0) == 1).all() and (sub.min(0) == 0).all()
    np.testing.assert_array_equal(stratified_subsample(y, 0.1, 3), stratified_subsample(y, 0.1, 3))
    assert len(stratified_subsample(y, 0.1, 3)) == 50
    assert len(stratified_subsample(y, 1.0, 3)) == 500
    with pytest.raises(ValueError, match="fraction"):
        stratified_subsample(y, 0.0, 0)


def test_linear_probe_separable_and_skips():
    rng = np.random.default_rng(1)
    n, d = 300, 5
    x = rng.normal(size=(n, d))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0.5), np.zeros(n, bool)], 1).astype(float)
    y[:2, 2] = 1  # label 2: positive only in train rows
    tr, te = slice(0, 200), slice(200, None)
    out = linear_probe_auc(x[tr], y[tr], x[te], y[te], fractions=(0.1, 1.0), seeds=(0, 1),
                           label_names=["a", "b", "c"])
    assert set(out) == {0.1, 1.0}
    full = out[1.0]
    assert full["per_label"]["a"] > 0.99 and full["per_label"]["b"] > 0.95
    assert full["skipped_test"] == ["c"] and "c" not in full["per_label"]
    assert full["std"] == 0.0 and full["n_train"] == [200, 200]
    assert out[0.1]["n_train"][0] >= 20 and out[0.1]["mean"] > 0.8
    # random labels -> chance AUC
    noise = linear_probe_auc(x[tr], rng.integers(0, 2, (200, 1)), x[te], rng.integers(0, 2, (100, 1)),
                             fractions=(1.0,))
    assert abs(noise[1.0]["mean"] - 0.5) < 0.15
    with pytest.raises(ValueError, match="binary"):
        linear_probe_auc(x[tr], y[tr] * 2, x[te], y[te])
    with pytest.raises(ValueError, match="same rows"):
        linear_probe_auc(x[tr], y[:10], x[te], y[te])


def test_prompts():
    assert PROMPT_LABELS == LABELS and set(PROMPT_WORDS) == set(LABELS)
    for lab in LABELS:
        prompts = build_prompts(lab)
        assert prompts == all_prompts(lab) and len(prompts) >= 5
        assert len(set(prompts)) == len(prompts) and all(p == " ".join(p.split()) for p in prompts)
    assert "mild cardiomegaly" in build_prompts("cardiomegaly")
    assert "small pleural effusion on the right" in build_prompts("pleural_effusion")
    sub = build_prompts("opacity", n=7, seed=3)
    assert sub == build_prompts("opacity", n=7, seed=3) and len(sub) == 7
    assert sub != build_prompts("opacity", n=7, seed=4)
    full = all_prompts("opacity")
    assert [full.index(p) for p in sub] == sorted(full.index(p) for p in sub)
    with pytest.raises(ValueError, match="unknown label"):
        build_prompts("fracture")
    with pytest.raises(ValueError, match="n must be"):
        build_prompts("edema", n=0)


class _Dual(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 4)

    def encode_image_with_features(self, x):
        f = x.flatten(1)
        return F.normalize(self.lin(f), dim=1), f

    def encode_image(self, x):
        return self.encode_image_with_features(x)[0]

    def encode_text(self, texts):
        return F.normalize(torch.tensor([[len(t), 1.0, 0.0, 0.0] for t in texts]), dim=1)


def test_embed_dataset_in_order():
    items = [{"image": torch.full((1, 4, 4), float(i)), "text": "x" * (i + 1), "labels": torch.tensor([i % 2.0])}
             for i in range(5)]
    model = _Dual().train()
    out = embed(model, items, batch_size=2, device="cpu")
    assert out["image_emb"].shape == (5, 4) and out["image_feat"].shape == (5, 16)
    assert out["texts"] == [it["text"] for it in items] and out["labels"].shape == (5, 1)
    torch.testing.assert_close(out["image_feat"][3], torch.full((16,), 3.0))
    assert model.training  # mode restored
    with pytest.raises(TypeError, match="encode_image"):
        embed(nn.Linear(1, 1), items)


def test_embed_unwraps_methods():
    class Method(nn.Module):
        def __init__(self):
            super().__init__()
            self.online = _Dual()

        def encode_image(self, x):
            return self.online.encode_image(x)

        def encode_text(self, texts):
            return self.online.encode_text(texts)

    items = [{"image": torch.rand(1, 4, 4), "text": "abc"} for _ in range(3)]
    out = embed(Method(), items, device="cpu")
    assert out["image_feat"].shape == (3, 16) and "labels" not in out


def test_class_precision_at_k_against_a_hand_count_chance_and_oracle():
    from medvlp_lib.eval import class_precision_at_k

    # 6 items, finding sets A A A B B C; embeddings on a line so the ranking is known
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 1]])
    img = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [0.0, 1.0], [0.1, 1.0], [0.7, 0.7]])
    out = class_precision_at_k(img, img.clone(), labels, ks=(1, 3))
    assert out["n_groups"] == 3
    # perfect embedding: every query's nearest items are its own set as far as it goes
    assert out["i2t_P@1"] == pytest.approx(1.0) and out["t2i_P@1"] == pytest.approx(1.0)
    assert out["oracle_P@3"] == pytest.approx((3 * 1.0 + 2 * (2 / 3) + 1 * (1 / 3)) / 6)
    assert out["chance_P@1"] == pytest.approx((3 * 3 / 6 + 2 * 2 / 6 + 1 / 6) / 6)
    assert out["i2t_P@3"] <= out["oracle_P@3"] + 1e-12
    # a reversed text space: image queries now find the wrong sets first
    bad = class_precision_at_k(img, torch.flip(img, [1]), labels, ks=(1,))
    assert bad["i2t_P@1"] < out["i2t_P@1"]
    with pytest.raises(ValueError, match="binary"):
        class_precision_at_k(img, img, np.full((6, 2), 2), ks=(1,))
    with pytest.raises(ValueError, match="ks must be"):
        class_precision_at_k(img, img, labels, ks=(7,))
