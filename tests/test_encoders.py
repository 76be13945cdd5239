"""Encoders: timm image encoder, packaged MiniLM text encoder, projection heads, dual encoder."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from medvlp_lib.models.encoders import (MAX_SCALE, DualEncoder, ProjectionHead, TextEncoder,
                                        WeightsNotAvailableError, build_image_encoder, build_text_encoder,
                                        count_parameters, default_text_encoder_path, parse_trainable)




@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder(trainable="none")


def test_parse_trainable():
    assert parse_trainable("all") == ("all", 0)
    assert parse_trainable("NONE") == ("none", 0)
    assert parse_trainable("last:3") == ("last", 3)
    for bad in ("last:0", "some", "last:x"):
        with pytest.raises(ValueError, match="trainable"):
            parse_trainable(bad)
    with pytest.raises(TypeError, match="trainable"):
        parse_trainable(2)


def test_image_encoder_shapes_and_features():
    enc = build_image_encoder("test_resnet", in_chans=1)
    x = torch.rand(2, 1, 32, 32)
    out = enc(x)
    assert out.shape == (2, enc.out_dim)
    fmap = enc.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, enc.out_dim)
    torch.testing.assert_close(enc.pool(fmap), out)
    vit = build_image_encoder("test_vit", in_chans=1, img_size=32)
    tokens = vit.forward_features(torch.rand(2, 1, 32, 32))
    assert tokens.ndim == 3 and tokens.shape[-1] == vit.out_dim
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        enc(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match="unknown timm model"):
        build_image_encoder("definitely_not_a_model")


def test_image_encoder_trainable_modes():
    full = build_image_encoder("test_resnet")
    assert count_parameters(full, trainable_only=True) == count_parameters(full)
    none = build_image_encoder("test_resnet", trainable="none")
    assert count_parameters(none, trainable_only=True) == 0
    last1 = build_image_encoder("test_resnet", trainable="last:1")
    trainable = {n for n, p in last1.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("backbone.layer4.") for n in trainable)
    last2 = build_image_encoder("test_resnet", trainable="last:2")
    assert count_parameters(last1, True) < count_parameters(last2, True) < count_parameters(full)
    with pytest.raises(ValueError, match="only 4 stages"):
        build_image_encoder("test_resnet", trainable="last:9")


def test_frozen_batchnorm_stats_do_not_drift():
    enc = build_image_encoder("test_resnet", trainable="none")
    enc.train()
    before = copy.deepcopy(enc.backbone.bn1.running_mean)
    enc(torch.rand(4, 1, 32, 32) * 5)
    torch.testing.assert_close(enc.backbone.bn1.running_mean, before)
    part = build_image_encoder("test_resnet", trainable="last:1").train()
    assert not part.backbone.bn1.training  # frozen stem BN in eval
    assert part.backbone.layer4[0].bn1.training  # trainable stage BN trains


def test_pretrained_offline_raises_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path), raising=False)
    with pytest.raises(WeightsNotAvailableError, match="pretrained=True"):
        build_image_encoder("test_resnet", pretrained=True)
    with pytest.raises(WeightsNotAvailableError, match="huggingface-cli download"):
        build_text_encoder("some-org/not-cached-model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder(tmp_path)  # a folder without a model


def test_default_path_is_packaged_minilm():
    path = default_text_encoder_path()
    assert (path / "config.json").exists() and (path / "vocab.txt").exists()


def test_text_encoder_mean_pooling_and_cache(minilm):
    texts = ["no acute disease", "mild cardiomegaly with small effusion"]
    assert minilm.out_dim == 384 and minilm.frozen
    out = minilm(texts)
    assert out.shape == (2, 384) and not out.requires_grad
    assert minilm.cache_size >= 2
    tok = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = minilm.model(**tok).last_hidden_state
    m = tok["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(out, (h * m).sum(1) / m.sum(1), atol=1e-5, rtol=1e-5)
    # cached: same values, order / duplicates respected, no recomputation
    again = minilm([texts[1], texts[0], texts[1]])
    torch.testing.assert_close(again, out[[1, 0, 1]])
    with pytest.raises(TypeError, match="single str"):
        minilm("no acute disease")
    with pytest.raises(ValueError, match="non-empty"):
        minilm([])


def test_frozen_text_encoders_share_their_cache(minilm):
    """A second frozen encoder of the same weights reuses the first one's embeddings; opting out does not."""
    text = "shared cache probe: small left pleural effusion"
    first = minilm([text])
    second = build_text_encoder(trainable="none")
    assert text in second._cache
    torch.testing.assert_close(second([text]), first)
    private = TextEncoder(second.model, second.tokenizer, second.name, share_cache=False)
    assert private.cache_size == 0
    torch.testing.assert_close(private([text]), first, atol=1e-5, rtol=1e-5)


def test_text_encoder_trainable_last(minilm):
    enc = TextEncoder(copy.deepcopy(minilm.model), minilm.tokenizer, "copy", trainable="last:2")
    names = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert any(".layer.4." in n for n in names) and any(".layer.5." in n for n in names)
    assert not any(".layer.3." in n or "embeddings" in n for n in names)
    out = enc(["a small nodule"])
    assert out.requires_grad and enc.cache_size == 0
    with pytest.raises(ValueError, match="only 6 layers"):
        TextEncoder(copy.deepcopy(minilm.model), minilm.tokenizer, "copy", trainable="last:7")


def test_projection_head():
    for kind in ("linear", "mlp"):
        head = ProjectionHead(8, 4, kind=kind)
        assert head(torch.randn(3, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="kind"):
        ProjectionHead(8, 4, kind="conv")
    with pytest.raises(ValueError, match="last dim 8"):
        ProjectionHead(8, 4)(torch.randn(3, 5))


def test_dual_encoder_normalised_and_temperature(minilm):
    model = DualEncoder(build_image_encoder("test_resnet"), minilm, embed_dim=16, proj="linear")
    assert math.isclose(float(model.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)
    img, txt = model(torch.rand(3, 1, 32, 32), ["a", "b", "c"])
    assert img.shape == txt.shape == (3, 16) and model.embed_dim == 16
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(3))
    loss = (img @ txt.t() * model.scale).logsumexp(1).mean()
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0
    assert all(p.grad is not None for p in model.image_encoder.parameters())
    assert model.text_proj.net.weight.grad is not None
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale.detach()) == pytest.approx(MAX_SCALE)
    with pytest.raises(ValueError, match="init_temperature"):
        DualEncoder(build_image_encoder("test_resnet"), minilm, init_temperature=0.0)
