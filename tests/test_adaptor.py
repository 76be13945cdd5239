from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)

from medvlp_lib.methods.adaptor import AdaptorMethod
from medvlp_lib.methods.contrastive import clip_loss
from medvlp_lib.models.adaptor import (Adaptor, CrossAttentionBlock, tokens_from_feature_map,
                                       trainable_parameter_table, word_to_image_attention)
from medvlp_lib.models.encoders import LOGIT_SCALE_INIT, count_parameters


def count_trainable_parameters(m):
    return count_parameters(m, trainable_only=True)


def _batch(B=4, Nv=5, Nt=7, dv=12, dt=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, Nt, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    return dict(img_tokens=torch.randn(B, Nv, dv, generator=g), txt_tokens=torch.randn(B, Nt, dt, generator=g),
                txt_mask=mask)


def _small(**kw):
    torch.manual_seed(0)
    return Adaptor(12, 10, width=16, embed_dim=8, num_heads=2, **kw)


def test_logit_scale_init():
    assert abs(LOGIT_SCALE_INIT - 2.6592) < 1e-4
    a = _small()
    assert abs(float(a.logit_scale.detach()) - math.log(1 / 0.07)) < 1e-6
    assert abs(float(a.scale.detach()) - 1 / 0.07) < 1e-4


def test_forward_shapes_norms_and_attention():
    a = _small().eval()
    b = _batch()
    with torch.no_grad():
        out = a(b["img_tokens"], b["txt_tokens"], b["txt_mask"], return_attention=True)
    assert out["image_emb"].shape == (4, 8) and out["text_emb"].shape == (4, 8)
    assert torch.allclose(out["image_emb"].norm(dim=-1), torch.ones(4), atol=1e-5)
    assert len(out["attentions"]) == 2
    att = out["attentions"][0]
    assert att["img2txt"].shape == (4, 6, 7) and att["txt2img"].shape == (4, 7, 6)
    assert torch.allclose(att["img2txt"].sum(-1), torch.ones(4, 6), atol=1e-5)
    # padded text tokens receive zero attention
    assert float(att["img2txt"][1, :, 4:].abs().max()) == 0.0
    assert float(att["img2txt"][2, :, 2:].abs().max()) == 0.0


def test_padding_does_not_change_output():
    """Extra padded text tokens (any values) must not change the embeddings."""
    a = _small().eval()
    b = _batch()
    out1 = a(b["img_tokens"], b["txt_tokens"], b["txt_mask"])
    pad = torch.randn(4, 3, 10) * 100
    t2 = torch.cat([b["txt_tokens"], pad], 1)
    m2 = torch.cat([b["txt_mask"], torch.zeros(4, 3, dtype=torch.bool)], 1)
    out2 = a(b["img_tokens"], t2, m2)
    assert torch.allclose(out1["image_emb"], out2["image_emb"], atol=1e-5)
    assert torch.allclose(out1["text_emb"], out2["text_emb"], atol=1e-5)


def test_cross_attention_block_matches_manual_single_head():
    torch.manual_seed(1)
    blk = CrossAttentionBlock(8, num_heads=1, ffn_mult=2).eval()
    x, c = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    y, w = blk(x, c)
    W, bias = blk.attn.in_proj_weight, blk.attn.in_proj_bias
    q = x @ W[:8].t() + bias[:8]
    k = c @ W[8:16].t() + bias[8:16]
    v = c @ W[16:].t() + bias[16:]
    att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), -1)
    a = blk.attn.out_proj(att @ v)
    h = blk.norm1(x + a)
    ref = blk.norm2(h + blk.ffn(h))
    assert torch.allclose(w, att, atol=1e-5)
    assert torch.allclose(y, ref, atol=1e-5)


def test_shared_blocks_halve_block_parameters():
    shared, separate = _small(share_blocks=True), _small(share_blocks=False)
    blk = sum(p.numel() for p in CrossAttentionBlock(16, 2).parameters())
    assert count_trainable_parameters(separate) - count_trainable_parameters(shared) == 2 * blk


def test_paper_size_adaptor_is_about_12_to_17M():
    a = Adaptor(2048, 768, width=768, embed_dim=512, num_heads=12)
    n = count_trainable_parameters(a)
    assert 12e6 < n < 18e6, n  # paper: ~12M (their exact input widths differ)


