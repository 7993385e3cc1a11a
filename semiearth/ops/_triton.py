"""The Triton kernels as the CUDA implementations of torch.ops.semiearth.purify_stats and
purify_apply (the schemas are in csrc/ops.cpp; crop_batch's CUDA kernel is C++, csrc/cuda).
Triton and the kernels are imported at the first CUDA call, not when the extension loads."""

import importlib.util

import torch


def _purify_stats_cuda(logits, low_thresh, radius, cell, ignore):
    from semiearth.kernels.purify_stats import purify_stats_triton

    return purify_stats_triton(logits, low_thresh, radius, cell, ignore)


def _purify_apply_cuda(logits, label, conf, flags, seg_table, weights, cell, rule, tau):
    from semiearth.kernels.purify_apply import purify_apply_triton

    return purify_apply_triton(logits, label, conf, flags, seg_table, weights, cell, rule, tau)


def register_cuda_kernels() -> None:
    """Register the Triton kernels for the CUDA dispatch key, once, when Triton is installed."""
    if importlib.util.find_spec("triton") is None:
        return
    for op, fn in (("purify_stats", _purify_stats_cuda), ("purify_apply", _purify_apply_cuda)):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"semiearth::{op}", "CUDA"):
            torch.library.register_kernel(f"semiearth::{op}", "cuda", fn)
