"""Inference: whole-image (resized to a multiple of the model's patch size) or sliding window.

Both take normalised images [B,3,H,W] and return softmax probabilities [B,C,H,W].
:func:`sliding_average` is the one sliding window (window starts: :func:`window_starts`): it reads
an image of any size a batch of windows at a time and yields finished averages in bounded memory;
:func:`predict_sliding` (evaluation, images in memory) and :func:`predict_strips` (label rows,
semiearth-predict) are its two consumers.
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


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` px every ``stride`` px along an axis of ``length`` px,
    the last one flush with the end (it may overlap its neighbour by more); ``[0]`` when the axis is
    not longer than one window. Used by every sliding window and tiling of the package."""
    if length <= window:
        return [0]
    return sorted(set(range(0, length - window, stride)) | {length - window})


class TensorSource:
    """Normalised images in memory, [3,h,w] or a batch [B,3,h,w] of one size, as the window source
    of :func:`sliding_average` (zeros past their edges, as an image smaller than the window is padded)."""

    def __init__(self, image: torch.Tensor, window: int):
        h, w = image.shape[-2:]
        self.shape = (int(h), int(w))
        ph, pw = max(0, window - h), max(0, window - w)
        self.x = F.pad(image, (0, pw, 0, ph)) if (ph or pw) else image

    def read(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        return self.x[..., y0:y1, x0:x1]


@torch.no_grad()
def predict_sliding(model, images: torch.Tensor, window: int, stride: int, multiple: int = 1) -> torch.Tensor:
    """Softmax-average windows of size `window` every `stride` px (last window flush with the edge):
    images [B,3,H,W] -> probabilities [B,C,H,W] (:func:`sliding_average` of the batch, one window of
    the B images a forward pass).

    An image smaller than the window is padded (zeros, i.e. the mean colour) to the window size.
    """
    out = None
    source = TensorSource(images, window)
    for y, x, probs in sliding_average(model, source, window, stride, 1, multiple, device=images.device):
        if out is None:
            out = images.new_zeros(*probs.shape[:2], *images.shape[-2:], dtype=torch.float32)
        out[:, :, y : y + probs.shape[2], x : x + probs.shape[3]] = probs
    return out


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
    """Label rows of an image of any size, top to bottom: yields (top row, labels [n,w] uint8), the
    argmax of :func:`sliding_average` (the same windows, sums and counts as :func:`predict_sliding`,
    so the same labels), a row of windows at a time."""
    h, w = source.shape
    top, strip = None, None
    for y, x, probs in sliding_average(model, source, window, stride, batch_size, multiple, progress):
        if y != top:
            if strip is not None:
                yield top, strip
            top, strip = y, np.empty((probs.shape[2], w), dtype=np.uint8)
        strip[:, x : x + probs.shape[3]] = probs[0].argmax(0).to(torch.uint8).cpu().numpy()
    if strip is not None:
        yield top, strip


@torch.no_grad()
def sliding_average(
    model, source, window: int, stride: int, batch_size: int = 4, multiple: int = 1, progress=None, device=None
):
    """The sliding-window inference: softmax outputs of windows of size ``window`` every ``stride``
    px (:func:`window_starts`; an image smaller than the window is padded with zeros) averaged per
    pixel, yielded in finished pieces (y, x, probs [B, C, n, m] float32) for rows [y, y+n) and columns
    [x, x+m) of the image, top to bottom and left to right; each pixel once. ``source``: ``.shape``
    (h, w) and ``.read(y0, y1, x0, x1)`` -> the normalised image [3, y1-y0, x1-x0] (B = 1) or images
    [B, 3, y1-y0, x1-x0] with zeros past their edges, asked for one batch of windows at a time, so the
    image never has to be in memory. A forward pass takes ``batch_size`` windows of the B images.

    Memory: one row of windows is processed in batches of ``batch_size`` windows left to right;
    the columns no later batch of the row reaches are finished at once, so besides one batch only
    the running sums of the rows the next row of windows overlaps are kept ([classes, <= window -
    the smallest step, w] floats). Every pixel's sum runs over the same windows in the same order
    (rows of windows top to bottom, left to right within a row) as a whole-image accumulation, and
    is divided by the same count, so the averages are those of it to the bit. ``device``: where the
    windows are predicted (default: the model's)."""
    h, w = source.shape
    if stride > window:
        raise ValueError(f"stride {stride} > window {window}: pixels between windows would get no prediction")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    H, W = max(h, window), max(w, window)
    ys, xs = window_starts(H, window, stride), window_starts(W, window, stride)
    batches = [xs[i : i + batch_size] for i in range(0, len(xs), batch_size)]
    ny, nx = _coverage(ys, window, H).to(device), _coverage(xs, window, W).to(device)
    keep = max((window - (b - a) for a, b in zip(ys, ys[1:], strict=False)), default=0)
    carry = None  # [B, C, keep, W]: sums of rows [y, y + carried) from the rows of windows above
    for i, y in enumerate(ys):
        last = i + 1 == len(ys)
        done = (H if last else ys[i + 1]) - y  # rows [y, y + done) are final after this row of windows
        kept = 0 if last else window - done  # rows [y + done, y + window) go on to the next row
        carried = ys[i - 1] + window - y if i else 0
        rows = min(done, h - y)  # of them, rows of the image
        pend, p0 = None, 0  # [B, C, window, n]: sums of rows [y, y + window), columns [p0, p0 + n)
        for k, batch in enumerate(batches):
            x0, x1 = batch[0], batch[-1] + window
            region = source.read(y, y + window, x0, x1)
            region = region[None] if region.dim() == 3 else region
            crops = torch.cat([region[..., xx - x0 : xx - x0 + window] for xx in batch]).to(device)
            probs = predict_whole(model, crops, multiple).float()
            probs = probs.reshape(len(batch), region.shape[0], *probs.shape[1:])  # [windows, B, C, window, window]
            if carry is None:
                carry = torch.zeros(*probs.shape[1:3], keep, W, device=device)
            p1 = p0 + (pend.shape[3] if pend is not None else 0)
            new = torch.zeros(*probs.shape[1:3], window, x1 - p1, device=device)
            new[:, :, :carried] = carry[:, :, :carried, p1:x1]
            pend = new if pend is None else torch.cat([pend, new], 3)
            for xx, p in zip(batch, probs, strict=True):
                pend[..., xx - p0 : xx - p0 + window] += p
            f = batches[k + 1][0] if k + 1 < len(batches) else W  # columns [p0, f) are final for this row
            part = pend[..., : f - p0]
            if kept:
                carry[:, :, :kept, p0:f] = part[:, :, done:]
            c1 = min(f, w)
            if c1 > p0 and rows > 0:
                avg = part[:, :, :done] / (ny[y : y + done, None] * nx[None, p0:f])
                yield y, p0, avg[:, :, :rows, : c1 - p0]
            pend, p0 = pend[..., f - p0 :], f
            if progress is not None:
                progress.update(len(batch))