def test_loss_matches_naive_reference_and_weights():
    """The Adaptor's loss is clip_loss with the image->text weight 0.75 (the library's one contrastive loss)."""
    torch.manual_seed(2)
    img, txt = F.normalize(torch.randn(6, 5), dim=-1), F.normalize(torch.randn(6, 5), dim=-1)
    a = _small()
    with torch.no_grad():
        a.logit_scale.fill_(LOGIT_SCALE_INIT)
    loss, parts = clip_loss(img, txt, a.scale, image_weight=0.75)
    s = math.exp(LOGIT_SCALE_INIT)
    S = (s * img @ txt.t()).tolist()
    def ce_rows(M):
        return sum(-M[i][i] + math.log(sum(math.exp(v) for v in M[i])) for i in range(len(M))) / len(M)
    i2t = ce_rows(S)
    t2i = ce_rows([list(r) for r in zip(*S)])
    assert abs(parts["i2t"] - i2t) < 1e-5 and abs(parts["t2i"] - t2i) < 1e-5
    assert abs(float(loss) - (0.75 * i2t + 0.25 * t2i)) < 1e-5
    sym, _ = clip_loss(img, txt, a.scale, image_weight=0.5)
    assert abs(float(sym) - 0.5 * (i2t + t2i)) < 1e-5
    # the multiplier (the Adaptor's scale property) is capped at 100
    with torch.no_grad():
        a.logit_scale.fill_(10.0)
    _, p = clip_loss(img, txt, a.scale)
    assert abs(p["scale"] - 100.0) < 1e-3


def test_loss_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same batch size"):
        clip_loss(x, torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match="image_weight"):
        clip_loss(x, x, 1.0, image_weight=-1)
    with pytest.raises(TypeError, match="image_emb"):
        clip_loss([1], x, 1.0)
    with pytest.raises(ValueError, match="image_weight"):
        AdaptorMethod(_small(), image_weight=1.5)


