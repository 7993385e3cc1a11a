"""Segmentation models and frozen encoders.

`build_model(cfg: ModelConfig, num_classes)` returns an nn.Module mapping normalised images
[B,3,H,W] to logits [B,C,H,W], with submodules `backbone` and `decoder` (for the learning-rate
split) and an attribute `size_multiple` (whole-image inference resizes to a multiple of it).

- `effnet_lite0_fpn`: ImageNet EfficientNet-Lite0 (offline) + FPN; the CPU-scale model.
- `dinov2_dpt`: DINOv2 ViT-S/B/L + DPT head (UniMatch-V2 / SemiEarth).
- `tiny`: a small random CNN for tests.
- `smp`: any segmentation_models_pytorch architecture (`model.arch`) over any of its encoders
  (`model.encoder`), weights from `model.weights`, the hub, or none (the `[torchgeo]` extra).
"""

from __future__ import annotations

from torch import nn


def _effnet(cfg, num_classes: int) -> nn.Module:
    from semiearth.models.effnet_fpn import EffNetLite0FPN

    return EffNetLite0FPN(num_classes, pretrained=cfg.pretrained, channels=cfg.decoder_channels)


def _dinov2(cfg, num_classes: int) -> nn.Module:
    from semiearth.models.dinov2_dpt import DINOv2DPT

    return DINOv2DPT(num_classes, variant=cfg.variant, pretrained=cfg.pretrained, weights=cfg.weights)


def _tiny(cfg, num_classes: int) -> nn.Module:
    from semiearth.models.tiny import TinySegNet

    return TinySegNet(num_classes, channels=cfg.decoder_channels)


def _smp(cfg, num_classes: int) -> nn.Module:
    from semiearth.config import ConfigError
    from semiearth.models.smp import SMPSegmenter

    if not cfg.arch or not cfg.encoder:
        missing = "model.arch" if not cfg.arch else "model.encoder"
        raise ConfigError(
            f"{missing} is not set for model.name smp: e.g. --set model.arch=Unet --set model.encoder=resnet34"
        )
    return SMPSegmenter(cfg.arch, cfg.encoder, num_classes, pretrained=cfg.pretrained, weights=cfg.weights)


MODELS = {"effnet_lite0_fpn": _effnet, "dinov2_dpt": _dinov2, "tiny": _tiny, "smp": _smp}


def build_model(cfg, num_classes: int) -> nn.Module:
    """The model `cfg.name` (a ModelConfig) with `num_classes` outputs."""
    if cfg.name not in MODELS:
        raise KeyError(f"unknown model '{cfg.name}'; known models: {', '.join(MODELS)}")
    return MODELS[cfg.name](cfg, num_classes)


__all__ = ["MODELS", "build_model"]
