"""select_regions: which (cell, pseudo-label class) segments of the teacher's output go to the VLM.

Cells are ranked by their uncertainty mass (sum of 1 - conf over candidate pixels), boosted by the
share of their candidates that lie on a class boundary: score = mass * (1 + boundary_weight * share).
In a selected cell every pseudo-label class with at least `min_pixels` candidates is one segment,
so a boundary cell between road and building yields two regions, one crop per side. Segments are
taken in cell-score order (largest class first inside a cell) until the per-image budget
`max_regions` is spent. The box of a segment is its cell grown by `context` around the cell's centre
and clipped to the image: the VLM sees the segment's neighbourhood, masked to the segment's class.

This module owns that geometry: the boxes (:func:`segment_regions`, used by :func:`select_regions`
and :func:`label_regions`, the labelled segments classifiers are fitted on), the ground-truth
histogram of a selected segment (:func:`segment_histogram`) and the crops' normalisation
(:func:`crop_scale_shift`).
"""

import torch
import torch.nn.functional as F

from semiearth.ops import PurifyStats
from semiearth.ops.purify_apply import pixel_regions
from semiearth.purify.classifiers._base import as_triple


def default_min_pixels(cell: int) -> int:
    """1/64 of a cell's area (16 pixels for 32 x 32 cells), at least 1."""
    return max(1, (cell * cell) // 64)


def cell_scores(stats: PurifyStats, boundary_weight: float = 1.0) -> torch.Tensor:
    """[B,Hc,Wc] float32: uncertainty mass boosted by the boundary share of the candidates."""
    ncand = stats.hist.sum(dim=-1)
    share = stats.nboundary.float() / ncand.clamp(min=1).float()
    return stats.mass.float() * (1.0 + boundary_weight * share)


def select_regions(
    stats: PurifyStats,
    max_regions: int = 16,
    min_pixels: int | None = None,
    context: float = 2.0,
    boundary_weight: float = 1.0,
):
    """Regions [N,6] float32 (batch, x1, y1, x2, y2, class) and seg_table [B,Hc,Wc,C] int32.

    seg_table[b, cy, cx, c] is the index of the region made of the candidate pixels of class c in
    cell (cy, cx) of image b, or -1. `max_regions` is a per-image budget; N may be 0. Regions are
    ordered by image, then by rank (most uncertain first). Boxes are in pixel coordinates of the
    logits (x2, y2 exclusive edges, as roi_align boxes), so they apply to images of the same size.

    The selection runs on the device (sorts, no boolean-mask indexing); N, which sizes the crops
    and the classifier's batch, is read on the host: one host-device sync per call.
    """
    if not isinstance(stats, PurifyStats):
        raise TypeError(f"select_regions: stats must be a PurifyStats from purify_stats, got {type(stats).__name__}")
    if isinstance(max_regions, bool) or not isinstance(max_regions, int) or max_regions < 0:
        raise ValueError(f"select_regions: max_regions must be an integer >= 0, got {max_regions!r}")
    cell = stats.cell
    min_pixels = default_min_pixels(cell) if min_pixels is None else min_pixels
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
        raise ValueError(f"select_regions: min_pixels must be an integer >= 1, got {min_pixels!r}")
    if not isinstance(context, (int, float)) or not context > 0:
        raise ValueError(f"select_regions: context must be a number > 0, got {context!r}")
    if not isinstance(boundary_weight, (int, float)) or boundary_weight < 0:
        raise ValueError(f"select_regions: boundary_weight must be a number >= 0, got {boundary_weight!r}")

    hist = stats.hist
    device = hist.device
    b, hc, wc, c = hist.shape
    h, w = stats.label.shape[1:]
    seg_table = torch.full((b, hc, wc, c), -1, dtype=torch.int32, device=device)
    if max_regions == 0 or hist.numel() == 0:
        return torch.zeros((0, 6), dtype=torch.float32, device=device), seg_table

    counts = hist.reshape(b, -1)  # [B, Hc*Wc*C], flat index = (cy * Wc + cx) * C + class
    valid = counts >= min_pixels
    score = cell_scores(stats, boundary_weight)[..., None].expand(b, hc, wc, c).reshape(b, -1)
    score = torch.where(valid, score, torch.full_like(score, -1.0))
    # Lexicographic order: cell score, then class count, then flat index (stable sorts, last key first).
    order = torch.sort(counts, dim=1, descending=True, stable=True).indices
    order = order.gather(1, torch.sort(score.gather(1, order), dim=1, descending=True, stable=True).indices)
    take = min(max_regions, order.shape[1])
    top = order[:, :take]  # [B, take]: each image's budget of slots, best first
    keep = valid.gather(1, top)
    # The valid slots first in each row, in rank order (they are already, valid scores being > -1;
    # the stable sort makes it certain), so that the regions are a prefix of every row.
    top = top.gather(1, torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices)
    per_image = keep.sum(dim=1)  # [B]
    n = int(per_image.sum())  # the one host-device sync: N sizes the crops and the classifier's batch
    if n == 0:
        return torch.zeros((0, 6), dtype=torch.float32, device=device), seg_table
    # Region j is slot j - start[b] of image b, where b is the image whose slots cover j.
    ends = per_image.cumsum(0)
    j = torch.arange(n, device=device)
    bidx = torch.searchsorted(ends, j, right=True)
    flat = top[bidx, j - (ends - per_image)[bidx]]
    cls = flat % c
    cxy = flat // c
    cy, cx = cxy // wc, cxy % wc
    regions = segment_regions(bidx, cy, cx, cls, cell, context, h, w)
    seg_table[bidx, cy, cx, cls] = j.to(torch.int32)
    return regions, seg_table


def segment_regions(b, cy, cx, cls, cell: int, context: float, h: int, w: int) -> torch.Tensor:
    """Regions [N,6] float32 (batch, x1, y1, x2, y2, class) of the (cell, class) segments given by
    [N] integer tensors b, cy, cx, cls: the box of a segment is its cell (clipped to the h x w image)
    grown by ``context`` around the cell's centre and clipped to the image, in pixel coordinates
    (x2, y2 exclusive edges, as roi_align boxes). The one box geometry of VLM-PP: the purifier's
    segments (:func:`select_regions`) and the labelled ones (:func:`label_regions`) share it."""
    x0, y0 = (cx * cell).float(), (cy * cell).float()
    x1, y1 = ((cx + 1) * cell).clamp(max=w).float(), ((cy + 1) * cell).clamp(max=h).float()
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) * context / 2, (y1 - y0) * context / 2
    return torch.stack(
        [
            b.float(),
            (mx - hx).clamp(0, w),
            (my - hy).clamp(0, h),
            (mx + hx).clamp(0, w),
            (my + hy).clamp(0, h),
            cls.float(),
        ],
        dim=1,
    )


