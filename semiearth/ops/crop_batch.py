"""crop_batch: mask-to-crop batching of image regions for the VLM, in one pass.

Every region (batch, x1, y1, x2, y2, class) is resampled to size x size exactly like torchvision
`roi_align(aligned=True, sampling_ratio=1)` (one bilinear sample at each bin centre, pixel centres
at integer + 0.5), normalised per channel as x * scale + shift (undo the training normalisation and
apply the VLM's in one go), and, with `labels` and `mask`, samples whose nearest pixel belongs to
another class than the region's get `fill` (the VLM's mean colour, 0 after normalisation).
Samples outside the image get `fill` too.
"""

import math
import numbers
from collections.abc import Sequence

import torch

from semiearth.ops._checks import require
from semiearth.ops._extension import call, resolve
from semiearth.ops._validate import check_int, check_same_device, check_tensor

OP = "crop_batch"
Channelwise = float | Sequence[float] | torch.Tensor


def crop_batch(
    images: torch.Tensor,
    regions: torch.Tensor,
    size: int = 224,
    labels: torch.Tensor | None = None,
    scale: Channelwise = 1.0,
    shift: Channelwise = 0.0,
    mask: bool = True,
    fill: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Crop regions [N,6] of images [B,3,H,W] (float32 or uint8) into [N,3,size,size] float32.

    backend: "auto" (CUDA kernel on GPU, C++ on CPU), "torch", "cpp" or "cuda".
    """
    check_tensor(OP, "images", images, 4, (torch.float32, torch.uint8), "[B,3,H,W] float32 or uint8")
    if images.shape[1] != 3 or images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"{OP}: images must have shape [B,3,H,W] with H, W >= 1, got {tuple(images.shape)}")
    check_regions(images, regions)
    check_int(OP, "size", size, 1)
    if labels is not None:
        check_tensor(OP, "labels", labels, 3, (torch.int64,), "[B,H,W] int64")
        b, _, h, w = images.shape
        if tuple(labels.shape) != (b, h, w):
            raise ValueError(f"{OP}: labels must have shape {(b, h, w)} to match images, got {tuple(labels.shape)}")
    scale_t = channelwise("scale", scale)
    shift_t = channelwise("shift", shift)
    check_same_device(OP, "images", images, regions=regions, labels=labels)
    use_mask = bool(mask) and labels is not None
    backend = resolve(OP, backend, images.device)
    if backend == "torch":
        scale_t, shift_t = scale_t.to(images.device), shift_t.to(images.device)
        return crop_batch_reference(images, regions, size, labels, scale_t, shift_t, use_mask, fill)
    labels_c = labels.contiguous() if use_mask else None
    return call(OP, backend, images.contiguous(), regions.contiguous(), size, labels_c, scale_t, shift_t, use_mask,
                float(fill))  # fmt: skip


def check_regions(images: torch.Tensor, regions: torch.Tensor) -> None:
    """regions [N,6] float (batch, x1, y1, x2, y2, class): batch index in range, x1 <= x2, y1 <= y2."""
    check_tensor(
        OP, "regions", regions, 2, (torch.float32, torch.float64), "[N,6] float (batch, x1, y1, x2, y2, class)"
    )
    if regions.shape[1] != 6:
        raise ValueError(
            f"{OP}: regions must have shape [N,6] (batch, x1, y1, x2, y2, class), got {tuple(regions.shape)}"
        )
    if regions.shape[0] == 0:
        return
    b = images.shape[0]
    batch = regions[:, 0]
    require(torch.isfinite(regions), lambda n: ValueError(f"{OP}: regions contain NaN or inf ({n} values)"))
    require((batch == batch.round()) & (batch >= 0) & (batch < b), lambda n: ValueError(
        f"{OP}: regions[:, 0] must be integer batch indices in [0, {b}); {n} region(s) are not"))  # fmt: skip
    require((regions[:, 3] >= regions[:, 1]) & (regions[:, 4] >= regions[:, 2]), lambda n: ValueError(
        f"{OP}: regions must have x2 >= x1 and y2 >= y1 (boxes are x1, y1, x2, y2); {n} do not"))  # fmt: skip


def channelwise(name: str, value: Channelwise) -> torch.Tensor:
    """A scalar or 3 values -> float32 tensor [3] on the CPU: the kernels take them as arguments,
    so a CUDA call copies nothing to the device for them (a tensor on the device is read once)."""
    values = value.flatten().tolist() if isinstance(value, torch.Tensor) else value
    values = list(values) if isinstance(values, Sequence) else [values]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
        raise ValueError(f"{OP}: {name} must be a finite scalar or 3 per-channel values, got {value!r}")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def crop_batch_reference(images, regions, size, labels=None, scale=None, shift=None, mask=False, fill=0.0):
    """Plain-torch specification of crop_batch; scale/shift are float32 [3]."""
    n = regions.shape[0]
    _, _, h, w = images.shape
    scale = torch.ones(3, device=images.device) if scale is None else scale
    shift = torch.zeros(3, device=images.device) if shift is None else shift
    if n == 0:
        return images.new_zeros((0, 3, size, size), dtype=torch.float32)
    r = regions.double()
    b = r[:, 0].long()
    ys, yvalid = sample_coords(r[:, 2], r[:, 4], size, h)  # [N,S]
    xs, xvalid = sample_coords(r[:, 1], r[:, 3], size, w)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    ly, lx = (ys - y0)[:, :, None], (xs - x0)[:, None, :]
    img = images.double()

    def gather(yi, xi):  # [N,S] rows x [N,S] cols -> [N,3,S,S]
        return img[b[:, None, None], :, yi[:, :, None], xi[:, None, :]].permute(0, 3, 1, 2)

    val = (
        gather(y0, x0) * ((1 - ly) * (1 - lx))[:, None]
        + gather(y0, x1) * ((1 - ly) * lx)[:, None]
        + gather(y1, x0) * (ly * (1 - lx))[:, None]
        + gather(y1, x1) * (ly * lx)[:, None]
    )
    out = val.float() * scale[None, :, None, None] + shift[None, :, None, None]
    keep = yvalid[:, :, None] & xvalid[:, None, :]
    if mask and labels is not None:
        ny = (ys + 0.5).floor().long().clamp(max=h - 1)
        nx = (xs + 0.5).floor().long().clamp(max=w - 1)
        near = labels[b[:, None, None], ny[:, :, None], nx[:, None, :]]
        keep &= near == regions[:, 5].long()[:, None, None]
    return torch.where(keep[:, None], out, torch.full_like(out, fill))


def sample_coords(lo: torch.Tensor, hi: torch.Tensor, size: int, extent: int):
    """roi_align(aligned=True, sampling_ratio=1) sample positions along one axis.

    Returns the clamped coordinates [N,S] (float64) and whether each sample is inside the image
    (roi_align's rule: -1 <= c <= extent).
    """
    bin_size = (hi - lo) / size
    steps = torch.arange(size, dtype=torch.float64, device=lo.device) + 0.5
    c = (lo - 0.5)[:, None] + steps[None, :] * bin_size[:, None]
    valid = (c >= -1.0) & (c <= extent)
    c = c.clamp(min=0.0)
    c = torch.where(c >= extent - 1, torch.full_like(c, float(extent - 1)), c)
    return c, valid
