"""Losses: supervised cross-entropy and the confidence-masked unsupervised cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    return F.cross_entropy(logits.float(), mask, ignore_index=ignore_index)


def unsupervised_loss(logits, label, conf, valid, threshold: float):
    """CE on pixels with conf >= threshold among `valid` ones, averaged over all valid pixels
    (UniMatch's normalisation). Returns (loss, mask_ratio = admitted / valid)."""
    admitted = (conf >= threshold) & valid
    ce = F.cross_entropy(logits.float(), label, reduction="none")
    n_valid = valid.sum().clamp(min=1)
    loss = (ce * admitted).sum() / n_valid
    return loss, (admitted.sum() / n_valid).detach()
