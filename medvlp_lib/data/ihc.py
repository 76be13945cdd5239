"""A real tissue picture for the MoMKD heat maps: scikit-image's immunohistochemistry image, tiled and embedded.

The simulated cohorts of :mod:`medvlp_lib.data.pathology` have a known answer but no picture. This module
turns the one real histology image that ships *inside* scikit-image (``skimage/data/ihc.png``, 512 x 512 RGB:
colon tissue stained with DAB, brown, for a membrane marker and counter-stained with hematoxylin, blue
nuclei) into something the same pipeline can train on and draw over:

1. :func:`ihc_image` reads the file from disk (never a download);
2. :func:`tile_image` cuts it into ``patch`` x ``patch`` tiles with level-0 (x, y) coordinates of their
   top-left corners, as a CLAM-style patching would;
3. :func:`tile_dab` / :func:`dab_mask` give each tile a ground truth from the stain itself: the mean DAB
   optical density of its pixels (colour deconvolution, :func:`skimage.color.rgb2hed`), thresholded;
4. :func:`medvlp_lib.models.tile_encoder.embed_tiles` embeds the tiles with a small image encoder (default: a
   3-layer CNN trained for a few CPU-seconds with SimCLR on these tiles; or a timm model by name) -- model
   code lives in ``medvlp_lib.models``, this module only takes the features;
5. :func:`ihc_cohort` draws "slides" = bags of tiles (random mixtures of stained and unstained tiles, or
   square crops of the tile grid), with a bag label from their DAB-positive tiles, ``signal_mask`` = the
   DAB-positive tiles and a **simulated** omics vector drawn from the label, so
   :func:`medvlp_lib.experiments.momkd.fit_method` trains on it unchanged; the whole image is kept as one
   more :class:`~medvlp_lib.data.pathology.Slide` for the final heat map.

What this is and is not. The tissue and the stain are real; the *task* is a proxy with a known answer:
the bag label is computed from the DAB channel (the same quantity as the patch ground truth), and the omics
vector is simulated from that label with the pathology simulator's gene-module generator (it carries the
label plus noise and nothing else). It answers "does the attention of a model trained on real tissue
features land on the stained tissue?", not "does MoMKD predict a molecular status from H&E".
"""
from __future__ import annotations

import math

import numpy as np

from ..utils import check_seed
from .natural import skimage_data_dir
from .pathology import Cohort, CohortConfig, Slide, simulate_omics

__all__ = ["ihc_image", "tile_image", "check_tiles", "tile_dab", "dab_threshold", "dab_mask", "ihc_cohort",
           "IHC_FILE"]

IHC_FILE = "ihc.png"
"""File name of the immunohistochemistry image inside scikit-image's data folder."""


