"""Triton backend of `semiearth.ops.purify_apply` (the torch reference there is the spec).

One pass over the pixels: each program takes a [ROWS, BLOCK_W] tile, reads label/conf/flags of
purify_stats, looks up the region of each candidate in seg_table, and only for hit pixels reads
the logits (masked loads: no DRAM traffic for the others) and the region's weights.

- rule 0 (bayes): z_c = x_c + weights[r, c]; label = argmax z (lowest on ties), conf = max softmax z,
  computed with `chunk_softmax_update` on the same [BLOCK_C, ROWS * BLOCK_W] tiles (same
  `tile_config`) as purify_stats' kernel. Regions whose weights are all zero (a uniform q) never
  reach the kernel: semiearth.ops.purify_apply drops them from seg_table, so their pixels keep
  purify_stats' label and confidence bit for bit on every device.
- rule 1 (paper): k = argmax weights[r]; label = k, conf = a * c + (1 - a) * weights[r, k] with
  a = clamp(c / tau, 0, 1).
"""

import torch
import triton
import triton.language as tl

from ._common import IGNORED_BIT, LOW_BIT, Launch, chunk_argmax, chunk_softmax_update, tile_config


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
    BLOCK_C: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid_x = tl.program_id(0)
    pid_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    p = tl.arange(0, ROWS * BLOCK_W)
    y = pid_y * ROWS + p // BLOCK_W
    x = pid_x * BLOCK_W + p % BLOCK_W
    pmask = (y < H) & (x < W)
    out = b * H * W + y.to(tl.int64) * W + x  # int64, as b is

    lab0 = tl.load(label_ptr + out, mask=pmask, other=0)
    conf0 = tl.load(conf_ptr + out, mask=pmask, other=0.0)
    flags = tl.load(flags_ptr + out, mask=pmask, other=0).to(tl.int32)
    # Labels are validated by the caller; the range test keeps a direct call memory-safe.
    cand = pmask & ((flags & (LOW_BIT | IGNORED_BIT)) == LOW_BIT) & (lab0 >= 0) & (lab0 < C)
    seg_ofs = (((b * Hc + y // cell) * Wc + x // cell) * C).to(tl.int64) + lab0
    region = tl.load(seg_ptr + seg_ofs, mask=cand, other=-1)
    hit = cand & (region >= 0)
    r = tl.maximum(region, 0).to(tl.int64)
    cofs = tl.arange(0, BLOCK_C)

    m = tl.full([ROWS * BLOCK_W], float("-inf"), tl.float32)
    lab = tl.zeros([ROWS * BLOCK_W], tl.int32)
    if RULE == 0:
        s = tl.zeros([ROWS * BLOCK_W], tl.float32)
        pix = b * s_b + y.to(tl.int64) * s_h + x.to(tl.int64) * s_w
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + cofs
            cmask = cs < C
            lmask = cmask[:, None] & hit[None, :]
            z = tl.load(logits_ptr + cs[:, None].to(tl.int64) * s_c + pix[None, :], mask=lmask, other=0.0)
            wv = tl.load(wt_ptr + cs[:, None].to(tl.int64) * N + r[None, :], mask=lmask, other=0.0)
            z = tl.where(cmask[:, None], z.to(tl.float32) + wv, float("-inf"))
            m, s, lab = chunk_softmax_update(z, cs, cmask, m, s, lab)
        new_conf = 1.0 / s
    else:
        # argmax and max of the region's weight row (lowest class on ties), chunk by chunk.
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + cofs
            cmask = cs < C
            wv = tl.load(
                wt_ptr + cs[:, None].to(tl.int64) * N + r[None, :], mask=cmask[:, None] & hit[None, :], other=0.0
            )
            wv = tl.where(cmask[:, None], wv, float("-inf"))
            cm, cl = chunk_argmax(wv, cs, cmask)
            lab = tl.where(cm > m, cl, lab)
            m = tl.maximum(m, cm)
        a = tl.minimum(tl.maximum(conf0 / tau, 0.0), 1.0)
        new_conf = a * conf0 + (1.0 - a) * m

    tl.store(out_label_ptr + out, tl.where(hit, lab.to(tl.int64), lab0), mask=pmask)
    tl.store(out_conf_ptr + out, tl.where(hit, new_conf, conf0), mask=pmask)


def purify_apply_triton(logits, stats, seg_table, weights, rule: int, tau: float):
    """Purified (label [B,H,W] int64, conf [B,H,W] float32).

    logits [B,C,H,W] float32/16/bf16 (any strides); stats: the PurifyStats of purify_stats;
    seg_table [B,Hc,Wc,C] int32 region id or -1; weights [N,C] float32 from rule_weights();
    rule 0 (bayes) or 1 (paper); tau in (0, 1]. Inputs are never modified; N may be 0.
    Arguments are assumed validated by semiearth.ops.purify_apply.
    """
    label = stats.label.contiguous()
    conf = stats.conf.contiguous()
    if weights.shape[0] == 0:  # no region: nothing is hit
        return label.clone(), conf.clone()
    flags = stats.flags.contiguous()
    outputs, launch = plan_purify_apply(logits, label, conf, flags, seg_table, weights, rule, tau, stats.cell)
    launch()
    return outputs


def plan_purify_apply(logits, label, conf, flags, seg_table, weights, rule: int, tau: float, cell: int):
    """The outputs (allocated, not yet written) and the Launch of the kernel; N >= 1."""
    b, c, h, w = logits.shape
    hc, wc = -(-h // cell), -(-w // cell)
    out_label = torch.empty((b, h, w), dtype=torch.int64, device=logits.device)
    out_conf = torch.empty((b, h, w), dtype=torch.float32, device=logits.device)
    wt = weights.float().t().contiguous()  # [C,N]
    cfg = tile_config(c, h, w, cell, gpu=logits.is_cuda)
    grid = (triton.cdiv(w, cfg.BLOCK_W), triton.cdiv(h, cfg.ROWS), b)
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
    meta = dict(RULE=int(rule), BLOCK_C=cfg.BLOCK_C, ROWS=cfg.ROWS, BLOCK_W=cfg.BLOCK_W, num_warps=cfg.num_warps)
    return (out_label, out_conf), Launch(_purify_apply_kernel, grid, args, meta)
