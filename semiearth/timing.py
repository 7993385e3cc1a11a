"""StageTimer: time per named stage, shared by the trainer (data, teacher, purify, ...) and the
purifier (stats, select, crop, classify, apply).

On the CPU a stage is wall time. On CUDA a stage is the GPU time between two CUDA events recorded
around it: recording is asynchronous, so timing costs no host-device sync per stage; the events
are resolved (one wait for the device) only when `total` is read, which the trainer does at its
logging cadence.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


class StageTimer:
    """Accumulates seconds per stage. `stages` are listed in `total` from the start (0.0).

    `timer(stage)` is a context manager timing one stage; `add(stage, seconds)` adds a time measured
    by the caller on the host (data loading); `merge(other)` takes in another timer's stages (the
    purifier's, per call); `total` is {stage: seconds}, resolving pending CUDA events when read.
    """

    def __init__(self, device, stages=()):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._total: defaultdict[str, float] = defaultdict(float, dict.fromkeys(stages, 0.0))
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((stage, start, end))
            self._total.setdefault(stage, 0.0)
            return
        t0 = time.perf_counter()
        yield
        self._total[stage] += time.perf_counter() - t0

    def add(self, stage: str, seconds: float) -> None:
        """Add `seconds` measured on the host to `stage`."""
        self._total[stage] += seconds

    def merge(self, other: StageTimer) -> None:
        """Add the stages of `other` (its pending CUDA events stay pending, no sync)."""
        for stage, seconds in other._total.items():
            self._total[stage] += seconds
        self._pending.extend(other._pending)

    @property
    def pending(self) -> int:
        """CUDA stages recorded and not yet resolved (0 on the CPU)."""
        return len(self._pending)

    @property
    def total(self) -> defaultdict[str, float]:
        """{stage: seconds}. On CUDA this waits once for the device when stages are pending."""
        if self._pending:
            pending, self._pending = self._pending, []
            torch.cuda.synchronize(self.device)  # the one wait; every event below has completed
            for stage, start, end in pending:
                self._total[stage] += start.elapsed_time(end) / 1000.0
        return self._total
