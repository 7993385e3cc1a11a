"""Shared helpers of the benchmarks: realistic inputs, timing, and the table/JSON report."""

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F


def teacher_like_logits(b: int, c: int, h: int, w: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """Logits [B,C,H,W] float32 shaped like a trained teacher's: confident blobs, uncertain edges.

    A coarse random label map, upsampled bilinearly as one-hot scores (soft class boundaries), scaled
    and perturbed with noise, so most pixels are confident and the boundaries are not. The layout
    is contiguous NCHW, as a segmentation head's upsampled output is.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, c, (b, max(1, h // 64), max(1, w // 64)), generator=g)
    onehot = F.one_hot(coarse, c).permute(0, 3, 1, 2).float()
    smooth = F.interpolate(onehot, size=(h, w), mode="bilinear", align_corners=False)
    logits = 8.0 * smooth + 1.0 * torch.randn(b, c, h, w, generator=g)
    return logits.contiguous().to(device)


class Rotating:
    """Calls `fn` on `copies` copies of `x` in turn, so that no call finds its input in the CPU's
    cache (a training step's logits are always fresh): `Rotating(x, 3)(fn)` is the timed callable."""

    def __init__(self, x: torch.Tensor, copies: int = 3):
        self.inputs = [x] + [x.clone() for _ in range(copies - 1)]
        self.i = 0

    def __call__(self, fn: Callable[[torch.Tensor], object]) -> Callable[[], object]:
        def call():
            self.i = (self.i + 1) % len(self.inputs)
            return fn(self.inputs[self.i])

        return call


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable | None = None) -> float:
    """Median wall time of one call of `fn`, over `repeats` samples taken after `warmup` calls.

    Each sample times enough back-to-back calls to last about 50 ms, so that short ops are not
    lost in timer and scheduler granularity on a shared machine.
    """
    for _ in range(warmup):
        fn()
    calls = 1
    while True:
        seconds = _timed(fn, calls, sync)
        if seconds >= 0.05 or calls >= 1024:
            break
        calls *= 2
    samples = [seconds] + [_timed(fn, calls, sync) for _ in range(repeats - 1)]
    return statistics.median(samples) / calls


def _timed(fn: Callable[[], object], calls: int, sync: Callable | None) -> float:
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if sync:
        sync()
    return time.perf_counter() - t0


@dataclass
class Row:
    """One measured line: op, case, implementation, median seconds (None = not run, with why)."""

    op: str
    case: str
    impl: str
    seconds: float | None
    note: str = ""
    extra: dict = field(default_factory=dict)


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def print_table(rows: list, ratios: list) -> None:
    """Print rows grouped by (op, case), then the ratios (name, value, target)."""
    print(f"{'op':<13} {'case':<28} {'impl':<30} {'median ms':>10}")
    last = None
    for r in rows:
        key = (r.op, r.case)
        if last is not None and key != last:
            print()
        last = key
        ms = f"{r.seconds * 1e3:10.2f}" if r.seconds is not None else f"{'-':>10}"
        print(f"{r.op:<13} {r.case:<28} {r.impl:<30} {ms} {r.note}")
    if ratios:
        print("\nratios (same run, side by side)")
        for name, value, target in ratios:
            verdict = "" if target is None else ("  ok" if target(value) else "  MISSED")
            print(f"  {name:<60} {value:6.2f}x{verdict}")


def write_json(path: str, rows: list, ratios: list) -> None:
    data = {
        "environment": environment(),
        "rows": [asdict(r) for r in rows],
        "ratios": {name: value for name, value, _ in ratios},
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
