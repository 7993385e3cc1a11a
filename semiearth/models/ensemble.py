"""MeanProbabilities: several segmentation networks as one (the average of their class probabilities)."""

from __future__ import annotations

import torch
from torch import nn


class MeanProbabilities(nn.Module):
    """images [B,3,H,W] -> log of the mean softmax of `networks` [B,C,H,W].

    A log-probability map: its argmax is the ensemble's prediction and its softmax the mean
    probability, so it drops in wherever a network's logits are read (evaluation, prediction).
    """

    def __init__(self, networks):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.size_multiple = max(getattr(m, "size_multiple", 1) for m in self.networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(1) for m in self.networks]).mean(0)
        return probs.clamp_min(1e-12).log()
