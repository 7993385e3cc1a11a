"""The three kernels of VLM-PP, each with backend="auto" or one of its own backends (`backends(op)`,
the per-op table OP_BACKENDS in _extension.py): purify_stats and purify_apply torch|cpp|triton,
crop_batch torch|cpp|cuda. A backend an op does not have is a ValueError naming those it has.

- purify_stats: confidence, pseudo-label, LOW/BOUNDARY/IGNORED flags and per-cell pooling.
- crop_batch: mask-to-crop batching of regions for the VLM (roi_align sampling + normalisation).
- purify_apply: fusion of the VLM's class probabilities into the pseudo-labels.

The `*_reference` functions are the plain-torch specifications the fast paths are tested against.
Each op runs through torch.ops.semiearth (the dispatcher picks the C++, CUDA or Triton kernel by
device). Value checks (NaN logits, labels out of range) sync with the device once per call, or
once for many calls inside `deferred_checks()`.
"""

from semiearth.ops._checks import DeferredChecks, deferred_checks
from semiearth.ops._extension import OP_BACKENDS, backend_device, backends, fast_backend, has_cpp, has_cuda_kernels
from semiearth.ops.crop_batch import crop_batch, crop_batch_reference
from semiearth.ops.purify_apply import RULES, purify_apply, purify_apply_probs, purify_apply_reference, rule_weights
from semiearth.ops.purify_stats import (
    BOUNDARY,
    IGNORED,
    LOW,
    PurifyStats,
    purify_stats,
    purify_stats_reference,
)

__all__ = [
    "BOUNDARY",
    "DeferredChecks",
    "IGNORED",
    "LOW",
    "OP_BACKENDS",
    "RULES",
    "PurifyStats",
    "backend_device",
    "backends",
    "crop_batch",
    "crop_batch_reference",
    "deferred_checks",
    "fast_backend",
    "has_cpp",
    "has_cuda_kernels",
    "purify_apply",
    "purify_apply_probs",
    "purify_apply_reference",
    "purify_stats",
    "purify_stats_reference",
    "rule_weights",
]
