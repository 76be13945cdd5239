"""The Adaptor (Qin et al., 2024, arXiv 2401.01179): frozen image and text backbones joined by a small
cross-attention module trained with a contrastive loss.

Architecture (paper Fig. 1; public thesis code ``holajoa/Adaptor-VL-SSL``)
--------------------------------------------------------------------------
Inputs are the *frozen* backbones' token sequences, normally read from the embedding cache
(:mod:`medvlp_lib.data.cache`): image tokens ``V in R^{B x N_v x d_v}`` (a CNN feature map flattened
to ``h*w`` tokens, or ViT tokens) and text tokens ``T in R^{B x N_t x d_t}`` with padding mask ``m``.

1. Linear projections to a shared width ``d`` (768 in the paper):  ``V' = V W_v``, ``T' = T W_t``. A
   learnable image ``[CLS]`` token is prepended to ``V'`` (``add_image_cls=True``; the thesis code's
   ``add_vision_cls_token``) because CNN feature maps have no summary token; text keeps its own ``[CLS]``.
2. ``num_layers`` (= 2) cross-attention layers. Layer ``l`` updates image tokens by attending to text,
   then text tokens by attending to the *updated* image tokens; each update is post-LN (BERT style):

       V <- LN(V + MHA(Q=V, K=T, V=T, mask=m));      V <- LN(V + FFN(V))
       T <- LN(T + MHA(Q=T, K=V, V=V));               T <- LN(T + FFN(T))

   The paper's Fig. 1 says the duplicated cross-attention / feed-forward blocks "are identical, only
   shown this way to demonstrate the different choices of KVQ": by default one block per layer is
   *shared* by both directions (``share_blocks=True``, about 7M parameters per layer at ``d = 768``,
   i.e. ~14-17M in total with the input projections, close to the paper's ~12M).
   ``share_blocks=False`` gives each direction its own block (our alternative reading, ~2x parameters).
3. First-token pooling (image ``[CLS]``, text ``[CLS]``), a linear projection to ``embed_dim`` and L2
   normalisation: ``z_v = normalize(P_v V[:, 0])``, ``z_t = normalize(P_t T[:, 0])``.
4. A learnable logit scale in log space initialised at ``ln(1/0.07) = 2.6592`` (the thesis code's
   ``logit_scale_init_value``); the multiplier is the property :attr:`Adaptor.scale` (``exp(logit_scale)``
   capped at :data:`~medvlp_lib.models.encoders.MAX_SCALE` = 100, the library's one convention).

The training loss and method live in :mod:`medvlp_lib.methods.adaptor` (the weighted CLIP loss
:func:`medvlp_lib.methods.contrastive.clip_loss`).

Attention maps: :meth:`Adaptor.forward` with ``return_attention=True`` returns, per layer, the head-averaged
``img2txt`` [B, 1+N_v, N_t] and ``txt2img`` [B, N_t, 1+N_v] weights; :func:`word_to_image_attention`
turns the text->image weights of a word into an ``h x w`` map over the radiograph.

Two computations of the same function
-------------------------------------
Training and embedding (``return_attention=False``, the default) take a fast path that computes only what the
two embeddings depend on; ``return_attention=True`` takes the reference path (``nn.MultiheadAttention`` with an
explicit softmax, every token of every layer). Both give the same embeddings up to float rounding (a test checks
it in float64). The fast path saves work in three exact ways:

* **packing**: every per-token operation (projections, feed-forward, LayerNorm) runs on the real text tokens only
  (``M = sum(mask)`` rows instead of ``B * N_t``); only the attention products see the padded ``[B, N_t]`` layout,
  with the key padding mask. Padded text tokens are never keys (masked) and their query outputs are never read,
  so what they hold cannot matter.
* **scaled dot-product attention**: ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, no
  ``[B, heads, N_q, N_k]`` weights kept for averaging) with ``nn.MultiheadAttention``'s own weights.
* **[CLS]-only last text update**: after the last layer only ``T[:, 0]`` is read, and text queries do not
  interact (cross-attention only), so the last layer updates the text ``[CLS]`` alone. The image tokens are
  updated in full (the text ``[CLS]`` attends to all of them).

Text position 0 is always computed (it is what is pooled), even where the mask marks it as padding.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import (LOGIT_SCALE_INIT, ImageEncoder, ProjectionHead, TextEncoder, count_parameters,
                       default_text_encoder_path, scale_from_logit)

__all__ = ["CrossAttentionBlock", "Adaptor", "trainable_parameter_table", "paper_scale_parameter_table",
           "word_to_image_attention", "tokens_from_feature_map", "empty_text_tokens", "adaptor_image_embeddings",
           "find_word_tokens", "paper_scale_backbones"]


def tokens_from_feature_map(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` CNN map -> ``[B, h*w, C]`` tokens (row-major); ``[B, T, C]`` is returned unchanged."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim == 4:
        return features.flatten(2).transpose(1, 2)
    if features.ndim == 3:
        return features
    raise ValueError(f"features must be [B, C, h, w] or [B, T, C], got shape {tuple(features.shape)}")


class CrossAttentionBlock(nn.Module):
    """Post-LN cross-attention + feed-forward block: queries ``x`` attend to ``context``.

    ``x <- LN1(x + Drop(MHA(x, ctx, ctx)))``, ``x <- LN2(x + Drop(W2 GELU(W1 x)))``, with
    ``MHA(x, c, c) = concat_h softmax((x W_q^h)(c W_k^h)^T / sqrt(d_h) + mask) (c W_v^h) W_o``.
    ``context_mask`` (bool [B, N_ctx], True = real token) masks padded context tokens.
    :meth:`forward` returns ``(x, attn)`` with ``attn`` the head-averaged attention weights [B, N_x, N_ctx]
    (explicit softmax); the fast path uses :meth:`query`, :meth:`keys_values`, :meth:`attend` and :meth:`update`
    (scaled dot-product attention, no weights), which compute the same ``x`` from the same parameters.
    """

    def __init__(self, width: int, num_heads: int = 8, ffn_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width ({width}) must be divisible by num_heads ({num_heads})")
        self.width, self.num_heads = width, num_heads
        self.attn = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn_mult * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * width, width))
        self.norm2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        kpm = None if context_mask is None else ~context_mask.bool()
        a, w = self.attn(x, context, context, key_padding_mask=kpm, need_weights=True,
                         average_attn_weights=True)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x, w

    # --- the fast path: the same block in pieces, so that per-token work can run on packed tokens [M, d]
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_q + b_q``: [..., d] -> [..., d] (``nn.MultiheadAttention``'s own input projection)."""
        d = self.width
        return F.linear(x, self.attn.in_proj_weight[:d], self.attn.in_proj_bias[:d])

    def keys_values(self, context: torch.Tensor) -> torch.Tensor:
        """``[c W_k + b_k, c W_v + b_v]`` in one product: [..., d] -> [..., 2d]."""
        d = self.width
        return F.linear(context, self.attn.in_proj_weight[d:], self.attn.in_proj_bias[d:])

    def attend(self, q: torch.Tensor, kv: torch.Tensor, context_mask: torch.Tensor | None = None,
               select: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Multi-head attention of projected queries ``q`` [B, N_q, d] over projected keys / values ``kv``
        [B, N_k, 2d] with ``torch.nn.functional.scaled_dot_product_attention``; ``context_mask`` bool [B, N_k]
        (True = real key). Returns the heads concatenated, before the output projection: [B, N_q, d], or only the
        query rows ``select = (batch index [M], query index [M])`` as [M, d]."""
        B, nq, d = q.shape
        h = self.num_heads
        k, v = kv.split(d, dim=-1)
        q, k, v = (t.reshape(B, t.shape[1], h, d // h).transpose(1, 2) for t in (q, k, v))
        mask = None if context_mask is None else context_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn.dropout if self.training else 0.0)
        if select is not None:
            return o.transpose(1, 2)[select].reshape(-1, d)    # one gather, no [B, N_q, d] copy first
        return o.transpose(1, 2).reshape(B, nq, d)

    def update(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The rest of the block on attention output ``a`` (before ``W_o``): ``LN1(x + Drop(a W_o))``, then the
        feed-forward sub-layer; any leading shape ([M, d] packed tokens or [B, N, d])."""
        x = self.norm1(x + self.drop(self.attn.out_proj(a)))
        return self.norm2(x + self.drop(self.ffn(x)))


class _AdaptorLayer(nn.Module):
    def __init__(self, width, num_heads, ffn_mult, dropout, share_blocks):
        super().__init__()
        self.img_block = CrossAttentionBlock(width, num_heads, ffn_mult, dropout)
        self.txt_block = self.img_block if share_blocks else CrossAttentionBlock(width, num_heads, ffn_mult, dropout)

    def forward(self, v, t, t_mask):
        v, a_vt = self.img_block(v, t, t_mask)      # image tokens attend to text
        t, a_tv = self.txt_block(t, v, None)        # text tokens attend to the updated image tokens
        return v, t, a_vt, a_tv


def _check_tokens(name: str, x, dim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, N, D], got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape [B, N, D], got {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dim {dim} (the Adaptor's input dim), got {tuple(x.shape)}")


class Adaptor(nn.Module):
    """Cross-attention Adaptor on frozen image and text tokens (see the module docstring for equations).

    Args:
        image_dim, text_dim: token widths of the frozen backbones (e.g. 512 for ResNet-18, 384 for MiniLM).
        width: shared width ``d`` (paper 768). ``embed_dim``: output embedding size (thesis code 512).
        num_layers: cross-attention layers (paper 2). ``num_heads``, ``ffn_mult``: per block.
        share_blocks: one block per layer for both directions (paper Fig. 1, default) or one per direction.
        add_image_cls: prepend a learnable image ``[CLS]`` token (pooled output = its final state).
        init_logit_scale: initial ``logit_scale`` (log space), default ``ln(1/0.07)``.
    """

    def __init__(self, image_dim: int, text_dim: int, width: int = 768, embed_dim: int = 512, num_layers: int = 2,
                 num_heads: int = 8, ffn_mult: int = 4, dropout: float = 0.0, share_blocks: bool = True,
                 add_image_cls: bool = True, init_logit_scale: float = LOGIT_SCALE_INIT):
        super().__init__()
        for arg, v in (("image_dim", image_dim), ("text_dim", text_dim), ("width", width),
                       ("embed_dim", embed_dim), ("num_layers", num_layers), ("num_heads", num_heads)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{arg} must be a positive integer, got {v!r}")
        self.image_dim, self.text_dim, self.width, self.embed_dim = image_dim, text_dim, width, embed_dim
        self.share_blocks, self.add_image_cls = share_blocks, add_image_cls
        self.image_in = nn.Linear(image_dim, width)
        self.text_in = nn.Linear(text_dim, width)
        self.image_cls = nn.Parameter(torch.zeros(1, 1, width)) if add_image_cls else None
        if self.image_cls is not None:
            nn.init.normal_(self.image_cls, std=0.02)
        self.layers = nn.ModuleList(_AdaptorLayer(width, num_heads, ffn_mult, dropout, share_blocks)
                                    for _ in range(num_layers))
        self.image_out = nn.Linear(width, embed_dim)
        self.text_out = nn.Linear(width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    @property
    def scale(self) -> torch.Tensor:
        """The similarity multiplier ``exp(logit_scale)``, capped (see
        :func:`~medvlp_lib.models.encoders.scale_from_logit`)."""
        return scale_from_logit(self.logit_scale)

    def forward(self, img_tokens: torch.Tensor, txt_tokens: torch.Tensor, txt_mask: torch.Tensor | None = None,
                return_attention: bool = False) -> dict:
        """Return ``dict(image_emb [B, E], text_emb [B, E], image_tokens [B, 1+N_v, width][, text_tokens,
        attentions])``.

        ``img_tokens`` [B, N_v, image_dim] (a 4-D CNN map [B, C, h, w] is flattened), ``txt_tokens``
        [B, N_t, text_dim], ``txt_mask`` bool [B, N_t] (True = real token; default all True). Without
        ``return_attention``: the fast path (see the module docstring). With ``return_attention``: the reference
        path, which also returns ``text_tokens`` [B, N_t, width] (the final state of every text position) and
        ``attentions`` = list over layers of ``dict(img2txt [B, 1+N_v, N_t], txt2img [B, N_t, 1+N_v])`` (index 0
        of the image axis is the image ``[CLS]`` when present).
        """
        if isinstance(img_tokens, torch.Tensor) and img_tokens.ndim == 4:
            img_tokens = tokens_from_feature_map(img_tokens)
        _check_tokens("img_tokens", img_tokens, self.image_dim)
        _check_tokens("txt_tokens", txt_tokens, self.text_dim)
        if img_tokens.shape[0] != txt_tokens.shape[0]:
            raise ValueError(f"img_tokens and txt_tokens must share the batch size, got {img_tokens.shape[0]} "
                             f"and {txt_tokens.shape[0]}")
        if txt_mask is None:
            txt_mask = torch.ones(txt_tokens.shape[:2], dtype=torch.bool, device=txt_tokens.device)
        elif tuple(txt_mask.shape) != tuple(txt_tokens.shape[:2]):
            raise ValueError(f"txt_mask must have shape {tuple(txt_tokens.shape[:2])} (= txt_tokens[:2]), "
                             f"got {tuple(txt_mask.shape)}")
        txt_mask = txt_mask.bool()
        if not bool(txt_mask.any(1).all()):
            raise ValueError("txt_mask has a row with no real token; every text needs at least one")
        dtype = self.image_in.weight.dtype
        v = self.image_in(img_tokens.to(dtype))
        if self.image_cls is not None:
            v = torch.cat([self.image_cls.expand(v.shape[0], -1, -1), v], dim=1)
        if not return_attention:
            return self._fast(v, txt_tokens.to(dtype), txt_mask)
        t = self.text_in(txt_tokens.to(dtype))
        attns = []
        for layer in self.layers:
            v, t, a_vt, a_tv = layer(v, t, txt_mask)
            attns.append({"img2txt": a_vt, "txt2img": a_tv})
        return {"image_emb": F.normalize(self.image_out(v[:, 0]), dim=-1),
                "text_emb": F.normalize(self.text_out(t[:, 0]), dim=-1),
                "image_tokens": v, "text_tokens": t, "attentions": attns}

    def _fast(self, v: torch.Tensor, txt_tokens: torch.Tensor, txt_mask: torch.Tensor) -> dict:
        """The fast path of :meth:`forward` (module docstring): ``v`` [B, 1+N_v, d] projected image tokens,
        ``txt_tokens`` [B, N_t, d_t], ``txt_mask`` bool [B, N_t]."""
        B, nt = txt_mask.shape
        keep = txt_mask.clone()
        keep[:, 0] = True                                      # position 0 is pooled: always computed
        rows, cols = keep.nonzero(as_tuple=True)               # packed order: row-major
        first = keep.sum(1).cumsum(0) - keep.sum(1)            # index of (b, 0) in the packed tokens
        t = self.text_in(txt_tokens[rows, cols])               # [M, d]

        def padded(x):                                         # packed [M, c] -> [B, N_t, c] (zeros elsewhere)
            return x.new_zeros(B, nt, x.shape[-1]).index_put((rows, cols), x)

        for i, layer in enumerate(self.layers):
            blk = layer.img_block                              # image tokens attend to the (real) text tokens
            v = blk.update(v, blk.attend(blk.query(v), padded(blk.keys_values(t)), txt_mask))
            blk = layer.txt_block                              # text tokens attend to the updated image tokens
            kv = blk.keys_values(v)
            if i < len(self.layers) - 1:
                a = blk.attend(padded(blk.query(t)), kv, select=(rows, cols))
                t = blk.update(t, a)
            else:                                              # only the text [CLS] is read after the last layer
                t0 = t[first][:, None]
                t = blk.update(t0, blk.attend(blk.query(t0), kv))[:, 0]
        return {"image_emb": F.normalize(self.image_out(v[:, 0]), dim=-1),
                "text_emb": F.normalize(self.text_out(t), dim=-1), "image_tokens": v}


@torch.no_grad()
def empty_text_tokens(text_encoder, cls_only: bool = True) -> torch.Tensor:
    """The "dummy text" for image-only use of the Adaptor: the frozen text encoder's states of ``""``.

    The thesis code (``scripts/get_dummy_text_embeds.ipynb``) encodes the empty string and keeps the first
    (``[CLS]``) state; downstream image tasks then run the Adaptor with this one token as the text side.
    Returns float32 ``[1, 1, d_t]`` (``cls_only``) or ``[1, T, d_t]`` (``[CLS] [SEP]``).
    """
    if not hasattr(text_encoder, "forward_tokens"):
        raise TypeError(f"text_encoder must have forward_tokens(texts), got {type(text_encoder).__name__}")
    hidden, mask = text_encoder.forward_tokens([""])
    hidden = hidden[:, :1] if cls_only else hidden[:, : int(mask.sum())]
    return hidden.float().cpu()


@torch.no_grad()
def adaptor_image_embeddings(adaptor: Adaptor, img_tokens: torch.Tensor, text_tokens: torch.Tensor,
                             batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Image-only Adaptor outputs for a whole set (eval mode, no grad): every image is paired with the same
    ``text_tokens`` ([1, T, d_t] or [T, d_t], e.g. :func:`empty_text_tokens`).

    Returns ``dict(image_emb [N, embed_dim] (L2-normalised), image_cls [N, width] (the image [CLS] state
    before the output projection))`` -- the frozen features a downstream linear head reads.
    """
    if text_tokens.ndim == 2:
        text_tokens = text_tokens[None]
    if text_tokens.ndim != 3 or text_tokens.shape[0] != 1:
        raise ValueError(f"text_tokens must be [1, T, d_t] or [T, d_t], got {tuple(text_tokens.shape)}")
    was = adaptor.training
    adaptor.eval()
    dev = adaptor.logit_scale.device
    embs, clss = [], []
    try:
        for i in range(0, len(img_tokens), batch_size):
            v = img_tokens[i:i + batch_size].to(dev)
            out = adaptor(v, text_tokens.to(dev).expand(len(v), -1, -1))
            embs.append(out["image_emb"].cpu())
            clss.append(out["image_tokens"][:, 0].cpu())
    finally:
        adaptor.train(was)
    return {"image_emb": torch.cat(embs), "image_cls": torch.cat(clss)}


# --------------------------------------------------------------------------------------------------
# Parameter accounting
# --------------------------------------------------------------------------------------------------
def trainable_parameter_table(image_backbone: nn.Module, text_backbone: nn.Module, adaptor: Adaptor | None = None,
                              embed_dim: int = 128, proj: str = "mlp", width: int = 768,
                              adaptor_embed_dim: int = 512, **adaptor_kwargs) -> list[dict]:
    """Trainable vs total parameters of three ways to train the same two backbones.

    Rows (``method``, ``trainable``, ``total``, ``frozen``, ``trainable_pct_of_e2e``, ``note``):

    * ``Adaptor``: backbones frozen; trainable = the Adaptor (``adaptor`` or one built with ``width`` /
      ``adaptor_embed_dim`` / ``adaptor_kwargs`` on the backbones' ``out_dim``);
    * ``CLIP (end-to-end)``: both backbones + two projection heads (kind ``proj``, ``embed_dim``) + logit scale;
    * ``MSD (end-to-end + momentum)``: trainable as CLIP; momentum copies of both encoders and heads add
      the same number again as frozen (EMA-updated) parameters, so total = 2x CLIP - 1 (scale not copied).

    Counts are computed from the modules (nothing hard-coded); backbones are counted in full regardless of
    their current ``requires_grad`` because end-to-end training unfreezes them.
    """
    for name, m in (("image_backbone", image_backbone), ("text_backbone", text_backbone)):
        if not isinstance(m, nn.Module) or not hasattr(m, "out_dim"):
            raise TypeError(f"{name} must be an nn.Module with .out_dim (an encoder), got {type(m).__name__}")
    n_img, n_txt = count_parameters(image_backbone), count_parameters(text_backbone)
    if adaptor is None:
        adaptor = Adaptor(int(image_backbone.out_dim), int(text_backbone.out_dim), width=width,
                          embed_dim=adaptor_embed_dim, **adaptor_kwargs)
    n_adp = count_parameters(adaptor, trainable_only=True)
    heads = count_parameters(ProjectionHead(int(image_backbone.out_dim), embed_dim, kind=proj)) + \
        count_parameters(ProjectionHead(int(text_backbone.out_dim), embed_dim, kind=proj))
    e2e = n_img + n_txt + heads + 1
    rows = [
        {"method": "Adaptor", "trainable": n_adp, "total": n_img + n_txt + n_adp, "frozen": n_img + n_txt,
         "note": "frozen image + text backbones, cross-attention Adaptor trained on cached embeddings"},
        {"method": "CLIP (end-to-end)", "trainable": e2e, "total": e2e, "frozen": 0,
         "note": f"both backbones fine-tuned + {proj} projection heads to {embed_dim}-d + logit scale"},
        {"method": "MSD (end-to-end + momentum)", "trainable": e2e, "total": 2 * e2e - 1, "frozen": e2e - 1,
         "note": "as CLIP + EMA momentum copies of both encoders and heads (not optimised)"},
    ]
    for r in rows:
        r["trainable_pct_of_e2e"] = 100.0 * r["trainable"] / e2e
    return rows


def paper_scale_backbones(image_arch: str = "resnet50", text_layers: int = 12, text_width: int = 768,
                          max_length: int = 128, in_chans: int = 1) -> tuple[ImageEncoder, TextEncoder]:
    """Randomly initialised backbones of the paper's *sizes* (no download; enough to count parameters and FLOPs):
    a timm ``image_arch`` (default ResNet-50, 2048-d) and a BERT-base-shaped text encoder (``text_layers`` x
    ``text_width``, 30,522-token vocabulary, ~110M parameters at the defaults) with the packaged MiniLM's BERT
    WordPiece tokenizer (the same uncased vocabulary), truncating at ``max_length`` tokens. Both trainable."""
    import timm
    from transformers import AutoTokenizer, BertConfig, BertModel

    img = timm.create_model(image_arch, pretrained=False, num_classes=0, in_chans=in_chans)
    cfg = BertConfig(hidden_size=text_width, num_hidden_layers=text_layers,
                     num_attention_heads=max(1, text_width // 64),
                     intermediate_size=4 * text_width, max_position_embeddings=max(512, max_length))
    tok = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
    txt = BertModel(cfg, add_pooling_layer=False)
    return (ImageEncoder(img, f"{image_arch}-random"),
            TextEncoder(txt, tok, f"bert-{text_layers}x{text_width}-random", trainable="all", max_length=max_length))


def paper_scale_parameter_table(image_arch: str = "resnet50", text_layers: int = 12, text_width: int = 768,
                                **kwargs) -> list[dict]:
    """:func:`trainable_parameter_table` on :func:`paper_scale_backbones` (random weights of the paper's sizes),
    with the paper's Adaptor (width 768, 12 heads). ``kwargs`` go to :func:`trainable_parameter_table`.
    """
    kwargs.setdefault("num_heads", 12)
    return trainable_parameter_table(*paper_scale_backbones(image_arch, text_layers, text_width), **kwargs)


def word_to_image_attention(attentions: Sequence[dict], word_index: int | Sequence[int], grid_hw: tuple[int, int],
                            layer: int | str = -1, has_cls: bool = True) -> torch.Tensor:
    """Text->image attention of word(s) as maps over the image token grid: ``[B, h, w]``.

    ``attentions``: the list returned by ``Adaptor.forward(..., return_attention=True)``; ``layer``: an index
    or ``"mean"`` (average over layers). ``word_index``: one token position for all rows, or one per row.
    The image ``[CLS]`` column is dropped (``has_cls``) and the remaining weights are renormalised to sum to 1
    over the ``h*w`` grid (row-major, as :func:`tokens_from_feature_map`).
    """
    if not attentions:
        raise ValueError("attentions is empty; call Adaptor.forward(..., return_attention=True)")
    if layer == "mean":
        a = torch.stack([d["txt2img"] for d in attentions]).mean(0)
    else:
        a = attentions[layer]["txt2img"]
    B, Nt, Nv = a.shape
    h, w = grid_hw
    start = 1 if has_cls else 0
    if Nv - start != h * w:
        raise ValueError(f"grid_hw={grid_hw} has {h * w} cells but the attention has {Nv - start} image tokens")
    idx = torch.as_tensor(word_index, device=a.device).long()
    idx = idx.expand(B) if idx.ndim == 0 else idx
    if idx.shape != (B,) or bool((idx < 0).any()) or bool((idx >= Nt).any()):
        raise ValueError(f"word_index must be an int or {B} ints in [0, {Nt}), got {word_index!r}")
    m = a[torch.arange(B, device=a.device), idx, start:]
    m = m / m.sum(-1, keepdim=True).clamp_min(1e-12)
    return m.reshape(B, h, w)


def find_word_tokens(tokenizer, text: str, word: str, max_length: int = 128) -> list[int]:
    """Token positions (in ``tokenizer(text, truncation=True, max_length=max_length)``, i.e. the positions of
    the cached text tokens) of every sub-word token overlapping a whole-word, case-insensitive occurrence of
    ``word`` in ``text``. Needs a fast tokenizer (offset mapping). Empty list if the word is absent or truncated.
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word must be a non-empty string, got {word!r}")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    spans = [(m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(word.strip())}(?!\w)", text, re.IGNORECASE)]
    out = []
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(a < e and b > s for s, e in spans):
            out.append(i)
    return out
