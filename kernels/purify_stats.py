"""Triton backend of `semiearth.ops.purify_stats` (the torch reference there is the spec).

Two launches: `confidence_pool` (one read of the logits: conf, label, LOW/IGNORED flags, class
histogram and mass per cell, count of non-finite pixels) and `boundary_pool` (a light pass over
the labels: BOUNDARY flag and boundary count per cell).
"""

import torch

from ._common import tile_config
from .boundary_pool import boundary_pool
from .confidence import confidence_pool


def purify_stats_triton(
    logits: torch.Tensor,
    low_thresh: float,
    radius: int,
    cell: int,
    ignore: torch.Tensor | None = None,
):
    """(conf, label, flags, hist, mass, nboundary, nonfinite) of logits [B,C,H,W] float32/16/bf16,
    the outputs of the op's schema (csrc/ops.cpp).

    conf [B,H,W] float32 (NaN where any logit of the pixel is NaN or inf), label [B,H,W] int64,
    flags [B,H,W] uint8, hist [B,Hc,Wc,C] int32, mass [B,Hc,Wc] float32, nboundary [B,Hc,Wc]
    int32 with Hc = ceil(H / cell), Wc = ceil(W / cell), nonfinite [] int64 the number of pixels
    with a NaN or inf logit (the caller raises). logits may have any strides (read in place);
    ignore is an optional [B,H,W] bool mask. Arguments are assumed validated by
    semiearth.ops.purify_stats.
    """
    _, _, h, w = logits.shape
    ignore_u8 = None if ignore is None else ignore.contiguous().view(torch.uint8)
    cfg = tile_config(h, w, cell, gpu=logits.is_cuda)
    conf, label, flags, hist, mass, nonfinite = confidence_pool(logits, ignore_u8, float(low_thresh), cell, cfg)
    nboundary = boundary_pool(label, ignore_u8, flags, int(radius), cell, cfg)
    return conf, label, flags, hist, mass, nboundary, nonfinite
