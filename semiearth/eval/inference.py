"""Inference: whole-image (resized to a multiple of the model's patch size) or sliding window.

Both take normalised images [B,3,H,W] and return softmax probabilities [B,C,H,W].
:func:`predict_strips` is the sliding window for images of any size (semiearth-predict): it reads
the image a batch of windows at a time and yields finished label rows, in bounded memory.
"""

from __future__ import annotations

import numpy as np
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


def _coverage(starts: list[int], window: int, size: int) -> torch.Tensor:
    """How many windows cover each position of an axis [size] (float32; exact small integers)."""
    d = torch.zeros(size + 1, dtype=torch.int64)
    for s in starts:
        d[s] += 1
        d[min(s + window, size)] -= 1
    return d.cumsum(0)[:size].float()


@torch.no_grad()
def predict_strips(model, source, window: int, stride: int, batch_size: int = 4, multiple: int = 1, progress=None):
    """Label rows of an image of any size, top to bottom: yields (top row, labels [n,w] uint8).

    Softmax outputs of windows of size ``window`` every ``stride`` px (the last flush with the edge;
    an image smaller than the window is padded with zeros) are averaged and argmax'd, like
    :func:`predict_sliding`. ``source``: ``.shape`` (h, w) and ``.read(y0, y1, x0, x1)`` -> the
    normalised image [3, y1-y0, x1-x0] with zeros past its edges, asked for one batch of windows at
    a time, so the image never has to be in memory.

    Memory: one row of windows is processed in batches of ``batch_size`` windows left to right;
    the columns no later batch of the row reaches are finished at once, so besides one batch only
    the running sums of the rows the next row of windows overlaps are kept ([classes, <= window -
    the smallest step, w] floats). Every pixel's sum runs over the same windows in the same order
    (rows of windows top to bottom, left to right within a row) as a whole-image accumulation, and
    is divided by the same count, so labels are identical to it."""
    h, w = source.shape
    if stride > window:
        raise ValueError(f"stride {stride} > window {window}: pixels between windows would get no prediction")
    dev = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    H, W = max(h, window), max(w, window)
    ys, xs = _starts(H, window, stride), _starts(W, window, stride)
    batches = [xs[i : i + batch_size] for i in range(0, len(xs), batch_size)]
    ny, nx = _coverage(ys, window, H).to(dev), _coverage(xs, window, W).to(dev)
    keep = max((window - (b - a) for a, b in zip(ys, ys[1:], strict=False)), default=0)
    carry = None  # [C, keep, W]: sums of rows [y, y + carried) from the rows of windows above
    for i, y in enumerate(ys):
        last = i + 1 == len(ys)
        done = (H if last else ys[i + 1]) - y  # rows [y, y + done) are final after this row of windows
        kept = 0 if last else window - done  # rows [y + done, y + window) go on to the next row
        carried = ys[i - 1] + window - y if i else 0
        strip = np.empty((min(done, h - y), w), dtype=np.uint8)
        pend, p0 = None, 0  # sums of rows [y, y + window), columns [p0, p0 + pend width)
        for k, batch in enumerate(batches):
            x0, x1 = batch[0], batch[-1] + window
            region = source.read(y, y + window, x0, x1)
            crops = torch.stack([region[:, :, xx - x0 : xx - x0 + window] for xx in batch]).to(dev)
            probs = predict_whole(model, crops, multiple).float()
            if carry is None:
                carry = torch.zeros(probs.shape[1], keep, W, device=dev)
            p1 = p0 + (pend.shape[2] if pend is not None else 0)
            new = torch.zeros(probs.shape[1], window, x1 - p1, device=dev)
            new[:, :carried] = carry[:, :carried, p1:x1]
            pend = new if pend is None else torch.cat([pend, new], 2)
            for xx, p in zip(batch, probs, strict=True):
                pend[:, :, xx - p0 : xx - p0 + window] += p
            f = batches[k + 1][0] if k + 1 < len(batches) else W  # columns [p0, f) are final for this row
            part = pend[:, :, : f - p0]
            if kept:
                carry[:, :kept, p0:f] = part[:, done:]
            c1 = min(f, w)
            if c1 > p0 and len(strip):
                label = (part[:, :done] / (ny[y : y + done, None] * nx[None, p0:f])).argmax(0)
                strip[:, p0:c1] = label[: len(strip), : c1 - p0].to(torch.uint8).cpu().numpy()
            pend, p0 = pend[:, :, f - p0 :], f
            if progress is not None:
                progress.update(len(batch))
        if len(strip):
            yield y, strip
