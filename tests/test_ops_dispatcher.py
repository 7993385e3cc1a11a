"""The ops go through the PyTorch dispatcher: opcheck passes for each, torch.compile traces the
public wrappers whole (no graph break), and the Triton kernels are the CUDA implementations."""

import pytest
import torch
from helpers import backend_device

from semiearth import ops


def op_inputs():
    """Arguments of torch.ops.semiearth.{purify_stats, purify_apply, crop_batch} on small CPU tensors."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 19, 23, generator=g) * 3
    ignore = torch.rand(2, 19, 23, generator=g) < 0.1
    stats = ops.purify_stats(logits, 0.9, 1, 8, ignore)
    seg = torch.randint(-1, 4, (2, 3, 3, 5), generator=g, dtype=torch.int32)
    weights = ops.rule_weights(torch.rand(4, 5, generator=g), "bayes", 1.0)
    images = torch.rand(2, 3, 19, 23, generator=g)
    regions = torch.tensor([[0.0, 1, 2, 10, 12, 1], [1.0, 0, 0, 22, 18, 3]])
    scale, shift = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([0.1, 0.0, -0.1])
    return {
        "purify_stats": (logits, 0.9, 1, 8, ignore),
        "purify_apply": (logits, stats.label, stats.conf, stats.flags, seg, weights, 8, 0, 0.7),
        "crop_batch": (images, regions, 7, stats.label, scale, shift, True, 0.0),
    }


@pytest.mark.parametrize("op", ["purify_stats", "purify_apply", "crop_batch"])
def test_opcheck(op):
    backend_device("cpp")
    torch.library.opcheck(getattr(torch.ops.semiearth, op), op_inputs()[op])


def pipeline(logits, images, q):
    """The three public ops in a row, as VLM-PP calls them."""
    stats = ops.purify_stats(logits, 0.9, 1, 8)
    seg = torch.zeros_like(stats.hist)
    regions = torch.tensor([[0.0, 1, 2, 10, 12, 1], [1.0, 0, 0, 22, 18, 3]])
    crops = ops.crop_batch(images, regions, 7, stats.label, scale=[2.0, 1.0, 0.5], shift=0.1)
    label, conf = ops.purify_apply(logits, stats, seg, q)
    return crops, label, conf


def test_compile_fullgraph_over_the_three_ops():
    backend_device("cpp")
    g = torch.Generator().manual_seed(1)
    logits, images = torch.randn(2, 5, 19, 23, generator=g) * 3, torch.rand(2, 3, 19, 23, generator=g)
    q = torch.softmax(torch.randn(1, 5, generator=g), 1)
    compiled = torch.compile(pipeline, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(logits, images, q), pipeline(logits, images, q), strict=True):
        assert torch.equal(a, b)
    bad = logits.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(RuntimeError, match="NaN or inf"):  # the value check, as an async assert
        compiled(bad, images, q)


def test_triton_kernels_are_the_cuda_implementations():
    backend_device("cpp")
    pytest.importorskip("triton", reason="triton is not installed")
    for op in ("purify_stats", "purify_apply", "crop_batch"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"semiearth::{op}", "CPU")
        if op != "crop_batch" or ops.has_cuda_kernels():
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"semiearth::{op}", "CUDA"), op


def test_deferred_checks_raise_once_read():
    backend_device("cpp")
    logits = torch.randn(1, 3, 8, 8)
    logits[0, 0, 1, 1] = float("inf")
    with ops.deferred_checks() as checks:
        stats = ops.purify_stats(logits)  # no error yet: the count stays on the device
        assert stats.conf.shape == (1, 8, 8) and len(checks) == 1
        with pytest.raises(ValueError, match="logits contain NaN or inf at 1 pixel"):
            checks.raise_if_failed()
        checks.raise_if_failed()  # read once, then forgotten
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.purify_stats(logits)  # outside the context: at once
