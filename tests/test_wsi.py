"""Tests for the WSI models: exact k-NN graph, GATv2 slide encoder, omics MLPs, MIL baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp_lib.models.mil import ABMIL, MeanPoolMIL
from medvlp_lib.models.wsi import (GATv2SlideEncoder, OmicsDecoder, OmicsEncoder, ProjectionHead, knn_graph,
                                   knn_graph_bruteforce)


def _neighbour_distances(coords, edge_index, n, k):
    c = np.asarray(coords, dtype=float)
    src, dst = edge_index.numpy()
    assert (np.diff(dst) >= 0).all() and np.bincount(dst, minlength=n).tolist() == [k] * n
    d = np.linalg.norm(c[src] - c[dst], axis=1).reshape(n, k)
    return np.sort(d, axis=1)


@pytest.mark.parametrize("method", ["kdtree", "torch"])
@pytest.mark.parametrize("seed", [0, 1])
def test_knn_matches_bruteforce_with_ties(method, seed):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(30), np.arange(25)), -1).reshape(-1, 2) * 256  # many ties
    coords = grid[rng.permutation(len(grid))[:500]]
    k = 8
    e = knn_graph(coords, k, method=method, chunk_size=128)
    ref = knn_graph_bruteforce(coords, k)
    assert e.shape == (2, 500 * k) and e.dtype == torch.long
    assert not (e[0] == e[1]).any()  # no self loops
    np.testing.assert_allclose(_neighbour_distances(coords, e, 500, k), _neighbour_distances(coords, ref, 500, k))
    # each neighbour set is a valid k-NN set: no non-neighbour is strictly closer than the k-th
    d_all = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(d_all, np.inf)
    kth = np.sort(d_all, 1)[:, k - 1]
    chosen = np.zeros_like(d_all, dtype=bool)
    chosen[e[1].numpy(), e[0].numpy()] = True
    assert not ((d_all < kth[:, None] - 1e-9) & ~chosen).any()


def test_knn_random_float_coords_exact():
    coords = np.random.default_rng(3).uniform(0, 1e4, (700, 2))
    a, b = knn_graph(coords, 5), knn_graph_bruteforce(coords, 5)
    assert torch.equal(a[1], b[1])
    assert (a[0].reshape(-1, 5).sort(1).values == b[0].reshape(-1, 5).sort(1).values).all()


def test_knn_pyg_convention_small_hand_case():
    coords = torch.tensor([[0, 0], [1, 0], [10, 0], [12, 0]])
    e = knn_graph(coords, 1)
    # source = neighbour, target = centre
    assert e.tolist() == [[1, 0, 3, 2], [0, 1, 2, 3]]


def test_knn_edge_cases():
    assert knn_graph(np.zeros((1, 2)), 8).shape == (2, 0)
    e = knn_graph(np.array([[0, 0], [5, 5], [9, 9]]), 8)  # k > N - 1: all other nodes
    assert e.shape == (2, 6) and not (e[0] == e[1]).any()
    dup = np.array([[0, 0], [0, 0], [0, 0], [3, 3]])  # duplicated coordinates: still no self loops
    e = knn_graph(dup, 2)
    assert not (e[0] == e[1]).any() and e.shape == (2, 8)
    with pytest.raises(ValueError, match="coords must be"):
        knn_graph(np.zeros(5), 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn_graph(np.zeros((5, 2)), 0)
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(np.array([[0.0, np.nan], [1, 1]]), 1)
    with pytest.raises(ValueError, match="method must be"):
        knn_graph(np.zeros((5, 2)), 1, method="faiss")


def test_knn_on_a_20k_grid_links_the_eight_touching_patches():
    """Correctness at scale (speed is the benchmark's job, ``benchmarks/bench_knn.py``): on a 150 x 140
    grid of 256-px patches, every interior patch's 8 nearest neighbours are exactly the 8 patches touching it
    (4 at one step, 4 diagonal), edges pointing neighbour -> centre."""
    w, h = 150, 140
    coords = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).reshape(-1, 2) * 256
    e = knn_graph(coords, 8).numpy()
    assert e.shape == (2, len(coords) * 8)
    src, dst = e
    g = coords // 256
    interior = (g[:, 0] > 0) & (g[:, 0] < w - 1) & (g[:, 1] > 0) & (g[:, 1] < h - 1)
    sel = interior[dst]
    step = np.abs(g[src[sel]] - g[dst[sel]])
    assert step.max() == 1 and (step.sum(1) > 0).all()  # a touching patch, never the patch itself
    per_node = np.bincount(dst[sel], minlength=len(coords))[interior]
    assert (per_node == 8).all()
    pairs = set(zip(src[sel].tolist(), dst[sel].tolist()))
    assert len(pairs) == sel.sum()  # 8 distinct touching neighbours each


def test_gatv2_without_pyg_lib():
    # GATv2Conv needs no pyg-lib / torch-scatter wheels (this venv has neither)
    torch.manual_seed(0)
    enc = GATv2SlideEncoder(12, hidden_dim=16, heads=2, dropout=0.0).eval()
    coords = np.random.default_rng(0).integers(0, 20, (40, 2))
    x = torch.randn(40, 12)
    e = knn_graph(coords, 8)
    h = enc(x, e)
    assert h.shape == (40, 16) and torch.isfinite(h).all()
    # output is the element-wise max of the two residual layers
    h1 = enc.act(enc.ln1(enc.gat1(x, e))) + enc.res1(x)
    h2 = enc.act(enc.ln2(enc.gat2(h1, e))) + h1
    torch.testing.assert_close(h, torch.maximum(h1, h2))
    assert (h >= h1 - 1e-6).all()
    # graph matters: a node's output changes when its neighbourhood changes
    e2 = knn_graph(coords, 2)
    assert not torch.allclose(enc(x, e2), h)
    # permutation equivariance
    perm = torch.randperm(40)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(40)
    torch.testing.assert_close(enc(x[perm], inv[e]), h[perm], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"patch features must be \[N, 12\]"):
        enc(torch.randn(5, 3), e)
    with pytest.raises(ValueError, match="divisible"):
        GATv2SlideEncoder(4, hidden_dim=15, heads=2)


def test_omics_and_projection():
    enc, dec, proj = OmicsEncoder(30, 16, 32), OmicsDecoder(30, 16, 32), ProjectionHead(16, 8)
    z = enc(torch.randn(30))
    assert z.shape == (1, 16) and dec(z).shape == (1, 30)
    p = proj(torch.randn(4, 16))
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(4))
    with pytest.raises(ValueError, match="omics must be"):
        enc(torch.randn(2, 29))


def test_abmil_matches_naive_gated_attention():
    torch.manual_seed(0)
    m = ABMIL(6, hidden_dim=8, attn_dim=4, dropout=0.0).eval()
    x = torch.randn(11, 6)
    out = m(x)
    h = torch.relu(m.fc[0](x))
    s = (torch.tanh(h @ m.attn_v.weight.T + m.attn_v.bias) * torch.sigmoid(h @ m.attn_u.weight.T + m.attn_u.bias)
         ) @ m.attn_w.weight.T + m.attn_w.bias
    a = torch.softmax(s.squeeze(1), 0)
    torch.testing.assert_close(out["attention"], a)
    torch.testing.assert_close(out["logits"], m.classifier((a[:, None] * h).sum(0)))
    perm = torch.randperm(11)
    torch.testing.assert_close(m(x[perm])["logits"], out["logits"], atol=1e-6, rtol=1e-5)
    step = m.train().training_step({"features": x, "label": torch.tensor(1)})
    step["loss"].backward()
    assert m.attn_w.weight.grad is not None and step["ce"] > 0
    pred = m.predict(x)
    assert 0 <= pred["prob"] <= 1 and pred["attention"].shape == (11,)


def test_mean_pool():
    m = MeanPoolMIL(5, hidden_dim=7, dropout=0.0).eval()
    x = torch.randn(9, 5)
    out = m(x)
    torch.testing.assert_close(out["logits"], m.classifier(m.fc(x).mean(0)))
    torch.testing.assert_close(out["attention"].sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="non-empty"):
        m(torch.zeros(0, 5))


def test_gatv2_chunked_inference_is_exact():
    torch.manual_seed(1)
    enc = GATv2SlideEncoder(6, hidden_dim=8, heads=2, dropout=0.0).eval()
    coords = np.stack(np.meshgrid(np.arange(20), np.arange(15)), -1).reshape(-1, 2) * 256
    x = torch.randn(len(coords), 6)
    e = knn_graph(coords, 8)
    e = e[:, torch.randperm(e.shape[1])]  # any edge order
    with torch.no_grad():
        full = enc(x, e)
        for chunk in (7, 64, 299, 300, 1000):
            torch.testing.assert_close(enc(x, e, chunk_size=chunk), full, atol=1e-5, rtol=1e-5)


def test_knn_public_code_direction_reverses_the_edges_and_changes_the_in_degree():
    """'public_code' is the public MoMKD code's [centre; neighbour] rows: every patch still *sends* to its own k
    neighbours' side, but receives from the patches that chose it, so in-degrees vary while out-degrees are k."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (60, 2))
    gather = knn_graph(xy, 4)
    public = knn_graph(xy, 4, direction="public_code")
    assert torch.equal(public, gather.flip(0))
    assert torch.bincount(gather[1], minlength=60).tolist() == [4] * 60       # each centre hears its 4 neighbours
    indeg = torch.bincount(public[1], minlength=60)
    assert int(indeg.sum()) == 240 and int(indeg.min()) != int(indeg.max())   # uneven under the code's edges
    with pytest.raises(ValueError, match="direction"):
        knn_graph(xy, 4, direction="both")
