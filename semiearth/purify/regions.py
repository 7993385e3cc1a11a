"""select_regions: which (cell, pseudo-label class) segments of the teacher's output go to the VLM.

Cells are ranked by their uncertainty mass (sum of 1 - conf over candidate pixels), boosted by the
share of their candidates that lie on a class boundary: score = mass * (1 + boundary_weight * share).
In a selected cell every pseudo-label class with at least `min_pixels` candidates is one segment,
so a boundary cell between road and building yields two regions, one crop per side. Segments are
taken in cell-score order (largest class first inside a cell) until the per-image budget
`max_regions` is spent. The box of a segment is its cell grown by `context` around the cell's centre
and clipped to the image: the VLM sees the segment's neighbourhood, masked to the segment's class.
"""

import torch

from semiearth.ops import PurifyStats


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
    x0, y0 = (cx * cell).float(), (cy * cell).float()
    x1, y1 = ((cx + 1) * cell).clamp(max=w).float(), ((cy + 1) * cell).clamp(max=h).float()
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) * context / 2, (y1 - y0) * context / 2
    regions = torch.stack(
        [
            bidx.float(),
            (mx - hx).clamp(0, w),
            (my - hy).clamp(0, h),
            (mx + hx).clamp(0, w),
            (my + hy).clamp(0, h),
            cls.float(),
        ],
        dim=1,
    )
    seg_table[bidx, cy, cx, cls] = j.to(torch.int32)
    return regions, seg_table
