"""The three kernels of VLM-PP, each with backend="auto"|"torch"|"cpp"|"cuda"|"triton".

- purify_stats: confidence, pseudo-label, LOW/BOUNDARY/IGNORED flags and per-cell pooling.
- crop_batch: mask-to-crop batching of regions for the VLM (roi_align sampling + normalisation).
- purify_apply: fusion of the VLM's class probabilities into the pseudo-labels.

The `*_reference` functions are the plain-torch specifications the fast paths are tested against.
"""

from semiearth.ops._extension import has_cpp, has_cuda_kernels
from semiearth.ops.crop_batch import crop_batch, crop_batch_reference
from semiearth.ops.purify_apply import RULES, purify_apply, purify_apply_reference, rule_weights
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
    "IGNORED",
    "LOW",
    "RULES",
    "PurifyStats",
    "crop_batch",
    "crop_batch_reference",
    "has_cpp",
    "has_cuda_kernels",
    "purify_apply",
    "purify_apply_reference",
    "purify_stats",
    "purify_stats_reference",
    "rule_weights",
]
