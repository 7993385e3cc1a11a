"""The GPU rows of the throughput bench run their code path on the CPU (C++ backends, tiny shapes),
so that a GPU session spends its minutes measuring, not debugging the benchmark."""

import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import purify_gpu  # noqa: E402

from semiearth import ops  # noqa: E402

pytestmark = pytest.mark.skipif(not ops.has_cpp(), reason="the C++ extension is not built (make build)")
CPU = torch.device("cpu")


def once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_gpu_rows_on_cpu():
    parts = [
        purify_gpu.stats_rows([(1, 3, 16, 20)], CPU, once),
        purify_gpu.crop_rows([4], CPU, once, b=2, hw=40, size=8),
        purify_gpu.apply_rows([(1, 3, 64, 64)], CPU, once),
        purify_gpu.purifier_rows(CPU, once, b=2, c=6, hw=64, regions=8, calls=2),
    ]
    rows = [r for part, _ in parts for r in part]
    ratios = [r for _, part in parts for r in part]
    assert {r.op for r in rows} == {"purify_stats", "crop_batch", "purify_apply", "vlm_pp"}
    assert all(r.seconds is not None for r in rows if "outside" not in r.impl)
    assert len(ratios) == 3 and all(v > 0 for _, v, _ in ratios)
