"""Whole-slide-image models: exact k-NN patch graph, GATv2 slide encoder, omics encoder/decoder, projections.

MoMKD (2602.21395) encodes a slide as a graph whose nodes are patches (frozen foundation-model features)
and whose edges join each patch to its ``k = 8`` nearest patches in the slide plane; two GATv2 layers
(2 heads) with residuals and LayerNorm contextualise the patches, and the output is the element-wise
max of the two layers (jumping-knowledge "max"). Omics vectors go through an MLP encoder, with a decoder
reconstructing the input. Both branches are projected and L2-normalised into a shared space, so inner
products are cosines.

``torch_geometric.nn.knn_graph`` needs the optional ``pyg-lib``/``torch-cluster`` wheels, which are not
installable everywhere; :func:`knn_graph` here is exact and needs only SciPy (KD-tree) or plain torch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["knn_graph", "knn_graph_bruteforce", "EDGE_DIRECTIONS", "GATv2SlideEncoder", "OmicsEncoder", "OmicsDecoder",
           "ProjectionHead"]


def _coords_numpy(coords) -> np.ndarray:
    if isinstance(coords, torch.Tensor):
        coords = coords.detach().cpu().numpy()
    coords = np.asarray(coords)
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if coords.ndim != 2 or coords.shape[1] < 1:
        raise ValueError(f"coords must be [N, 2] (or [N, d]), got shape {coords.shape}")
    if not np.issubdtype(coords.dtype, np.number):
        raise TypeError(f"coords must be numeric, got dtype {coords.dtype}")
    if coords.size and not np.isfinite(coords).all():
        raise ValueError("coords contain NaN or inf")
    return coords.astype(np.float64, copy=False)


EDGE_DIRECTIONS = ("gather", "public_code")


def knn_graph(coords, k: int = 8, *, method: str = "kdtree", chunk_size: int = 2048,
              direction: str = "gather") -> torch.Tensor:
    """Exact k-nearest-neighbour graph of patch coordinates, without pyg-lib.

    Returns ``edge_index`` [2, N * k'] (int64) in PyG's ``flow="source_to_target"`` convention (row 0 sends,
    row 1 receives), ``k' = min(k, N - 1)`` neighbours per patch, no self loops, edges grouped by patch in
    increasing order. Distances are Euclidean; among tied neighbours any choice is exact. ``direction``:

    * ``"gather"`` (default, the paper's "each patch aggregates its k nearest neighbours"): rows
      ``[neighbour; centre]``, so every patch receives messages from exactly its own k neighbours;
    * ``"public_code"``: rows ``[centre; neighbour]``, what ``kneighbors_graph(coords, k).nonzero()`` gives in
      the public MoMKD code; under PyG's flow each patch then receives from the patches that list *it* among
      their k neighbours (in-degree varies, e.g. 3-13, instead of exactly k).

    ``method="kdtree"`` (default) uses ``scipy.spatial.cKDTree`` (100,000 patches in well under a second);
    ``method="torch"`` is a chunked ``cdist`` + ``topk`` over all points (O(N^2) time, O(chunk * N) memory;
    a reference and a fallback without SciPy).
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if direction not in EDGE_DIRECTIONS:
        raise ValueError(f"direction must be one of {EDGE_DIRECTIONS}, got {direction!r}")
    pts = _coords_numpy(coords)
    n = pts.shape[0]
    kk = min(int(k), n - 1)
    if kk <= 0:
        return torch.empty(2, 0, dtype=torch.long)
    if method == "kdtree":
        from scipy.spatial import cKDTree

        tree = cKDTree(pts)
        _, idx = tree.query(pts, k=kk + 1, workers=1)
        idx = np.asarray(idx, dtype=np.int64).reshape(n, kk + 1)
        centre = np.arange(n)[:, None]
        is_self = idx == centre
        # drop self (normally in column 0; with duplicate coordinates it may be elsewhere or missing)
        has_self = is_self.any(1)
        drop = np.where(has_self, is_self.argmax(1), kk)
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(n), drop] = False
        nbr = idx[keep].reshape(n, kk)
    elif method == "torch":
        x = torch.from_numpy(pts)
        parts = []
        for s in range(0, n, chunk_size):
            d = torch.cdist(x[s:s + chunk_size], x)
            d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
            parts.append(d.topk(kk, dim=1, largest=False).indices)
        nbr = torch.cat(parts).numpy()
    else:
        raise ValueError(f"method must be 'kdtree' or 'torch', got {method!r}")
    nbrs = torch.from_numpy(np.ascontiguousarray(nbr.reshape(-1), dtype=np.int64))
    centres = torch.arange(n, dtype=torch.long).repeat_interleave(kk)
    return torch.stack([nbrs, centres] if direction == "gather" else [centres, nbrs])


def knn_graph_bruteforce(coords, k: int = 8) -> torch.Tensor:
    """Naive O(N^2) reference (full distance matrix); for tests only."""
    pts = torch.from_numpy(_coords_numpy(coords))
    n = pts.shape[0]
    kk = min(k, n - 1)
    d = torch.cdist(pts, pts)
    d.fill_diagonal_(float("inf"))
    nbr = d.topk(kk, dim=1, largest=False).indices
    return torch.stack([nbr.reshape(-1), torch.arange(n).repeat_interleave(kk)])


class GATv2SlideEncoder(nn.Module):
    """Two GATv2 layers with residuals and LayerNorm; output = element-wise max of the two layers.

    ``h1 = x' + drop(act(LN1(GATv2_1(x, E))))`` with ``x' = W_res x`` (identity if dims match),
    ``h2 = h1 + drop(act(LN2(GATv2_2(h1, E))))``, output ``max(h1, h2)`` [N, hidden_dim]
    (MoMKD Sec. 3; the public code's ``WsiEncoder``). Each layer has ``heads`` heads of
    ``hidden_dim // heads`` channels, concatenated. GATv2Conv adds self loops.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, heads: int = 2, dropout: float = 0.25) -> None:
        super().__init__()
        from torch_geometric.nn import GATv2Conv

        if hidden_dim % heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by heads ({heads})")
        self.in_dim, self.out_dim, self.dropout = in_dim, hidden_dim, dropout
        self.gat1 = GATv2Conv(in_dim, hidden_dim // heads, heads=heads, dropout=dropout, add_self_loops=True)
        self.gat2 = GATv2Conv(hidden_dim, hidden_dim // heads, heads=heads, dropout=dropout, add_self_loops=True)
        self.res1 = nn.Linear(in_dim, hidden_dim) if in_dim != hidden_dim else nn.Identity()
        self.ln1 = nn.LayerNorm(hidden_dim)
        self.ln2 = nn.LayerNorm(hidden_dim)
        self.act = nn.ELU()

    @staticmethod
    def _conv_chunked(conv: nn.Module, x: torch.Tensor, edge_index: torch.Tensor, chunk: int) -> torch.Tensor:
        """``conv(x, edge_index)`` computed for ``chunk`` target nodes at a time (same result, memory
        O(chunk * k) instead of O(E)). Each chunk is a bipartite call ``conv((x[S], x[T]), E_T)`` with the
        targets ``T`` first in the source list ``S``, so GATv2Conv's own self loops land on (t, t)."""
        n = x.shape[0]
        src, dst = edge_index
        order = torch.argsort(dst, stable=True)
        src, dst = src[order], dst[order]
        starts = torch.arange(0, n, chunk, device=dst.device)
        lo = torch.searchsorted(dst, starts).tolist()
        hi = torch.searchsorted(dst, (starts + chunk).clamp_max(n)).tolist()
        local = torch.full((n,), -1, dtype=torch.long, device=x.device)
        outs = []
        for i, a in enumerate(starts.tolist()):
            b = min(a + chunk, n)
            s, d = src[lo[i]:hi[i]], dst[lo[i]:hi[i]]
            us = torch.unique(s)
            nodes = torch.cat([torch.arange(a, b, device=x.device), us[(us < a) | (us >= b)]])
            local[nodes] = torch.arange(nodes.numel(), device=x.device)
            outs.append(conv((x[nodes], x[a:b]), torch.stack([local[s], d - a])))
            local[nodes] = -1
        return torch.cat(outs)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """``x`` [N, in_dim], ``edge_index`` [2, E] -> [N, hidden_dim]. ``chunk_size`` (inference) runs each
        GATv2 layer on that many target nodes at a time: identical output, bounded memory on 100k-patch
        slides."""
        if x.dim() == 3 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"patch features must be [N, {self.in_dim}], got {tuple(x.shape)}")
        if edge_index.dim() == 3 and edge_index.shape[0] == 1:
            edge_index = edge_index[0]
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(edge_index.shape)}")
        edge_index = edge_index.long()
        def conv(layer: nn.Module, inp: torch.Tensor) -> torch.Tensor:
            if chunk_size is not None and inp.shape[0] > chunk_size:
                return self._conv_chunked(layer, inp, edge_index, int(chunk_size))
            return layer(inp, edge_index)

        h1 = self.act(self.ln1(conv(self.gat1, x)))
        h1 = F.dropout(h1, self.dropout, self.training) + self.res1(x)
        h2 = self.act(self.ln2(conv(self.gat2, h1)))
        h2 = F.dropout(h2, self.dropout, self.training) + h1
        return torch.maximum(h1, h2)


class OmicsEncoder(nn.Module):
    """MLP ``G -> hidden -> out``: Linear, LayerNorm, ReLU, Dropout, Linear (the public code's RnaEncoder)."""

    def __init__(self, in_dim: int, out_dim: int = 256, hidden_dim: int = 512, dropout: float = 0.25) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            x = x[None]
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"omics must be [B, {self.in_dim}] (or [{self.in_dim}]), got {tuple(x.shape)}")
        return self.net(x)


class OmicsDecoder(nn.Module):
    """Mirror of :class:`OmicsEncoder`: ``out -> hidden -> G`` (reconstruction for the MSE loss)."""

    def __init__(self, out_dim: int, latent_dim: int = 256, hidden_dim: int = 512, dropout: float = 0.25) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ProjectionHead(nn.Module):
    """Linear (or 2-layer MLP if ``hidden_dim``) projection followed by L2 normalisation onto the sphere."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Linear(in_dim, out_dim) if hidden_dim is None else nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)
