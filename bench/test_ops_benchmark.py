"""pytest-benchmark versions of the kernel comparisons (grouped per op, so ratios read side by side).

    pytest bench --benchmark-only --benchmark-group-by=group

In the test suite they run once each with --benchmark-disable, as smoke tests of the benchmarks.
"""

import os
import sys

import pytest
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import teacher_like_logits  # noqa: E402
from purify_throughput import random_boxes, top_cell_segments  # noqa: E402

from semiearth import ops  # noqa: E402

pytestmark = pytest.mark.skipif(not ops.has_cpp(), reason="the C++ extension is not built (make build)")
B, C, HW = 4, 6, 512


@pytest.fixture(scope="module")
def logits():
    return teacher_like_logits(B, C, HW, HW)


@pytest.mark.benchmark(group="purify_stats B4 C6 512x512")
@pytest.mark.parametrize("impl", ["cpp", "torch", "read floor"])
def test_purify_stats(benchmark, logits, impl):
    if impl == "read floor":
        benchmark(lambda: logits.amax(dim=1))
    else:
        stats = benchmark(lambda: ops.purify_stats(logits, backend=impl))
        assert stats.conf.shape == (B, HW, HW)


@pytest.mark.benchmark(group="crop_batch N64 224x224")
@pytest.mark.parametrize("impl", ["cpp", "roi_align + normalise"])
def test_crop_batch(benchmark, impl):
    images = torch.rand(B, 3, HW, HW)
    regions = random_boxes(64, B, HW, HW)
    scale, shift = torch.full((3,), 4.0), torch.full((3,), -2.0)
    if impl == "cpp":
        out = benchmark(lambda: ops.crop_batch(images, regions, 224, None, scale, shift, backend="cpp"))
    else:
        out = benchmark(
            lambda: (
                torchvision.ops.roi_align(images, regions[:, :5], 224, aligned=True, sampling_ratio=1)
                * scale[None, :, None, None]
                + shift[None, :, None, None]
            )
        )
    assert out.shape == (64, 3, 224, 224)


@pytest.mark.benchmark(group="purify_apply B4 C6 512x512")
@pytest.mark.parametrize("impl", ["cpp", "torch"])
def test_purify_apply(benchmark, logits, impl):
    stats = ops.purify_stats(logits, backend="cpp")
    seg, n = top_cell_segments(stats)
    q = torch.softmax(torch.randn(n, C), dim=1)
    label, conf = benchmark(lambda: ops.purify_apply(logits, stats, seg, q, backend=impl))
    assert label.shape == (B, HW, HW)
