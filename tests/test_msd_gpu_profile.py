"""The paper's gpu-profile architecture (Swin-Tiny + a BERT-family text encoder, MSD with queue 4,096, RFBE) built
with random weights at reduced resolution, and one RFBE optimiser step on CPU.

The full-scale run cannot happen here (no GPU, no downloads); this checks that the exact architecture the gpu
profile uses trains under RFBE: timm's swin_tiny_patch4_window7_224 (all four stages, 27.5 M parameters) at 64 px
instead of 224, and a BertModel built from a local config (2 layers instead of Bio_ClinicalBERT's 12), with the
packaged MiniLM's BERT WordPiece tokenizer. Effective batch 8 as 2 x 4 mirrors 512 as 16 x 32.
"""
from __future__ import annotations

import pytest
import torch

from medvlp_lib.experiments.batch_enlargement import GPU_COMMAND, PAPER, build_paper_dual
from medvlp_lib.methods.msd import MSD
from medvlp_lib.methods.rfbe import RFBE

REPORTS = ["Heart size normal. Lungs are clear.", "Cardiomegaly with small bilateral pleural effusions.",
           "Right lower lobe consolidation concerning for pneumonia.", "No pneumothorax. Stable mediastinum.",
           "Mild pulmonary edema.", "Calcified granuloma in the left upper lobe.",
           "Endotracheal tube in good position.", "Hyperinflated lungs consistent with emphysema."]


@pytest.fixture(scope="module")
def paper_method():
    from transformers import BertConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=128)
    dual = build_paper_dual(image_size=64, pretrained=False, text_config=cfg, max_length=32)
    method = MSD(dual, queue_size=PAPER["queue_size"], momentum=PAPER["momentum"], alpha=PAPER["alpha"],
                 beta=PAPER["beta"], w_uni=PAPER["w_uni"], w_multi=PAPER["w_multi"])
    return method


def test_paper_profile_constants():
    assert PAPER["effective_batch"] == 512 and PAPER["sub_batch"] == 32
    assert PAPER["effective_batch"] // PAPER["sub_batch"] == 16
    assert PAPER["queue_size"] == 4096 and PAPER["image_size"] == 224
    assert PAPER["image_encoder"] == "swin_tiny_patch4_window7_224" and "BERT" in PAPER["text_encoder"]
    assert PAPER["paper_rfbe_memory_gb"] == 9.0
    assert "--arch paper" in GPU_COMMAND and "--device cuda" in GPU_COMMAND and "--size 224" in GPU_COMMAND


def test_architecture_is_swin_tiny_and_bert(paper_method):
    from transformers import BertModel

    dual = paper_method.online
    swin = dual.image_encoder.backbone
    assert type(swin).__name__ == "SwinTransformer"
    assert [len(layer.blocks) for layer in swin.layers] == [2, 2, 6, 2] and swin.embed_dim == 96
    n_img = sum(p.numel() for p in swin.parameters())
    assert 27_000_000 < n_img < 28_000_000  # Swin-Tiny: 28 M with the ImageNet head, 27.5 M without
    assert isinstance(dual.text_encoder.model, BertModel) and not dual.text_encoder.frozen
    assert dual.image_encoder.out_dim == 768 and dual.embed_dim == PAPER["embed_dim"]
    # Swin normalises with LayerNorm only: RFBE's accumulated gradient is exact for this encoder
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in dual.modules())


def test_one_rfbe_step_on_cpu(paper_method):
    method = paper_method
    wrapper = RFBE(method, sub_batch=4, chunk_views=True)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = dict(image=torch.rand(8, 1, 64, 64, generator=g), text=list(REPORTS), index=torch.arange(8))
    swin_before = method.online.image_encoder.backbone.patch_embed.proj.weight.detach().clone()
    bert_before = method.online.text_encoder.model.embeddings.word_embeddings.weight.detach().clone()
    mom_before = method.momentum_encoder.module.image_encoder.backbone.patch_embed.proj.weight.detach().clone()
    opt.zero_grad(set_to_none=True)
    out = wrapper.training_step(batch)
    assert out["sub_batches"] == 2 and out["effective_batch"] == 8
    assert torch.isfinite(torch.tensor(out["loss"])) and out["loss"] > 0
    g_swin = method.online.image_encoder.backbone.layers[3].blocks[1].mlp.fc2.weight.grad
    g_bert = method.online.text_encoder.model.encoder.layer[1].output.dense.weight.grad
    assert g_swin is not None and float(g_swin.norm()) > 0
    assert g_bert is not None and float(g_bert.norm()) > 0
    assert method.momentum_encoder.module.image_encoder.backbone.patch_embed.proj.weight.grad is None
    opt.step()
    wrapper.after_optimizer_step()
    assert not torch.equal(method.online.image_encoder.backbone.patch_embed.proj.weight, swin_before)
    assert not torch.equal(method.online.text_encoder.model.embeddings.word_embeddings.weight, bert_before)
    mom_after = method.momentum_encoder.module.image_encoder.backbone.patch_embed.proj.weight
    online = method.online.image_encoder.backbone.patch_embed.proj.weight.detach()
    torch.testing.assert_close(mom_after, PAPER["momentum"] * mom_before + (1 - PAPER["momentum"]) * online)
    assert len(method.image_queue) == len(method.text_queue) == 8 and int(method.step) == 1