# --------------------------------------------------------------------------------------------- image + tiles
def ihc_image() -> np.ndarray:
    """The 512 x 512 RGB immunohistochemistry image bundled with scikit-image, ``uint8 [512, 512, 3]``.

    Read from ``skimage/data/ihc.png`` on disk (the same array as ``skimage.data.immunohistochemistry()``,
    without going through scikit-image's fetcher, so nothing can be downloaded)."""
    from PIL import Image

    path = skimage_data_dir() / IHC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the immunohistochemistry image ships inside scikit-image's "
                                f"package data; reinstall scikit-image (pip install --force-reinstall scikit-image)")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def tile_image(img: np.ndarray, patch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Cut an ``[H, W, C]`` image into non-overlapping ``patch`` x ``patch`` tiles, row by row.

    Returns ``tiles [N, patch, patch, C]`` (same dtype as ``img``) and ``coords [N, 2]`` int64 = level-0
    (x, y) of each tile's top-left corner, ``N = (H // patch) * (W // patch)``; a remainder at the right /
    bottom edge that does not fill a whole tile is dropped. ``img[y:y+patch, x:x+patch] == tiles[i]``.
    """
    img = np.asarray(img)
    if img.ndim != 3:
        raise ValueError(f"img must be an [H, W, C] image (e.g. RGB), got shape {img.shape}")
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be a positive integer (tile side in pixels), got {patch!r}")
    h, w, c = img.shape
    if patch > min(h, w):
        raise ValueError(f"patch={patch} is larger than the image ({h} x {w}): no whole tile fits")
    rows, cols = h // patch, w // patch
    tiles = (img[: rows * patch, : cols * patch]
             .reshape(rows, patch, cols, patch, c).transpose(0, 2, 1, 3, 4).reshape(rows * cols, patch, patch, c))
    yy, xx = np.divmod(np.arange(rows * cols), cols)
    coords = np.stack([xx * patch, yy * patch], axis=1).astype(np.int64)
    return np.ascontiguousarray(tiles), coords


def check_tiles(tiles) -> np.ndarray:
    """``tiles`` as an array, checked to be a non-empty RGB stack ``[N, p, p, 3]`` (else ``ValueError``)."""
    t = np.asarray(tiles)
    if t.ndim != 4 or t.shape[-1] != 3 or t.shape[0] == 0:
        raise ValueError(f"tiles must be a non-empty RGB array [N, p, p, 3], got shape {t.shape}")
    return t


def tile_dab(tiles) -> np.ndarray:
    """Mean DAB optical density of each tile, float ``[N]`` (channel 2 of :func:`skimage.color.rgb2hed`:
    Ruifrok & Johnston colour deconvolution into hematoxylin, eosin, DAB)."""
    from skimage.color import rgb2hed

    t = check_tiles(tiles)
    n, p, q, _ = t.shape
    hed = rgb2hed(t.reshape(n * p, q, 3))  # rgb2hed works per pixel: stack the tiles as one tall image
    return hed[..., 2].reshape(n, p * q).mean(1)


def dab_threshold(dab: np.ndarray) -> float:
    """Otsu's threshold of per-tile DAB densities (the default cut of :func:`dab_mask`).

    Why Otsu: on the IHC image the per-tile mean DAB density is clearly bimodal (stroma and nuclei around
    0.01, the stained epithelium around 0.06-0.12 at 16-px tiles); Otsu's method puts the cut in the valley
    between the two modes (about 0.05 there) without a hand-tuned number, and adapts to the tile size.
    Otsu's criterion (maximal between-class variance) is evaluated exactly over every split of the sorted
    values, and the cut is the midpoint of the best gap (a histogram-based Otsu can cut inside a cluster
    when there are few tiles)."""
    d = np.sort(np.asarray(dab, dtype=float).ravel())
    if d.size < 2 or not np.isfinite(d).all() or d[0] == d[-1]:
        raise ValueError("Otsu's threshold needs at least two finite tiles with different DAB densities")
    n = d.size
    k = np.arange(1, n)  # class 0 = the k smallest values
    cs = np.cumsum(d)[:-1]
    m0, m1 = cs / k, (d.sum() - cs) / (n - k)
    between = (k / n) * (1 - k / n) * (m0 - m1) ** 2
    between[d[1:] == d[:-1]] = -np.inf  # no cut between equal values
    j = int(np.argmax(between))
    return float((d[j] + d[j + 1]) / 2)


def dab_mask(tiles, quantile: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Ground truth per tile: True where the tile's mean DAB optical density (:func:`tile_dab`) is high.

    Cut (give at most one): ``threshold`` = an absolute optical density; ``quantile`` = the fraction of tiles
    to call *negative* (``quantile=0.75`` keeps the 25 % most stained); neither = Otsu's threshold
    (:func:`dab_threshold`, see there why). Returns bool ``[N]``."""
    if quantile is not None and threshold is not None:
        raise ValueError("give either quantile or threshold, not both")
    dab = tile_dab(tiles)
    if threshold is not None:
        if not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a finite optical density >= 0, got {threshold!r}")
        cut = float(threshold)
    elif quantile is not None:
        if not 0 <= quantile < 1:
            raise ValueError(f"quantile must be in [0, 1) (share of tiles called negative), got {quantile!r}")
        cut = float(np.quantile(dab, quantile))
    else:
        cut = dab_threshold(dab)
    return dab > cut


# --------------------------------------------------------------------------------------------- cohort
def _crop_indices(grid_cols: int, r0: int, c0: int, crop: int) -> np.ndarray:
    rr, cc = np.mgrid[r0:r0 + crop, c0:c0 + crop]
    return (rr * grid_cols + cc).ravel()


def _positive_cut(dab: np.ndarray, dab_quantile: float | None, dab_cut: float | None) -> float:
    if dab_quantile is not None and dab_cut is not None:
        raise ValueError("give either dab_quantile or dab_cut (or neither for Otsu's cut), not both")
    if dab_cut is not None:
        if not np.isfinite(dab_cut) or dab_cut < 0:
            raise ValueError(f"dab_cut must be a finite optical density >= 0, got {dab_cut!r}")
        return float(dab_cut)
    if dab_quantile is not None:
        if not 0 <= dab_quantile < 1:
            raise ValueError(f"dab_quantile must be in [0, 1), got {dab_quantile!r}")
        return float(np.quantile(dab, dab_quantile))
    return dab_threshold(dab)


def ihc_cohort(features: np.ndarray, n_bags: int = 64, bag_size: int = 64, seed: int = 0, *, bags: str = "mixture",
               patch: int = 16, image: np.ndarray | None = None, encoder_info: dict | None = None,
               dab_quantile: float | None = 0.8, dab_cut: float | None = None, witnesses: tuple[int, int] = (4, 16),
               label_share: float | None = None, test_frac: float = 0.5, n_genes: int = 64, n_modules: int = 8,
               omics_strength: float = 2.0, omics_noise: float = 0.5, name: str = "ihc") -> Cohort:
    """Bags of real IHC tiles for MIL / MoMKD: a :class:`~medvlp_lib.data.pathology.Cohort` of ``n_bags`` bags.

    * Tiles: ``image`` (default :func:`ihc_image`) cut by :func:`tile_image` into ``patch``-px tiles; tile
      features = ``features`` ``[N, D]`` for that tiling, e.g. from
      :func:`medvlp_lib.models.tile_encoder.embed_tiles` (``encoder_info``: its info dict, kept in
      ``cohort.info["encoder"]``).
    * Ground truth ``signal_mask`` = the DAB-positive tiles: mean DAB density above the ``dab_quantile``
      quantile (default 0.8: the 20 % most stained tiles, the intensely stained membranes, like an IHC "3+"
      call) or above the optical density ``dab_cut``; both None = Otsu's cut (:func:`dab_threshold`: any
      brown, about 57 % of the 16-px tiles).
    * Spatial split: the left ``1 - test_frac`` and the right ``test_frac`` of the tile columns are disjoint
      regions; training bags take tiles from the left region only, test bags from the right one.
      ``info["train_idx"]`` / ``info["test_idx"]``; each region gets half positive, half negative bags.
    * Bags (``bags``), ``bag_size`` tiles each, tiles keep their level-0 coordinates (so the k-NN patch graph
      is built from real positions and any bag's heat map can be drawn over the picture):

      - ``"mixture"`` (default; the standard MIL set-up, as MNIST-bags): a negative bag is ``bag_size`` tiles
        drawn without replacement from the region's DAB-negative tiles (stroma, nuclei *and* weakly stained
        epithelium); a positive bag replaces ``k`` of them, ``k`` uniform in ``witnesses`` (inclusive), by
        DAB-positive tiles of the region. The strongly stained tiles are then the *only* difference between
        the classes, so "does the attention find them" has one right answer;
      - ``"crops"``: square crops of ``sqrt(bag_size)`` tiles a side at random positions, label 1 if the crop's
        share of positive tiles exceeds ``label_share`` (default: the median over every crop position).
        More slide-like, but on this image the label is confounded with tissue composition (stain-free crops
        are stroma, stained crops are glands) and a share label is symmetric ("share > t" is "unstained
        share < 1 - t"), so attention on the *unstained* tissue solves it equally well: attention AUROC against
        the stain is then not a measure of correctness (in trial runs it flipped sign between seeds).

      Both labels are computed from the same stain as the patch ground truth: a proxy task with a known
      answer, not a clinical label.
    * Omics: **simulated**. Each bag ("case") gets a gene-expression vector from the pathology simulator's
      generator (:mod:`medvlp_lib.data.pathology`: ``n_genes`` genes in ``n_modules`` modules, first module
      shifted by ``omics_strength * label``): it carries the label plus noise and nothing else.

    ``cohort.info``: ``train_idx``, ``test_idx``, ``whole_slide`` (every tile of the image as one
    :class:`Slide`, label 1 if it holds positive tiles (``"mixture"``) or by the share rule (``"crops"``),
    for the final heat map), ``image``, ``patch``, ``tiles``, ``dab`` (per-tile density), ``dab_cut`` (the
    density cut used), ``bags``, ``witnesses``, ``label_share``, ``n_positive`` (per bag), ``tile_index`` (per
    bag, indices into the whole image's tiles), ``split_col``, ``encoder`` (embedding info) and ``n_patches``.
    Deterministic in ``seed``.
    """
    seed = check_seed(seed)
    for nm, v, lo in (("n_bags", n_bags, 4), ("bag_size", bag_size, 1), ("n_genes", n_genes, 1),
                      ("n_modules", n_modules, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{nm} must be an integer >= {lo}, got {v!r}")
    if bags not in ("mixture", "crops"):
        raise ValueError(f"bags must be 'mixture' or 'crops', got {bags!r}")
    w_lo, w_hi = (int(w) for w in witnesses)
    if bags == "mixture" and not 1 <= w_lo <= w_hi <= bag_size:
        raise ValueError(f"witnesses must be (lo, hi) with 1 <= lo <= hi <= bag_size={bag_size}, got {witnesses!r}")
    crop = int(round(math.sqrt(bag_size)))
    if bags == "crops" and crop * crop != bag_size:
        raise ValueError(f"bags='crops' needs a square bag_size (crop side = sqrt(bag_size)), got {bag_size}")
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac!r}")
    if label_share is not None and not 0 <= label_share < 1:
        raise ValueError(f"label_share must be in [0, 1), got {label_share!r}")
    img = ihc_image() if image is None else np.asarray(image)
    tiles, coords = tile_image(img, patch)
    rows, cols = img.shape[0] // patch, img.shape[1] // patch
    split_col = int(round(cols * (1 - test_frac)))
    if not 0 < split_col < cols:
        raise ValueError(f"test_frac={test_frac} leaves an empty region on a grid of {cols} tile columns")
    info_enc = {k: v for k, v in (encoder_info or {"encoder": "precomputed"}).items() if k != "model"}
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != tiles.shape[0]:
        raise ValueError(f"features must be [N, D] for the N = {tiles.shape[0]} tiles of this tiling "
                         f"(patch={patch}), got shape {features.shape}")
    dab = tile_dab(tiles)
    cut = _positive_cut(dab, dab_quantile, dab_cut)
    mask = dab > cut
    col = coords[:, 0] // patch
    regions = {"train": col < split_col, "test": col >= split_col}

    rng = np.random.default_rng([seed, 31])
    n_test = max(2, int(round(n_bags * test_frac)))
    want = {"train": n_bags - n_test, "test": n_test}
    drawn: list[tuple[str, np.ndarray, int]] = []  # (region, tile indices, label)
    thr = None
    if bags == "mixture":
        for reg, sel in regions.items():
            pos, neg = np.flatnonzero(sel & mask), np.flatnonzero(sel & ~mask)
            if pos.size < w_hi or neg.size < bag_size:
                raise ValueError(f"the {reg} region has {pos.size} DAB-positive and {neg.size} negative tiles; "
                                 f"mixture bags need >= {w_hi} and >= {bag_size} (lower witnesses / bag_size or "
                                 f"change the DAB cut)")
            n = want[reg]
            for j in range(n):
                y = int(j < n // 2)
                k = int(rng.integers(w_lo, w_hi + 1)) if y else 0
                idx = np.r_[rng.choice(pos, k, replace=False), rng.choice(neg, bag_size - k, replace=False)]
                drawn.append((reg, np.sort(idx), y))
        whole_label = int(mask.sum() >= w_lo)
    else:
        mgrid = mask.reshape(rows, cols)
        if crop > rows or crop > min(split_col, cols - split_col):
            raise ValueError(f"crops of {crop} x {crop} tiles do not fit the {rows} x {cols} tile grid split at "
                             f"column {split_col}; use a smaller bag_size or patch")
        cand = {}
        for reg, (c_lo, c_hi) in (("train", (0, split_col)), ("test", (split_col, cols))):
            pos = [(r, c) for r in range(rows - crop + 1) for c in range(c_lo, c_hi - crop + 1)]
            cand[reg] = (pos, np.array([mgrid[r:r + crop, c:c + crop].mean() for r, c in pos]))
        thr = (float(np.median(np.concatenate([sh for _, sh in cand.values()]))) if label_share is None
               else float(label_share))
        for reg, (pos, sh) in cand.items():
            lab = (sh > thr).astype(int)
            n = want[reg]
            for y, k in ((1, n // 2), (0, n - n // 2)):
                pool = np.flatnonzero(lab == y)
                if pool.size == 0:
                    raise ValueError(f"the {reg} region has no crop of class {y} at label_share={thr:.2f}; change "
                                     f"label_share, bag_size or test_frac")
                for j in rng.choice(pool, size=k, replace=k > pool.size):
                    drawn.append((reg, _crop_indices(cols, pos[j][0], pos[j][1], crop), y))
        whole_label = int(mask.mean() > thr)
    order = np.r_[rng.permutation(want["train"]), want["train"] + rng.permutation(want["test"])]
    drawn = [drawn[i] for i in order]

    ocfg = CohortConfig(n_genes=n_genes, n_modules=n_modules, omics_strength=omics_strength, omics_noise=omics_noise,
                        world_seed=0)
    ocfg.validate()
    slides = []
    for b, (_, idx, y) in enumerate(drawn):
        omics = simulate_omics(ocfg, y, np.random.default_rng([seed, 32, b]))
        slides.append(Slide(f"{name}-bag{b:03d}", f"{name}-bag{b:03d}", features[idx], coords[idx], omics, int(y),
                            mask[idx], np.full(idx.size, -1, np.int64)))
    whole = Slide(f"{name}-whole", f"{name}-whole", features, coords,
                  simulate_omics(ocfg, whole_label, np.random.default_rng([seed, 33])), whole_label, mask,
                  np.full(mask.size, -1, np.int64))
    reg = np.array([d[0] for d in drawn])
    info = {"train_idx": np.flatnonzero(reg == "train"), "test_idx": np.flatnonzero(reg == "test"),
            "whole_slide": whole, "image": img, "patch": patch, "tiles": tiles, "dab": dab, "dab_cut": cut,
            "bags": bags, "witnesses": (w_lo, w_hi) if bags == "mixture" else None, "label_share": thr,
            "n_positive": np.array([int(mask[d[1]].sum()) for d in drawn]), "tile_index": [d[1] for d in drawn],
            "split_col": split_col, "encoder": info_enc, "n_patches": [bag_size] * len(slides), "seed": seed,
            "omics": "simulated from the bag label (medvlp_lib.data.pathology gene-module generator)"}
    return Cohort.from_slides(slides, name=name, info=info)