def test_input_errors():
    a = _small()
    b = _batch()
    with pytest.raises(ValueError, match="img_tokens must have last dim 12"):
        a(torch.randn(4, 5, 3), b["txt_tokens"])
    with pytest.raises(ValueError, match="txt_mask must have shape"):
        a(b["img_tokens"], b["txt_tokens"], torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no real token"):
        a(b["img_tokens"], b["txt_tokens"], torch.zeros(4, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        Adaptor(4, 4, width=10, num_heads=3)


def test_feature_map_tokens_row_major():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    t = tokens_from_feature_map(f)
    assert t.shape == (2, 4, 3)
    assert torch.equal(t[0, 1], f[0, :, 0, 1])
    a = Adaptor(3, 10, width=8, embed_dim=4, num_heads=2).eval()
    out4 = a(f, torch.randn(2, 3, 10))
    assert out4["image_emb"].shape == (2, 4)


def test_method_trains_and_only_adaptor_is_optimised():
    torch.manual_seed(0)
    a = _small()
    m = AdaptorMethod(a)
    b = _batch(B=8)
    # make pairs learnable: text tokens carry the image signal
    b["txt_tokens"][:, :, :10] += 2 * b["img_tokens"].mean(1, keepdim=True)[..., :10]
    opt = torch.optim.AdamW(m.parameters(), lr=2e-2)
    first = None
    for _ in range(20):
        out = m.training_step(b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["loss"].detach())
    assert float(out["loss"].detach()) < 0.5 * first
    assert {"i2t", "t2i", "acc_i2t", "acc_t2i", "scale"} <= set(out)
    img, txt = m.embed(b)
    assert img.shape == (8, 8) and not img.requires_grad
    with pytest.raises(ValueError, match="img_tokens"):
        m.training_step({"image": torch.zeros(1)})


def test_state_dict_round_trip():
    a = _small()
    b = _small()
    with torch.no_grad():
        a.logit_scale.fill_(1.234)
    b.load_state_dict(a.state_dict())
    assert float(b.logit_scale.detach()) == pytest.approx(1.234)


class _Enc(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.out_dim = d_out


def test_parameter_table_counts():
    img, txt = _Enc(100, 50), _Enc(30, 20)
    for p in img.parameters():
        p.requires_grad_(False)
    rows = trainable_parameter_table(img, txt, width=16, adaptor_embed_dim=8, num_heads=2, embed_dim=4, proj="linear")
    byname = {r["method"]: r for r in rows}
    e2e = (100 * 50 + 50) + (30 * 20 + 20) + (50 * 4 + 4) + (20 * 4 + 4) + 1
    assert byname["CLIP (end-to-end)"]["trainable"] == e2e
    assert byname["MSD (end-to-end + momentum)"]["total"] == 2 * e2e - 1
    adp = Adaptor(50, 20, width=16, embed_dim=8, num_heads=2)
    assert byname["Adaptor"]["trainable"] == count_trainable_parameters(adp)
    assert byname["Adaptor"]["frozen"] == 100 * 50 + 50 + 30 * 20 + 20
    assert byname["CLIP (end-to-end)"]["trainable_pct_of_e2e"] == pytest.approx(100.0)


def test_word_to_image_attention():
    B, Nt, h, w = 2, 3, 2, 2
    a = torch.rand(B, Nt, 1 + h * w)
    a = a / a.sum(-1, keepdim=True)
    att = [{"txt2img": a, "img2txt": None}]
    m = word_to_image_attention(att, 1, (h, w))
    assert m.shape == (2, 2, 2)
    ref = a[0, 1, 1:] / a[0, 1, 1:].sum()
    assert torch.allclose(m[0].flatten(), ref)
    m2 = word_to_image_attention(att, [0, 2], (h, w))
    assert torch.allclose(m2[1].flatten(), a[1, 2, 1:] / a[1, 2, 1:].sum())
    with pytest.raises(ValueError, match="grid_hw"):
        word_to_image_attention(att, 0, (3, 3))
    with pytest.raises(ValueError, match="word_index"):
        word_to_image_attention(att, 5, (h, w))


# ---------------------------------------------------------------- frozen backbones (models/backbones.py)
from medvlp_lib.methods.ssl import (SSLConfig, nt_xent, offline_pretrained_backbone,  # noqa: E402
                                    ssl_cache_path, ssl_pretraining_images)
from medvlp_lib.models.backbones import XRVImageBackbone, build_frozen_image_backbone  # noqa: E402
from medvlp_lib.models.encoders import WeightsNotAvailableError  # noqa: E402

TINY = dict(arch="resnet18", size=64, n_radiographs=24, n_natural=8, steps=3, batch_size=8)


def test_nt_xent_matches_naive():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    tau = 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    total = 0.0
    for i in range(8):
        pos = (i + 4) % 8
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(8) if j != i)
        total += -(float(z[i] @ z[pos]) / tau - math.log(den))
    assert float(nt_xent(z1, z2, scale=1 / tau)) == pytest.approx(total / 8, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(z1, z2[:3])


def test_offline_backbone_train_load_corrupt(tmp_path):
    from medvlp_lib.data import load_reports, split_ids

    cfg = SSLConfig(**TINY)
    enc = offline_pretrained_backbone(cfg, cache_dir=tmp_path, progress=False)
    info = enc.ssl_info
    assert not info["loaded"] and len(info["history"]) == 3
    assert info["radiographs"] == 24 and info["natural"] == 8
    # pretraining films come from the train split only (evaluation uses val/test and other render keys)
    assert info["train_uids"] == len(split_ids(load_reports().uids, 0)["train"])
    assert all(not p.requires_grad for p in enc.parameters())
    path = ssl_cache_path(cfg, tmp_path)
    assert path.exists() and info["path"] == str(path)
    enc2 = offline_pretrained_backbone(cfg, cache_dir=tmp_path, progress=False)
    assert enc2.ssl_info["loaded"]
    for x, y in zip(enc.state_dict().values(), enc2.state_dict().values()):
        assert torch.equal(x, y)
    x = torch.rand(2, 1, 64, 64)
    assert torch.allclose(enc(x), enc2(x))
    # it is not a random init
    rnd = build_frozen_image_backbone("resnet18", pretrained=False)
    assert not torch.allclose(rnd.backbone.conv1.weight, enc.backbone.conv1.weight)
    assert ssl_cache_path(SSLConfig(**{**TINY, "steps": 4}), tmp_path) != path
    # corrupt file: raise or retrain
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="invalid"):
        offline_pretrained_backbone(cfg, cache_dir=tmp_path, on_invalid="raise", progress=False)
    with pytest.warns(UserWarning, match="retraining"):
        enc3 = offline_pretrained_backbone(cfg, cache_dir=tmp_path, progress=False)
    assert not enc3.ssl_info["loaded"] and path.exists()


def test_pretraining_pool_shapes():
    pool, info = ssl_pretraining_images(SSLConfig(**{**TINY, "n_radiographs": 3, "n_natural": 0}), progress=False)
    assert pool.shape == (3, 1, 64, 64) and pool.dtype == torch.uint8 and info["natural"] == 0


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        SSLConfig(steps=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        SSLConfig(n_radiographs=1, n_natural=0)


def test_xrv_missing_weights_error(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match="wget .*nihpcrsnamimic_ch-resnet101"):
        build_frozen_image_backbone("resnet101-elastic", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown torchxrayvision backbone"):
        build_frozen_image_backbone("xrv-nonexistent")


def test_xrv_densenet_from_local_weights(tmp_path):
    import os

    import torchxrayvision as xrv

    url = xrv.models.model_urls["densenet121-res224-all"]["weights_url"]
    torch.manual_seed(0)
    ref = xrv.models.DenseNet(num_classes=18).eval()
    torch.save(ref, tmp_path / os.path.basename(url))  # torchxrayvision stores whole modules
    bb = build_frozen_image_backbone("densenet121-res224-all", cache_dir=tmp_path, resize=False)
    assert isinstance(bb, XRVImageBackbone) and bb.out_dim == 1024
    x = torch.rand(1, 1, 64, 64)
    f = bb.forward_features(x)
    assert f.shape == (1, 1024, 2, 2)
    assert torch.allclose(f, F.relu(ref.features(x * 2048 - 1024)), atol=1e-4)
    assert all(not p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training


def test_timm_frozen_backbone():
    bb = build_frozen_image_backbone("resnet18", pretrained=False)
    assert all(not p.requires_grad for p in bb.parameters())
    assert bb.forward_features(torch.rand(1, 1, 64, 64)).shape == (1, 512, 2, 2)


def test_paper_scale_parameter_table_small_shapes():
    from medvlp_lib.models.adaptor import paper_scale_parameter_table

    rows = paper_scale_parameter_table(image_arch="resnet18", text_layers=1, text_width=64, width=32,
                                       adaptor_embed_dim=16, num_heads=4, embed_dim=8)
    by = {r["method"]: r for r in rows}
    ref = Adaptor(512, 64, width=32, embed_dim=16, num_heads=4)
    assert by["Adaptor"]["trainable"] == count_trainable_parameters(ref)
    assert by["CLIP (end-to-end)"]["trainable"] > by["Adaptor"]["frozen"]


def test_image_only_embeddings_with_dummy_text():
    from medvlp_lib.models.adaptor import adaptor_image_embeddings, empty_text_tokens

    class _T(nn.Module):
        def forward_tokens(self, texts):
            assert texts == [""]
            return torch.arange(2 * 10, dtype=torch.float32).reshape(1, 2, 10), torch.ones(1, 2, dtype=torch.bool)

    dummy = empty_text_tokens(_T())
    assert dummy.shape == (1, 1, 10) and torch.equal(dummy[0, 0], torch.arange(10.0))
    a = _small()
    b = _batch(B=5)
    out = adaptor_image_embeddings(a, b["img_tokens"], dummy, batch_size=2)
    ref = a.eval()(b["img_tokens"], dummy.expand(5, -1, -1))
    assert torch.allclose(out["image_emb"], ref["image_emb"], atol=1e-6)
    assert out["image_cls"].shape == (5, 16)
    with pytest.raises(ValueError, match="text_tokens must be"):
        adaptor_image_embeddings(a, b["img_tokens"], torch.zeros(2, 1, 10))


def test_find_word_tokens_with_minilm_tokenizer():
    from transformers import AutoTokenizer

    from medvlp_lib.models.adaptor import find_word_tokens
    from medvlp_lib.models.encoders import default_text_encoder_path

    tok = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
    text = "Small left pleural effusion. No pneumothorax."
    ids = tok(text)["input_ids"]
    pos = find_word_tokens(tok, text, "pneumothorax")
    assert pos and tok.decode([ids[i] for i in pos]).replace(" ", "").replace("#", "") == "pneumothorax"
    eff = find_word_tokens(tok, text, "Effusion")  # case-insensitive; WordPiece splits it into e ##ff ##usion
    assert tok.decode([ids[i] for i in eff]).replace(" ", "").replace("#", "") == "effusion"
    assert eff == list(range(eff[0], eff[-1] + 1))
    assert find_word_tokens(tok, text, "heart") == []
    assert find_word_tokens(tok, text, "pleural")[0] > 0  # position 0 is [CLS]


def _ragged(B=5, Nt=9, dv=12, dt=10, seed=0, dtype=torch.float64):
    """Right-padded texts of lengths 9, 4, 2, 1, 6 with garbage (large random values) in the padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 4, 2, 1, 6])[:B]
    mask = torch.arange(Nt)[None] < lengths[:, None]
    txt = torch.randn(B, Nt, dt, generator=g, dtype=dtype)
    txt = torch.where(mask[..., None], txt, 100 * torch.randn(B, Nt, dt, generator=g, dtype=dtype))
    return dict(img_tokens=torch.randn(B, 6, dv, generator=g, dtype=dtype), txt_tokens=txt, txt_mask=mask)


@pytest.mark.parametrize("share_blocks", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_fast_path_equals_reference_path_float64(share_blocks, num_layers):
    """The fast path (packing, SDPA, [CLS]-only last text update) computes the reference path's function:
    outputs and parameter gradients agree to float64 rounding."""
    torch.manual_seed(0)
    a = Adaptor(12, 10, width=16, embed_dim=8, num_heads=2, num_layers=num_layers,
                share_blocks=share_blocks).double()
    b = _ragged()
    outs, grads = {}, {}
    for path, ret in (("fast", False), ("reference", True)):
        a.zero_grad(set_to_none=True)
        out = a(b["img_tokens"], b["txt_tokens"], b["txt_mask"], return_attention=ret)
        (out["image_emb"] @ out["text_emb"].T * torch.arange(25.0, dtype=torch.float64).view(5, 5)).sum().backward()
        outs[path] = out
        grads[path] = torch.cat([p.grad.reshape(-1) for p in a.parameters() if p is not a.logit_scale])
    for key in ("image_emb", "text_emb", "image_tokens"):
        torch.testing.assert_close(outs["fast"][key], outs["reference"][key], rtol=0, atol=1e-12)
    assert "attentions" not in outs["fast"] and "text_tokens" not in outs["fast"]
    assert outs["reference"]["text_tokens"].shape == (5, 9, 16)
    assert float(grads["reference"].norm()) > 1e-3
    torch.testing.assert_close(grads["fast"], grads["reference"], rtol=0, atol=1e-11)


def test_per_batch_padding_does_not_change_a_samples_embeddings():
    """A sample's embeddings do not depend on how far its text is padded (alone, trimmed to its own length, or in
    a batch padded to a longer text with garbage in the padding), on both paths."""
    torch.manual_seed(0)
    a = Adaptor(12, 10, width=16, embed_dim=8, num_heads=2).double().eval()
    b = _ragged()
    with torch.no_grad():
        batched = a(b["img_tokens"], b["txt_tokens"], b["txt_mask"])
        for i, n in enumerate(b["txt_mask"].sum(1).tolist()):
            for ret in (False, True):
                alone = a(b["img_tokens"][i:i + 1], b["txt_tokens"][i:i + 1, :n], b["txt_mask"][i:i + 1, :n],
                          return_attention=ret)
                for key in ("image_emb", "text_emb"):
                    torch.testing.assert_close(alone[key][0], batched[key][i], rtol=0, atol=1e-12)
            longer = torch.cat([b["txt_tokens"][i:i + 1], -50 * torch.ones(1, 7, 10, dtype=torch.float64)], 1)
            mask = torch.cat([b["txt_mask"][i:i + 1], torch.zeros(1, 7, dtype=torch.bool)], 1)
            padded = a(b["img_tokens"][i:i + 1], longer, mask)
            torch.testing.assert_close(padded["text_emb"][0], batched["text_emb"][i], rtol=0, atol=1e-12)


def test_fast_path_pools_position_zero_even_when_masked():
    """Both paths pool text position 0; a mask that marks it as padding (left padding) gives the same result."""
    torch.manual_seed(0)
    a = Adaptor(12, 10, width=16, embed_dim=8, num_heads=2).double().eval()
    b = _ragged()
    mask = b["txt_mask"].clone()
    mask[0, 0] = False
    with torch.no_grad():
        fast = a(b["img_tokens"], b["txt_tokens"], mask)
        ref = a(b["img_tokens"], b["txt_tokens"], mask, return_attention=True)
    torch.testing.assert_close(fast["text_emb"], ref["text_emb"], rtol=0, atol=1e-12)
