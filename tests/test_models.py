import time

import pytest
import torch

from semiearth.config import ModelConfig
from semiearth.models import build_model


def test_tiny_and_registry():
    model = build_model(ModelConfig(name="tiny", decoder_channels=8), 5)
    assert model(torch.randn(2, 3, 20, 28)).shape == (2, 5, 20, 28)
    assert hasattr(model, "backbone") and hasattr(model, "decoder")
    with pytest.raises(KeyError, match="known models"):
        build_model(ModelConfig.model_construct(name="nope"), 5)  # a config that skipped validation


def test_effnet_lite0_fpn_offline_pretrained():
    model = build_model(ModelConfig(name="effnet_lite0_fpn", decoder_channels=16), 6).eval()
    assert model.size_multiple == 32
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 6, 64, 96) and torch.isfinite(out).all()
    # the stem carries the ImageNet weights, not timm's random init
    from semiearth.models.efficientnet_lite0 import efficientnet_lite0

    ref = efficientnet_lite0(pretrained=True)
    torch.testing.assert_close(model.backbone.conv_stem.weight, ref.conv_stem.weight)


def test_dinov2_dpt_random_weights_shape():
    model = build_model(ModelConfig(name="dinov2_dpt", pretrained=False, variant="small"), 6).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 56, 42))
    assert out.shape == (1, 6, 56, 42)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 50, 42))


def test_dinov2_offline_missing_weights_is_a_fast_clear_error(monkeypatch):
    import semiearth.models.dinov2_dpt as dp

    monkeypatch.setattr(dp, "cached_hub_file", lambda repo: None)
    monkeypatch.setattr(dp, "hub_reachable", lambda *a, **k: False)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="model.weights"):
        build_model(ModelConfig(name="dinov2_dpt", pretrained=True), 6)
    assert time.perf_counter() - t0 < 10


def test_dinov2_local_weights_file(tmp_path):
    import timm

    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, num_classes=0)
    path = tmp_path / "dinov2_vits14.pth"
    torch.save(src.state_dict(), path)
    model = build_model(ModelConfig(name="dinov2_dpt", weights=str(path)), 3)
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    with pytest.raises(FileNotFoundError, match="model.weights"):
        build_model(ModelConfig(name="dinov2_dpt", weights=str(tmp_path / "missing.pth")), 3)
