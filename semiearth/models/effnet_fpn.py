"""effnet_lite0_fpn: ImageNet EfficientNet-Lite0 (offline weights) + a light FPN decoder.

The CPU-scale model: 3.4M backbone parameters, strides 4/8/16/32 fused top-down into one
stride-4 map, then a 3x3 conv head, upsampled to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class FPNDecoder(nn.Module):
    """Lateral 1x1 convs, top-down sum, 3x3 smoothing, sum at stride 4, classifier."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels)
        self.fuse = conv_bn_relu(channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](feats[-1])
        outs = [self.smooth[-1](x)]
        for i in range(len(feats) - 2, -1, -1):
            x = self.lateral[i](feats[i]) + F.interpolate(
                x, size=feats[i].shape[-2:], mode="bilinear", align_corners=False
            )
            outs.append(self.smooth[i](x))
        size = outs[-1].shape[-2:]
        fused = sum(F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs)
        return self.classifier(self.dropout(self.fuse(fused)))


class EffNetLite0FPN(nn.Module):
    size_multiple = 32

    def __init__(self, num_classes: int, pretrained: bool = True, channels: int = 64):
        super().__init__()
        from semiearth.models.efficientnet_lite0 import efficientnet_lite0

        self.backbone = efficientnet_lite0(pretrained=pretrained, features_only=True, out_indices=(1, 2, 3, 4))
        self.decoder = FPNDecoder(self.backbone.feature_info.channels(), channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
