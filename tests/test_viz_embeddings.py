"""medvlp_lib.viz.embeddings (t-SNE / UMAP projections, silhouettes, panels) and medvlp_lib.viz.attention."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from medvlp_lib.viz import (attention_overlays, embedding_panels, project_2d, silhouette, token_attention_grid,
                            token_attention_maps, upsample_maps)


def _blobs(n_per=20, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 6 * np.eye(3, d)
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    y = np.repeat(np.arange(3), n_per)
    return x, y


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_project_2d_shape_and_determinism(method):
    if method == "umap":
        pytest.importorskip("umap")  # umap-learn comes with the book extra
    x, y = _blobs()
    a = project_2d(x, method, seed=3, perplexity=10, n_neighbors=10)
    b = project_2d(x, method, seed=3, perplexity=10, n_neighbors=10)
    assert a.shape == (len(x), 2) and a.dtype == np.float64
    np.testing.assert_allclose(a, b)
    assert silhouette(a, y) > 0.5  # well separated blobs stay separated in 2-D


def test_project_2d_matches_the_experiment_tsne():
    """Same settings as medvlp_lib.experiments.adaptor.silhouettes (PCA init, clipped perplexity)."""
    from sklearn.manifold import TSNE

    x, _ = _blobs(n_per=10)
    ref = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=1).fit_transform(x)
    np.testing.assert_allclose(project_2d(x, "tsne", seed=1, perplexity=30.0), ref)


def test_project_2d_bad_arguments_name_the_argument():
    x, _ = _blobs()
    with pytest.raises(ValueError, match="method"):
        project_2d(x, "pca")
    with pytest.raises(TypeError, match="seed"):
        project_2d(x, "tsne", seed=0.5)
    with pytest.raises(ValueError, match="x must be a 2-D"):
        project_2d(x[0], "tsne")
    with pytest.raises(ValueError, match="x needs at least"):
        project_2d(x[:2], "tsne")
    with pytest.raises(ValueError, match="perplexity"):
        project_2d(x, "tsne", perplexity=0)
    with pytest.raises(ValueError, match="n_neighbors"):
        project_2d(x, "umap", n_neighbors=1)
    with pytest.raises(ValueError, match="NaN"):
        project_2d(np.full((10, 3), np.nan), "tsne")


def test_silhouette_ignores_negative_labels_and_checks_inputs():
    x, y = _blobs()
    y2 = y.copy()
    y2[:5] = -1
    assert silhouette(x, y2, metric="cosine") == pytest.approx(silhouette(x[5:], y[5:], metric="cosine"))
    with pytest.raises(ValueError, match="labels must have shape"):
        silhouette(x, y[:-1])
    with pytest.raises(ValueError, match="classes"):
        silhouette(x, np.zeros(len(x), int))


def test_embedding_panels():
    x, y = _blobs(n_per=5)
    coords = {"a": x[:, :2], "b": x[:, 2:4], "c": x[:, 4:6], "d": x[:, :2]}
    y = y.copy()
    y[0] = -1
    fig = embedding_panels(coords, y, ["normal", "opacity", "effusion"], scores={"a": 0.1234}, ncols=3)
    assert len(fig.axes) == 6  # 2 x 3 grid, two unused panels switched off
    assert "+0.123" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match=r"coords\['a'\] must be \[n, 2\]"):
        embedding_panels({"a": x}, y, ["n", "o", "e"])
    with pytest.raises(ValueError, match="class_names"):
        embedding_panels({"a": x[:, :2]}, y, ["n"])
    with pytest.raises(ValueError, match="coords is empty"):
        embedding_panels({}, y, ["n"])


def test_upsample_maps_keeps_the_pointing_game_argmax():
    from medvlp_lib.eval.segmentation import pointing_game

    maps = torch.zeros(2, 4, 4)
    maps[0, 3, 0] = 1.0
    maps[1, 0, 3] = 1.0
    up = upsample_maps(maps, (64, 64))
    assert up.shape == (2, 64, 64)
    masks = np.zeros((2, 64, 64), bool)
    for k in range(2):
        r, c = np.unravel_index(up[k].argmax(), (64, 64))
        masks[k, r, c] = True
    assert pointing_game(maps, masks)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="maps must be"):
        upsample_maps(torch.zeros(1, 1, 4, 4), (8, 8))


def test_attention_overlays_and_token_grid():
    rng = np.random.default_rng(0)
    imgs = [rng.random((32, 32)) for _ in range(3)]
    masks = [np.zeros((32, 32), bool) for _ in range(3)]
    masks[0][20:, :8] = True
    maps = {"adaptor": rng.random((3, 4, 4)), "adaptor (0.5/0.5)": rng.random((3, 4, 4))}
    fig = attention_overlays(imgs, maps, masks, titles=["a", "b", "c"])
    assert len(fig.axes) == 9
    with pytest.raises(ValueError, match="maps\\['adaptor'\\] has 2 maps"):
        attention_overlays(imgs, {"adaptor": rng.random((2, 4, 4))}, masks)
    fig = token_attention_grid(imgs[0], rng.random((5, 4, 4)), ["[CLS]", "small", "left", "effusion", "[SEP]"],
                               mask=masks[0], ncols=2)
    assert [a.get_title() for a in fig.axes if a.get_title()] == ["small", "left", "effusion"]
    with pytest.raises(ValueError, match="tokens has 2"):
        token_attention_grid(imgs[0], rng.random((5, 4, 4)), ["a", "b"])


def test_token_attention_maps_one_map_per_real_token():
    from medvlp_lib.models.adaptor import Adaptor

    torch.manual_seed(0)
    ad = Adaptor(6, 5, width=16, embed_dim=8, num_layers=2, num_heads=2)
    v, t = torch.randn(1, 4, 6), torch.randn(1, 7, 5)
    mask = torch.tensor([[True] * 5 + [False] * 2])
    maps = token_attention_maps(ad, v, t, mask, (2, 2))
    assert maps.shape == (5, 2, 2)
    torch.testing.assert_close(maps.flatten(1).sum(1), torch.ones(5))
    assert ad.training  # mode restored
    with pytest.raises(ValueError, match="batch 1"):
        token_attention_maps(ad, torch.randn(2, 4, 6), torch.randn(2, 7, 5), None, (2, 2))
