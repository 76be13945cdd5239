"""The MSD + RFBE paper's full-scale set-up (arXiv 2512.02438): its numbers and its dual encoder.

:data:`PAPER` holds the paper's hyper-parameters and the memory numbers of its Table 5; :func:`build_paper_dual`
builds its dual encoder (Swin-Tiny + a BERT-family clinical text encoder, both trained end to end) for a GPU
user, or with random weights and a small local BERT configuration for CPU tests and benchmarks. The training
method around it is :class:`medvlp_lib.methods.msd.MSD`; chapter 04's experiments live in
:mod:`medvlp_lib.experiments.batch_enlargement`.
"""
from __future__ import annotations

from .encoders import (DualEncoder, TextEncoder, build_image_encoder, build_text_encoder,
                       default_text_encoder_path)

__all__ = ["PAPER", "build_paper_dual"]

PAPER = dict(
    image_encoder="swin_tiny_patch4_window7_224",   # timm, ImageNet-pretrained
    text_encoder="emilyalsentzer/Bio_ClinicalBERT",  # a BERT-family clinical encoder (the paper says "BERT")
    image_size=224, queue_size=4096, effective_batch=512, sub_batch=32, momentum=0.995,
    alpha=0.3, beta=0.7, w_uni=1.0, w_multi=10.0, embed_dim=256,  # embed_dim: not in the paper (ALBEF's 256)
    paper_rfbe_memory_gb=9.0, paper_rfbe_gpu="1x RTX 4090 (24 GB)",
    paper_end_to_end_memory_gb=32.0, paper_end_to_end_batch=128, paper_end_to_end_gpu="4x A100",
)
"""The paper's set-up (Table 5 for the memory numbers: RFBE batch 512 in ~9 GB on one RTX 4090; end-to-end
batch 128 needed ~32 GB on 4x A100)."""


def build_paper_dual(image_size: int = 224, pretrained: bool = True, text_encoder: str | None = None,
                     text_config=None, embed_dim: int = PAPER["embed_dim"], in_chans: int = 1,
                     max_length: int = 128) -> DualEncoder:
    """The paper's dual encoder: timm Swin-Tiny + a BERT-family text encoder, both trained end to end.

    ``image_size`` is passed to timm (``img_size``), which adapts the patch grid and windows, so the same
    architecture runs at reduced resolution. Text: ``text_encoder`` (a Hugging Face name or folder; default
    :data:`PAPER` ``["text_encoder"]``, downloaded weights) or, with ``text_config`` (a ``transformers``
    ``BertConfig``), a randomly initialised ``BertModel`` of that configuration with the packaged MiniLM's
    BERT WordPiece tokenizer (uncased; no download), which is what the CPU test uses.
    """
    image = build_image_encoder(PAPER["image_encoder"], pretrained=pretrained, in_chans=in_chans,
                                trainable="all", img_size=image_size)
    if text_config is not None:
        from transformers import AutoTokenizer, BertModel  # heavy: imported only for this random-weight variant

        tok = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
        if text_config.vocab_size < tok.vocab_size:
            raise ValueError(f"text_config.vocab_size={text_config.vocab_size} is smaller than the tokenizer's "
                             f"{tok.vocab_size}")
        text = TextEncoder(BertModel(text_config, add_pooling_layer=False), tok, "bert-random", trainable="all",
                           max_length=max_length)
    else:
        text = build_text_encoder(text_encoder or PAPER["text_encoder"], trainable="all", max_length=max_length)
    return DualEncoder(image, text, embed_dim=embed_dim, proj="linear")
