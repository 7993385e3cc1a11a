"""dinov2_dpt: DINOv2 ViT-S/B/L (timm) + a DPT head, the UniMatch-V2 / SemiEarth model.

Pretrained backbone weights come from, in order: a local file (`model.weights`: a timm or
original DINOv2 state dict, e.g. `dinov2_vits14_pretrain.pth`), the Hugging Face cache, or the hub
when it is reachable. Offline with nothing cached is a clear error within seconds.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = {
    # timm name, intermediate layers, DPT features, DPT out channels (UniMatch-V2 settings)
    "small": ("vit_small_patch14_dinov2.lvd142m", [2, 5, 8, 11], 64, [48, 96, 192, 384]),
    "base": ("vit_base_patch14_dinov2.lvd142m", [2, 5, 8, 11], 128, [96, 192, 384, 768]),
    "large": ("vit_large_patch14_dinov2.lvd142m", [4, 11, 17, 23], 256, [256, 512, 1024, 1024]),
}


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cached_hub_file(hf_repo: str) -> str | None:
    """Path of the cached weights of `hf_repo`, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hf_repo, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def load_local_weights(model: nn.Module, path: str) -> None:
    """Load a timm or original-DINOv2 state dict file into the timm ViT `model`."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model.weights: no such file {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    state = checkpoint_filter_fn(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"{path}: not a DINOv2 checkpoint for this size, missing {missing[:5]}")


def create_backbone(variant: str, pretrained: bool, weights: str = "") -> nn.Module:
    import timm

    name, *_ = VARIANTS[variant]
    kwargs = dict(img_size=518, dynamic_img_size=True, num_classes=0)
    if weights:
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_local_weights(model, weights)
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    hf_repo = f"timm/{name}"
    cached = cached_hub_file(hf_repo)
    if cached:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=cached), **kwargs)
    if not hub_reachable():
        raise RuntimeError(
            f"dinov2_dpt: pretrained DINOv2 weights ({hf_repo}) are not cached and the Hugging Face hub is "
            "unreachable. Set model.weights to a local file (timm or original DINOv2 .pth/.safetensors), "
            "or model.pretrained=false for random weights."
        )
    return timm.create_model(name, pretrained=True, **kwargs)


class ResidualConvUnit(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.res1 = ResidualConvUnit(c)
        self.res2 = ResidualConvUnit(c)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.res1(skip)
        x = self.res2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True) if size else x
        return self.out(x)


class DPTHead(nn.Module):
    """Reassemble 4 ViT layers at strides 4/8/16/32 (relative to the patch grid) and fuse them."""

    def __init__(self, embed_dim: int, features: int, out_channels: list[int], num_classes: int):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in out_channels)
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        self.rn = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in out_channels)
        self.fusion = nn.ModuleList(FusionBlock(features) for _ in out_channels)
        self.head = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(True),
            nn.Dropout(0.1),
            nn.Conv2d(features, num_classes, 1),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = [self.rn[i](self.resize[i](self.project[i](f))) for i, f in enumerate(feats)]
        path = self.fusion[3](x[3], size=x[2].shape[-2:])
        path = self.fusion[2](path, x[2], size=x[1].shape[-2:])
        path = self.fusion[1](path, x[1], size=x[0].shape[-2:])
        path = self.fusion[0](path, x[0])
        return self.head(path)


class DINOv2DPT(nn.Module):
    size_multiple = 14

    def __init__(self, num_classes: int, variant: str = "small", pretrained: bool = True, weights: str = ""):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"dinov2_dpt: unknown variant {variant!r}; expected one of {list(VARIANTS)}")
        _, self.layers, features, out_channels = VARIANTS[variant]
        self.backbone = create_backbone(variant, pretrained, weights)
        self.decoder = DPTHead(self.backbone.embed_dim, features, out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 14 or w % 14:
            raise ValueError(f"dinov2_dpt: input {h}x{w} is not a multiple of the patch size 14")
        feats = self.backbone.forward_intermediates(x, indices=self.layers, intermediates_only=True, norm=True)
        logits = self.decoder(feats)
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=True)
