"""Triton kernel 1 of purify_stats: one pass over the logits, per-cell pooling of the candidates.

Each program owns `cells_per_prog` whole cells along x in `cell_rows_per_prog` cell rows, so the
per-cell sums (class histogram, uncertainty mass) are finished in registers and stored once:
no atomics, deterministic results. Inside a cell row the program walks down in tiles of
[ROWS, BLOCK_W] pixels (BLOCK_W contiguous along W: coalesced loads), and over the classes in
chunks of BLOCK_C with an online softmax, so any C works with one read of the logits.

purify_apply's bayes rule computes its confidence with the same `chunk_softmax_update` on the same
tiles (_common.py).
"""

import torch
import triton
import triton.language as tl

from ._common import IGNORED_BIT, LOW_BIT, Launch, TileConfig, cell_tile, chunk_softmax_update


@triton.jit
def _confidence_pool_kernel(
    logits_ptr,  # [B,C,H,W] any strides, float32/16/bf16
    ignore_ptr,  # [B,H,W] uint8 (contiguous), read only if HAS_IGNORE
    conf_ptr,  # [B,H,W] float32 out
    label_ptr,  # [B,H,W] int64 out
    flags_ptr,  # [B,H,W] uint8 out (LOW | IGNORED; kernel 2 adds BOUNDARY)
    hist_ptr,  # [B,Hc,Wc,C] int32 out
    mass_ptr,  # [B,Hc,Wc] float32 out
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
    BLOCK_C: tl.constexpr,  # classes per chunk
    ROWS: tl.constexpr,  # rows per tile
    BLOCK_W: tl.constexpr,  # columns per tile (>= cells_per_prog * cell when cell <= W)
    NC: tl.constexpr,  # power of two >= cells_per_prog
    CP: tl.constexpr,  # power of two >= C (histogram bins per cell)
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    rr, x, col_ok, lc, cx0 = cell_tile(pid_x, cell, cells_per_prog, W, ROWS, BLOCK_W)
    j = tl.arange(0, NC)
    cbin = tl.arange(0, NC * CP)
    cofs = tl.arange(0, BLOCK_C)
    lbase = logits_ptr + b * s_b
    obase = b * H * W  # int64, as b is

    for cr in range(0, cell_rows_per_prog):
        cy = pid_y * cell_rows_per_prog + cr
        y_start = cy * cell
        y_end = tl.minimum(y_start + cell, H)
        mass_acc = tl.zeros([ROWS * BLOCK_W], tl.float32)
        hist_acc = tl.zeros([NC * CP], tl.int32)
        for y0 in range(y_start, y_end, ROWS):
            y = y0 + rr
            pmask = col_ok & (y < y_end)
            pix = y.to(tl.int64) * s_h + x.to(tl.int64) * s_w
            m = tl.full([ROWS * BLOCK_W], float("-inf"), tl.float32)
            s = tl.zeros([ROWS * BLOCK_W], tl.float32)
            lab = tl.zeros([ROWS * BLOCK_W], tl.int32)
            bad = tl.zeros([ROWS * BLOCK_W], tl.int32)
            for c0 in range(0, C, BLOCK_C):
                cs = c0 + cofs
                cmask = cs < C
                z = tl.load(
                    lbase + cs[:, None].to(tl.int64) * s_c + pix[None, :],
                    mask=cmask[:, None] & pmask[None, :],
                    other=0.0,
                ).to(tl.float32)
                nonfinite = ((z != z) | (z == float("inf")) | (z == float("-inf"))) & cmask[:, None]
                bad = tl.maximum(bad, tl.max(nonfinite.to(tl.int32), axis=0))
                z = tl.where(cmask[:, None], z, float("-inf"))
                m, s, lab = chunk_softmax_update(z, cs, cmask, m, s, lab)
            conf = 1.0 / s
            low = conf < low_thresh
            conf = tl.where(bad > 0, float("nan"), conf)
            out = obase + y.to(tl.int64) * W + x
            if HAS_IGNORE:
                ign = tl.load(ignore_ptr + out, mask=pmask, other=0) != 0
            else:
                ign = tl.zeros([ROWS * BLOCK_W], tl.int1)
            flags = tl.where(low, LOW_BIT, 0) | tl.where(ign, IGNORED_BIT, 0)
            tl.store(conf_ptr + out, conf, mask=pmask)
            tl.store(label_ptr + out, lab.to(tl.int64), mask=pmask)
            tl.store(flags_ptr + out, flags.to(tl.uint8), mask=pmask)
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


def confidence_pool(logits, ignore_u8, low_thresh: float, cell: int, cfg: TileConfig):
    """Kernel 1: (conf, label, flags without BOUNDARY, hist, mass) for logits [B,C,H,W]."""
    outputs, launch = plan_confidence_pool(logits, ignore_u8, low_thresh, cell, cfg)
    launch()
    return outputs


def plan_confidence_pool(logits, ignore_u8, low_thresh: float, cell: int, cfg: TileConfig):
    """The outputs (allocated, not yet written) and the Launch of kernel 1."""
    b, c, h, w = logits.shape
    hc, wc = -(-h // cell), -(-w // cell)
    dev = logits.device
    conf = torch.empty((b, h, w), dtype=torch.float32, device=dev)
    label = torch.empty((b, h, w), dtype=torch.int64, device=dev)
    flags = torch.empty((b, h, w), dtype=torch.uint8, device=dev)
    hist = torch.empty((b, hc, wc, c), dtype=torch.int32, device=dev)
    mass = torch.empty((b, hc, wc), dtype=torch.float32, device=dev)
    grid = (triton.cdiv(wc, cfg.cells_per_prog), triton.cdiv(hc, cfg.cell_rows_per_prog), b)
    args = (
        logits,
        ignore_u8 if ignore_u8 is not None else flags,
        conf,
        label,
        flags,
        hist,
        mass,
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
        BLOCK_C=cfg.BLOCK_C,
        ROWS=cfg.ROWS,
        BLOCK_W=cfg.BLOCK_W,
        NC=cfg.NC,
        CP=triton.next_power_of_2(c),
        num_warps=cfg.num_warps,
    )
    return (conf, label, flags, hist, mass), Launch(_confidence_pool_kernel, grid, args, meta)
