"""Triton kernel 2 of purify_stats: class-boundary flag and per-cell boundary count.

A light second pass over the int64 labels that kernel 1 wrote: a pixel is BOUNDARY when a pixel
at Chebyshev distance <= radius, inside the image and not ignored, has another label. The
neighbour loads hit L1/L2 (the same rows are being read by this and the neighbouring programs),
so DRAM traffic is ~one read of label + flags and one write of flags. Same ownership of whole
cells as kernel 1 (see confidence.py), so nboundary is stored without atomics.
"""

import torch
import triton
import triton.language as tl

from ._common import BOUNDARY_BIT, IGNORED_BIT, LOW_BIT, Launch, TileConfig, cell_tile, needs_wide, pixel_offsets


@triton.jit
def _boundary_pool_kernel(
    label_ptr,  # [B,H,W] int64 (contiguous)
    ignore_ptr,  # [B,H,W] uint8 (contiguous), read only if HAS_IGNORE
    flags_ptr,  # [B,H,W] uint8 in/out: BOUNDARY is added
    nbnd_ptr,  # [B,Hc,Wc] int32 out
    H,
    W,
    Hc,
    Wc,
    cell,
    cells_per_prog,
    cell_rows_per_prog,
    HAS_IGNORE: tl.constexpr,
    RADIUS: tl.constexpr,  # neighbourhood radius (small: the neighbour loops unroll)
    ROWS: tl.constexpr,
    BLOCK_W: tl.constexpr,
    NC: tl.constexpr,
    WIDE: tl.constexpr,  # int64 offsets inside an image
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    rr, x, col_ok, lc, cx0 = cell_tile(pid_x, cell, cells_per_prog, W, ROWS, BLOCK_W)
    j = tl.arange(0, NC)
    img = b * H * W  # int64, as b is
    label_img, ignore_img, flags_img = label_ptr + img, ignore_ptr + img, flags_ptr + img

    for cr in range(0, cell_rows_per_prog):
        cy = pid_y * cell_rows_per_prog + cr
        y_start = cy * cell
        y_end = tl.minimum(y_start + cell, H)
        nb_acc = tl.zeros([ROWS * BLOCK_W], tl.int32)
        for y0 in range(y_start, y_end, ROWS):
            y = y0 + rr
            pmask = col_ok & (y < y_end)
            out = pixel_offsets(y, x, W, 1, WIDE)
            lab = tl.load(label_img + out, mask=pmask, other=0)
            flags = tl.load(flags_img + out, mask=pmask, other=0).to(tl.int32)
            bnd = tl.zeros([ROWS * BLOCK_W], tl.int1)
            for dy in range(-RADIUS, RADIUS + 1):
                ny = y + dy
                row_ok = pmask & (ny >= 0) & (ny < H)
                for dx in tl.static_range(-RADIUS, RADIUS + 1):
                    nx = x + dx
                    ok = row_ok & (nx >= 0) & (nx < W)
                    nofs = pixel_offsets(ny, nx, W, 1, WIDE)
                    nl = tl.load(label_img + nofs, mask=ok, other=0)
                    if HAS_IGNORE:
                        ok = ok & (tl.load(ignore_img + nofs, mask=ok, other=1) == 0)
                    bnd = bnd | (ok & (nl != lab))
            flags = flags | tl.where(bnd, BOUNDARY_BIT, 0)
            tl.store(flags_img + out, flags.to(tl.uint8), mask=pmask)
            cand = (flags & (LOW_BIT | IGNORED_BIT)) == LOW_BIT
            nb_acc += (cand & bnd & pmask).to(tl.int32)
        cell_ok = (j < cells_per_prog) & (cx0 + j < Wc) & (cy < Hc)
        nb = tl.sum(tl.where(lc[None, :] == j[:, None], nb_acc[None, :], 0), axis=1)
        tl.store(nbnd_ptr + (b * Hc + cy) * Wc + cx0 + j, nb, mask=cell_ok)


def boundary_pool(label, ignore_u8, flags, radius: int, cell: int, cfg: TileConfig) -> torch.Tensor:
    """Kernel 2: add BOUNDARY to `flags` in place and return nboundary [B,Hc,Wc] int32."""
    nbnd, launch = plan_boundary_pool(label, ignore_u8, flags, radius, cell, cfg)
    launch()
    return nbnd


def plan_boundary_pool(label, ignore_u8, flags, radius: int, cell: int, cfg: TileConfig):
    """nboundary (allocated, not yet written) and the Launch of kernel 2."""
    b, h, w = label.shape
    hc, wc = -(-h // cell), -(-w // cell)
    nbnd = torch.empty((b, hc, wc), dtype=torch.int32, device=label.device)
    grid = (triton.cdiv(wc, cfg.cells_per_prog), triton.cdiv(hc, cfg.cell_rows_per_prog), b)
    args = (
        label,
        ignore_u8 if ignore_u8 is not None else flags,
        flags,
        nbnd,
        h,
        w,
        hc,
        wc,
        cell,
        cfg.cells_per_prog,
        cfg.cell_rows_per_prog,
    )
    meta = dict(
        HAS_IGNORE=ignore_u8 is not None,
        RADIUS=int(radius),
        ROWS=cfg.ROWS,
        BLOCK_W=cfg.BLOCK_W,
        NC=cfg.NC,
        WIDE=needs_wide(h * w),
        num_warps=cfg.num_warps,
    )
    return nbnd, Launch(_boundary_pool_kernel, grid, args, meta)
