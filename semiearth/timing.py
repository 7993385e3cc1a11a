"""StageTimer: wall time per named stage, shared by the trainer (data, teacher, purify, ...) and the
purifier (stats, select, crop, classify, apply)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


class StageTimer:
    """Accumulates wall time per stage in `total` (synchronising CUDA around each stage on a CUDA
    `device`, so that GPU stages are measured). `stages` are listed in `total` from the start (0.0)."""

    def __init__(self, device, stages=()):
        self.sync = torch.device(device).type == "cuda"
        self.total = defaultdict(float, dict.fromkeys(stages, 0.0))

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.sync:
            torch.cuda.synchronize()
        self.total[stage] += time.perf_counter() - t0
