// Schemas of the semiearth ops. Kernels register per dispatch key in cpu/ and cuda/;
// fake (meta) impls live in semiearth/ops/_fake.py. Contracts: semiearth/ops/*.py docstrings.
#include <torch/library.h>

TORCH_LIBRARY(semiearth, m) {
  m.def(
      "purify_stats(Tensor logits, float low_thresh, int radius, int cell, Tensor? ignore) -> "
      "(Tensor conf, Tensor label, Tensor flags, Tensor hist, Tensor mass, Tensor nboundary, Tensor nonfinite)");
  m.def(
      "crop_batch(Tensor images, Tensor regions, int size, Tensor? labels, Tensor scale, "
      "Tensor shift, bool mask, float fill) -> Tensor");
  m.def(
      "purify_apply(Tensor logits, Tensor label, Tensor conf, Tensor flags, Tensor seg_table, "
      "Tensor weights, int cell, int rule, float tau) -> (Tensor label_out, Tensor conf_out)");
}