def label_regions(masks: torch.Tensor, num_classes: int, cell: int, context: float, min_pixels: int, ignore_index=255):
    """Every (cell, class) segment of ground-truth masks [B,H,W] with >= min_pixels pixels -> regions
    [N,6] (:func:`segment_regions`), ordered by image, class, cell row, cell column: the labelled
    segments the prototype classifier is fitted on and the abstaining wrapper is calibrated on, cut
    like the purifier cuts pseudo-labels."""
    b, h, w = masks.shape
    hc, wc = -(-h // cell), -(-w // cell)
    valid = (masks != ignore_index) & (masks >= 0) & (masks < num_classes)
    onehot = F.one_hot(masks.clamp(0, num_classes - 1) * valid, num_classes) * valid[..., None]
    onehot = F.pad(onehot.permute(0, 3, 1, 2).float(), (0, wc * cell - w, 0, hc * cell - h))
    hist = onehot.reshape(b, num_classes, hc, cell, wc, cell).sum(dim=(3, 5))  # [B,C,Hc,Wc]
    bi, ci, cy, cx = (hist >= min_pixels).nonzero(as_tuple=True)
    return segment_regions(bi, cy, cx, ci, cell, context, h, w)


def segment_histogram(stats: PurifyStats, seg_table: torch.Tensor, gt: torch.Tensor, n: int, c: int, ignore_index=255):
    """[n,c] float32: ground-truth class counts of the candidate pixels of each selected segment.

    stats/seg_table [B,Hc,Wc,C] as select_regions made them, gt [B,H,W] int64 (ignore_index skipped).
    The rows are what purification may change, so argmax of a row is the segment's true class.
    Computed on the device without a host sync (every pixel counted, the others in a spare slot).
    """
    dev = stats.label.device
    if gt.device != dev:
        gt = gt.to(dev)
    valid = (gt != ignore_index) & (gt >= 0) & (gt < c)
    region, hit = pixel_regions(stats, seg_table)
    keep = hit & valid
    idx = torch.where(keep, region.long() * c + gt, n * c).flatten()
    counts = torch.zeros(n * c + 1, dtype=torch.int64, device=dev).index_add_(0, idx, torch.ones_like(idx))
    return counts[: n * c].reshape(n, c).float()


def crop_scale_shift(images, image_mean, image_std, mean, std):
    """crop_batch scale/shift that map the given images (normalised with image_mean/std from RGB in
    [0, 1]; uint8 images are taken as RGB 0..255) to the classifier's normalisation mean/std."""
    m, s = torch.tensor(as_triple("mean", mean)), torch.tensor(as_triple("std", std))
    if images.dtype == torch.uint8:
        return (1.0 / (255.0 * s)).tolist(), (-m / s).tolist()
    im, istd = torch.tensor(as_triple("image_mean", image_mean)), torch.tensor(as_triple("image_std", image_std))
    return (istd / s).tolist(), ((im - m) / s).tolist()
