"""Triton kernels of SemiEarth, installed as `semiearth.kernels` (setup.py maps this folder).

- purify_stats.purify_stats_triton: confidence/argmax/flags + cell pooling (confidence.py, then
  boundary_pool.py).
- purify_apply.purify_apply_triton: fuse the VLM's per-region weights into the pseudo-labels.

Importing this package imports triton; on a machine without a GPU, set TRITON_INTERPRET=1 before
importing triton and pass CPU tensors (the interpreter; for tests only).
"""
