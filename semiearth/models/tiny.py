"""tiny: a few-thousand-parameter CNN for tests and smoke runs (no pretrained weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySegNet(nn.Module):
    size_multiple = 4

    def __init__(self, num_classes: int, channels: int = 16):
        super().__init__()
        c = channels
        self.backbone = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        )  # fmt: skip
        self.decoder = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.decoder(self.backbone(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)
