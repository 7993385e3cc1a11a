"""Triton backend of `semiearth.ops.purify_apply` (the torch reference there is the spec).

One pass over the pixels: each program takes a [ROWS, BLOCK_W] tile, reads label/conf/flags of
purify_stats, looks up the region of each candidate in seg_table, and only for hit pixels reads
the logits (masked loads: no DRAM traffic for the others) and the region's weights, one class at a
time over 1-D [P] vectors (a few registers per pixel whatever C is; int32 offsets in an image).

- rule 0 (bayes): z_c = x_c + weights[r, c]; label = argmax z (lowest on ties), conf = max softmax z
  with the online softmax of purify_stats (`softmax_step`). Regions whose weights are all zero (a
  uniform q) never reach the kernel: semiearth.ops.purify_apply drops them from seg_table, so their
  pixels keep purify_stats' label and confidence bit for bit on every device.
- rule 1 (paper): k = argmax weights[r]; label = k, conf = a * c + (1 - a) * weights[r, k] with
  a = clamp(c / tau, 0, 1).
A region id outside [0, N) hits nothing (the wrapper validates; the kernel stays memory-safe).
"""

import torch
import triton
import triton.language as tl

from ._common import (
    IGNORED_BIT,
    LOW_BIT,
    Launch,
    class_offset,
    logits_extent,
    needs_wide,
    pixel_offsets,
    pixel_tile,
    softmax_step,
)


@triton.jit
def _purify_apply_kernel(
    logits_ptr,  # [B,C,H,W] any strides, float32/16/bf16 (read for hit pixels, rule 0)
    label_ptr,  # [B,H,W] int64 stats.label (contiguous)
    conf_ptr,  # [B,H,W] float32 stats.conf (contiguous)
    flags_ptr,  # [B,H,W] uint8 stats.flags (contiguous)
    seg_ptr,  # [B,Hc,Wc,C] int32 region id or -1 (contiguous)
    wt_ptr,  # [C,N] float32 weights, transposed (contiguous)
    out_label_ptr,  # [B,H,W] int64 out
    out_conf_ptr,  # [B,H,W] float32 out
    C,
    H,
    W,
    Hc,
    Wc,
    N,
    cell,
    tau,
    s_b,
    s_c,
    s_h,
    s_w,
    RULE: tl.constexpr,  # 0 bayes, 1 paper
    ROWS: tl.constexpr,
    BLOCK_W: tl.constexpr,
    WIDE: tl.constexpr,  # int64 offsets inside an image
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    p = tl.arange(0, ROWS * BLOCK_W)
    y = pid_y * ROWS + p // BLOCK_W
    x = pid_x * BLOCK_W + p % BLOCK_W
    pmask = (y < H) & (x < W)
    img = b * H * W  # int64, as b is
    out = pixel_offsets(y, x, W, 1, WIDE)

    lab0 = tl.load(label_ptr + img + out, mask=pmask, other=0)
    conf0 = tl.load(conf_ptr + img + out, mask=pmask, other=0.0)
    flags = tl.load(flags_ptr + img + out, mask=pmask, other=0).to(tl.int32)
    # Labels are validated by the caller; the range test keeps a direct call memory-safe.
    cand = pmask & ((flags & (LOW_BIT | IGNORED_BIT)) == LOW_BIT) & (lab0 >= 0) & (lab0 < C)
    seg_ofs = ((y // cell) * Wc + x // cell) * C + lab0.to(tl.int32)
    region = tl.load(seg_ptr + b * Hc * Wc * C + seg_ofs, mask=cand, other=-1)
    hit = cand & (region >= 0) & (region < N)
    r = tl.where(hit, region, 0)

    m = tl.full([ROWS * BLOCK_W], float("-inf"), tl.float32)
    lab = tl.zeros([ROWS * BLOCK_W], tl.int32)
    if RULE == 0:
        s = tl.zeros([ROWS * BLOCK_W], tl.float32)
        pix = pixel_offsets(y, x, s_h, s_w, WIDE)
        logits_img = logits_ptr + b * s_b
        for c in range(0, C):
            z = tl.load(logits_img + class_offset(c, s_c, WIDE) + pix, mask=hit, other=0.0).to(tl.float32)
            z += tl.load(wt_ptr + c * N + r, mask=hit, other=0.0)
            m, s, lab = softmax_step(z, c, m, s, lab)
        new_conf = 1.0 / s
    else:
        # argmax and max of the region's weight row (lowest class on ties).
        for c in range(0, C):
            wv = tl.load(wt_ptr + c * N + r, mask=hit, other=0.0)
            lab = tl.where(wv > m, c, lab)
            m = tl.maximum(m, wv)
        a = tl.minimum(tl.maximum(conf0 / tau, 0.0), 1.0)
        new_conf = a * conf0 + (1.0 - a) * m

    tl.store(out_label_ptr + img + out, tl.where(hit, lab.to(tl.int64), lab0), mask=pmask)
    tl.store(out_conf_ptr + img + out, tl.where(hit, new_conf, conf0), mask=pmask)


def purify_apply_triton(logits, label, conf, flags, seg_table, weights, cell: int, rule: int, tau: float):
    """Purified (label [B,H,W] int64, conf [B,H,W] float32).

    logits [B,C,H,W] float32/16/bf16 (any strides); label/conf/flags [B,H,W] of purify_stats;
    seg_table [B,Hc,Wc,C] int32 region id or -1; weights [N,C] float32 from rule_weights();
    rule 0 (bayes) or 1 (paper); tau in (0, 1]. Inputs are never modified; N may be 0.
    Arguments are assumed validated by semiearth.ops.purify_apply.
    """
    label, conf = label.contiguous(), conf.contiguous()
    if weights.shape[0] == 0:  # no region: nothing is hit
        return label.clone(), conf.clone()
    outputs, launch = plan_purify_apply(
        logits, label, conf, flags.contiguous(), seg_table, weights, rule, tau, cell, gpu=logits.is_cuda
    )
    launch()
    return outputs


def plan_purify_apply(logits, label, conf, flags, seg_table, weights, rule: int, tau: float, cell: int, gpu: bool):
    """The outputs (allocated, not yet written) and the Launch of the kernel; N >= 1.

    gpu: GPU tiles (what a CUDA tensor gets) or the interpreter's big tiles."""
    b, c, h, w = logits.shape
    hc, wc = -(-h // cell), -(-w // cell)
    out_label = torch.empty((b, h, w), dtype=torch.int64, device=logits.device)
    out_conf = torch.empty((b, h, w), dtype=torch.float32, device=logits.device)
    wt = weights.float().t().contiguous()  # [C,N]
    rows, block_w, num_warps = pixel_tile(gpu)
    grid = (triton.cdiv(w, block_w), triton.cdiv(h, rows), b)
    args = (
        logits,
        label,
        conf,
        flags,
        seg_table.contiguous(),
        wt,
        out_label,
        out_conf,
        c,
        h,
        w,
        hc,
        wc,
        weights.shape[0],
        cell,
        float(tau),
        *logits.stride(),
    )
    wide = needs_wide(logits_extent(logits), h * w, hc * wc * c, c * weights.shape[0])
    meta = dict(RULE=int(rule), ROWS=rows, BLOCK_W=block_w, WIDE=wide, num_warps=num_warps)
    return (out_label, out_conf), Launch(_purify_apply_kernel, grid, args, meta)
