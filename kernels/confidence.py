"""Triton kernel 1 of purify_stats: one pass over the logits, per-cell pooling of the candidates.

Each program owns `cells_per_prog` whole cells along x in `cell_rows_per_prog` cell rows, so the
per-cell sums (class histogram, uncertainty mass) are finished in registers and stored once:
no atomics but one per program for the count of non-finite pixels, deterministic results. Inside
a cell row the program walks down in tiles of [ROWS, BLOCK_W] pixels (BLOCK_W contiguous along W:
coalesced loads) and over the classes one at a time with an online softmax (`softmax_step`), so
any C works with one read of the logits and a thread holds a few values per pixel.
"""

import torch
import triton
import triton.language as tl

from ._common import (
    IGNORED_BIT,
    LOW_BIT,
    Launch,
    TileConfig,
    cell_tile,
    class_offset,
    logits_extent,
    needs_wide,
    pixel_offsets,
    softmax_step,
)


@triton.jit
def _confidence_pool_kernel(
    logits_ptr,  # [B,C,H,W] any strides, float32/16/bf16
    ignore_ptr,  # [B,H,W] uint8 (contiguous), read only if HAS_IGNORE
    conf_ptr,  # [B,H,W] float32 out
    label_ptr,  # [B,H,W] int64 out
    flags_ptr,  # [B,H,W] uint8 out (LOW | IGNORED; kernel 2 adds BOUNDARY)
    hist_ptr,  # [B,Hc,Wc,C] int32 out
    mass_ptr,  # [B,Hc,Wc] float32 out
    nonfinite_ptr,  # [] int64, zeroed: pixels with a NaN or inf logit are added
    C,
    H,
    W,
    Hc,
    Wc,
    cell,
    cells_per_prog,  # cells along x owned by one program (<= NC)
    cell_rows_per_prog,  # cell rows owned by one program
    low_thresh,
    s_b,
    s_c,
    s_h,
    s_w,
    HAS_IGNORE: tl.constexpr,
    ROWS: tl.constexpr,  # rows per tile
    BLOCK_W: tl.constexpr,  # columns per tile (>= cells_per_prog * cell when cell <= W)
    NC: tl.constexpr,  # power of two >= cells_per_prog
    CP: tl.constexpr,  # power of two >= C (histogram bins per cell)
    WIDE: tl.constexpr,  # int64 offsets inside an image
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    rr, x, col_ok, lc, cx0 = cell_tile(pid_x, cell, cells_per_prog, W, ROWS, BLOCK_W)
    j = tl.arange(0, NC)
    cbin = tl.arange(0, NC * CP)
    logits_img = logits_ptr + b * s_b
    img = b * H * W  # int64, as b is
    conf_img, label_img, flags_img, ignore_img = conf_ptr + img, label_ptr + img, flags_ptr + img, ignore_ptr + img
    bad_acc = tl.zeros([ROWS * BLOCK_W], tl.int32)

    for cr in range(0, cell_rows_per_prog):
        cy = pid_y * cell_rows_per_prog + cr
        y_start = cy * cell
        y_end = tl.minimum(y_start + cell, H)
        mass_acc = tl.zeros([ROWS * BLOCK_W], tl.float32)
        hist_acc = tl.zeros([NC * CP], tl.int32)
        for y0 in range(y_start, y_end, ROWS):
            y = y0 + rr
            pmask = col_ok & (y < y_end)
            pix = pixel_offsets(y, x, s_h, s_w, WIDE)
            m = tl.full([ROWS * BLOCK_W], float("-inf"), tl.float32)
            s = tl.zeros([ROWS * BLOCK_W], tl.float32)
            lab = tl.zeros([ROWS * BLOCK_W], tl.int32)
            bad = tl.zeros([ROWS * BLOCK_W], tl.int1)
            for c in range(0, C):
                z = tl.load(logits_img + class_offset(c, s_c, WIDE) + pix, mask=pmask, other=0.0).to(tl.float32)
                bad = bad | ~(tl.abs(z) < float("inf"))  # NaN or +-inf
                m, s, lab = softmax_step(z, c, m, s, lab)
            conf = 1.0 / s
            low = conf < low_thresh
            conf = tl.where(bad, float("nan"), conf)
            bad_acc += (bad & pmask).to(tl.int32)
            out = pixel_offsets(y, x, W, 1, WIDE)
            if HAS_IGNORE:
                ign = tl.load(ignore_img + out, mask=pmask, other=0) != 0
            else:
                ign = tl.zeros([ROWS * BLOCK_W], tl.int1)
            flags = tl.where(low, LOW_BIT, 0) | tl.where(ign, IGNORED_BIT, 0)
            tl.store(conf_img + out, conf, mask=pmask)
            tl.store(label_img + out, lab.to(tl.int64), mask=pmask)
            tl.store(flags_img + out, flags.to(tl.uint8), mask=pmask)
            cand = low & (~ign) & pmask
            mass_acc += tl.where(cand, 1.0 - conf, 0.0)
            # Slots outside the program's cells have lc >= NC: keep every bin index in range.
            hist_acc += tl.histogram(tl.where(cand, lc * CP + lab, 0), NC * CP, mask=cand)
        # Finish the cells of this cell row: [NC] masses, [NC * CP] histogram bins.
        cell_ok = (j < cells_per_prog) & (cx0 + j < Wc) & (cy < Hc)
        mass = tl.sum(tl.where(lc[None, :] == j[:, None], mass_acc[None, :], 0.0), axis=1)
        crow = (b * Hc + cy) * Wc + cx0
        tl.store(mass_ptr + crow + j, mass, mask=cell_ok)
        bj = cbin // CP
        bc = cbin % CP
        bin_ok = (bj < cells_per_prog) & (cx0 + bj < Wc) & (bc < C) & (cy < Hc)
        tl.store(hist_ptr + (crow + bj) * C + bc, hist_acc, mask=bin_ok)
    nbad = tl.sum(bad_acc, axis=0).to(tl.int64)
    tl.atomic_add(nonfinite_ptr, nbad, mask=nbad > 0)


def confidence_pool(logits, ignore_u8, low_thresh: float, cell: int, cfg: TileConfig):
    """Kernel 1: (conf, label, flags without BOUNDARY, hist, mass, nonfinite) for logits [B,C,H,W]."""
    outputs, launch = plan_confidence_pool(logits, ignore_u8, low_thresh, cell, cfg)
    launch()
    return outputs


def plan_confidence_pool(logits, ignore_u8, low_thresh: float, cell: int, cfg: TileConfig):
    """The outputs (allocated, not yet written; nonfinite zeroed) and the Launch of kernel 1."""
    b, c, h, w = logits.shape
    hc, wc = -(-h // cell), -(-w // cell)
    dev = logits.device
    conf = torch.empty((b, h, w), dtype=torch.float32, device=dev)
    label = torch.empty((b, h, w), dtype=torch.int64, device=dev)
    flags = torch.empty((b, h, w), dtype=torch.uint8, device=dev)
    hist = torch.empty((b, hc, wc, c), dtype=torch.int32, device=dev)
    mass = torch.empty((b, hc, wc), dtype=torch.float32, device=dev)
    nonfinite = torch.zeros((), dtype=torch.int64, device=dev)
    grid = (triton.cdiv(wc, cfg.cells_per_prog), triton.cdiv(hc, cfg.cell_rows_per_prog), b)
    args = (
        logits,
        ignore_u8 if ignore_u8 is not None else flags,
        conf,
        label,
        flags,
        hist,
        mass,
        nonfinite,
        c,
        h,
        w,
        hc,
        wc,
        cell,
        cfg.cells_per_prog,
        cfg.cell_rows_per_prog,
        float(low_thresh),
        *logits.stride(),
    )
    meta = dict(
        HAS_IGNORE=ignore_u8 is not None,
        ROWS=cfg.ROWS,
        BLOCK_W=cfg.BLOCK_W,
        NC=cfg.NC,
        CP=triton.next_power_of_2(c),
        WIDE=needs_wide(logits_extent(logits), h * w),
        num_warps=cfg.num_warps,
    )
    return (conf, label, flags, hist, mass, nonfinite), Launch(_confidence_pool_kernel, grid, args, meta)
