"""Inference: whole-image (resized to a multiple of the model's patch size) or sliding window.

Both take normalised images [B,3,H,W] and return softmax probabilities [B,C,H,W].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_whole(model, images: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    """Resize to the nearest multiple of `multiple` (if needed), predict, resize back."""
    h, w = images.shape[-2:]
    th, tw = (max(multiple, round(s / multiple) * multiple) for s in (h, w))
    x = images if (th, tw) == (h, w) else F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False)
    logits = model(x).float()
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.softmax(1)


def _starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride)) + [size - window]
    return sorted(set(starts))


@torch.no_grad()
def predict_sliding(model, images: torch.Tensor, window: int, stride: int, multiple: int = 1) -> torch.Tensor:
    """Softmax-average windows of size `window` every `stride` px (last window flush with the edge).

    An image smaller than the window is padded (zeros, i.e. the mean colour) to the window size.
    """
    b, _, h, w = images.shape
    ph, pw = max(0, window - h), max(0, window - w)
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    H, W = x.shape[-2:]
    probs = None
    count = torch.zeros(1, 1, H, W, device=images.device)
    for y in _starts(H, window, stride):
        for xs in _starts(W, window, stride):
            crop = x[..., y : y + window, xs : xs + window]
            p = predict_whole(model, crop, multiple)
            if probs is None:
                probs = torch.zeros(b, p.shape[1], H, W, device=images.device)
            probs[..., y : y + window, xs : xs + window] += p
            count[..., y : y + window, xs : xs + window] += 1
    return (probs / count)[..., :h, :w]


def predict(model, images: torch.Tensor, mode: str = "whole", window: int = 512, stride: int = 341, multiple: int = 1):
    if mode == "whole":
        return predict_whole(model, images, multiple)
    if mode == "slide":
        return predict_sliding(model, images, window, stride, multiple)
    raise ValueError(f"eval.mode: unknown mode {mode!r}; expected whole or slide")
