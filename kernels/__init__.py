"""Triton kernels of SemiEarth, installed as `semiearth.kernels` (setup.py maps this folder).

- purify_stats.purify_stats_triton: confidence/argmax/flags + cell pooling (confidence.py, then
  boundary_pool.py).
- purify_apply.purify_apply_triton: fuse the VLM's per-region weights into the pseudo-labels.
- _common.py: what they share (flag bits, tile configuration, argmax tie-break, tile prologue) and
  the rules the GPU compiler enforces that the interpreter does not; every kernel is compiled for
  sm_80/sm_90 ahead of time by tests/test_triton_aot.py.

Importing this package imports triton; on a machine without a GPU, set TRITON_INTERPRET=1 before
importing triton and pass CPU tensors (the interpreter; for tests only).
"""
