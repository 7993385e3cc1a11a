"""GPU rows of bench/purify_throughput.py: the kernels beside torch's own floors on the same GPU.

Timed with CUDA events (`triton.testing.do_bench`, median of repeated calls after warm-up), at the
shapes of the project's GPU targets:
- purify_stats (Triton) against logits.amax(1), max(1) and softmax(1).max(1): target <= 2x amax;
- crop_batch (CUDA) against torchvision roi_align + normalisation: target >= 2x faster;
- purify_apply (Triton) against its torch reference on the same CUDA tensors: target >= 3x;
- VLMPurifier with the oracle at B8 C6 518^2, 128 regions: target <= 2 ms, with its stage split
  and the time spent outside the stages.
`bench_gpu(device="cpu", timer=...)` runs the same code on the CPU with the C++ backends (tests use
it with tiny shapes to keep this file working where no GPU is).
"""

import statistics
from collections.abc import Callable

import torch
import torchvision
from _common import Row, teacher_like_logits

from semiearth import ops

STATS_SHAPES = [(4, 6, 518, 518), (8, 6, 518, 518), (16, 7, 512, 512), (4, 8, 1024, 1024)]
CROP_COUNTS = [64, 256, 1024]
APPLY_SHAPES = [(8, 6, 518, 518), (4, 8, 1024, 1024)]


def cuda_seconds(fn: Callable[[], object]) -> float:
    """Median seconds of one call, from CUDA events."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3


def stats_rows(shapes, device, timer) -> tuple:
    rows, ratios = [], []
    backend = ops.fast_backend("purify_stats", device)
    for b, c, h, w in shapes:
        case = f"B{b} C{c} {h}x{w} f32 {device.type}"
        x = teacher_like_logits(b, c, h, w, device=device)
        t = {
            backend: timer(lambda: ops.purify_stats(x, backend=backend)),
            "amax": timer(lambda: x.amax(dim=1)),
            "max": timer(lambda: x.max(dim=1)),
            "softmax.max": timer(lambda: torch.softmax(x, dim=1).max(dim=1)),
        }
        rows += [Row("purify_stats", case, name, s) for name, s in t.items()]
        ratios.append((f"purify_stats {case}: {backend} / amax(1)", t[backend] / t["amax"], lambda v: v <= 2))
    return rows, ratios


def crop_rows(counts, device, timer, b=8, hw=518, size=224) -> tuple:
    from purify_throughput import random_boxes

    rows, ratios = [], []
    backend = ops.fast_backend("crop_batch", device)
    images = torch.rand(b, 3, hw, hw, device=device)
    scale = torch.tensor([1 / 0.229, 1 / 0.224, 1 / 0.225], device=device)
    shift = -torch.tensor([0.485, 0.456, 0.406], device=device) * scale
    for n in counts:
        case = f"N{n} {size}x{size} from {b}x{hw}px {device.type}"
        regions = random_boxes(n, b, hw, hw).to(device)

        def roi_align_then_normalise():
            out = torchvision.ops.roi_align(images, regions[:, :5], size, aligned=True, sampling_ratio=1)
            return out * scale[None, :, None, None] + shift[None, :, None, None]

        t_fast = timer(lambda: ops.crop_batch(images, regions, size, None, scale, shift, backend=backend))
        t_roi = timer(roi_align_then_normalise)
        rows += [Row("crop_batch", case, backend, t_fast), Row("crop_batch", case, "roi_align + normalisation", t_roi)]
        ratios.append((f"crop_batch {case}: roi_align+norm / {backend}", t_roi / t_fast, lambda v: v >= 2))
    return rows, ratios


def apply_rows(shapes, device, timer) -> tuple:
    from purify_throughput import top_cell_segments

    rows, ratios = [], []
    backend = ops.fast_backend("purify_apply", device)
    for b, c, h, w in shapes:
        x = teacher_like_logits(b, c, h, w)
        stats = ops.purify_stats(x, backend="cpp" if ops.has_cpp() else "torch")
        seg, n = top_cell_segments(stats)
        q = torch.softmax(torch.randn(n, c, generator=torch.Generator().manual_seed(1)) * 3, dim=1)
        x, seg, q = x.to(device), seg.to(device), q.to(device)
        stats = ops.PurifyStats(*[t.to(device) for t in stats[:6]], cell=stats.cell)
        case = f"B{b} C{c} {h}x{w} {n} segs {device.type}"
        t_fast = timer(lambda: ops.purify_apply(x, stats, seg, q, backend=backend))
        t_ref = timer(lambda: ops.purify_apply(x, stats, seg, q, backend="torch"))
        rows += [Row("purify_apply", case, backend, t_fast), Row("purify_apply", case, "torch reference", t_ref)]
        ratios.append((f"purify_apply {case}: reference / {backend}", t_ref / t_fast, lambda v: v >= 3))
    return rows, ratios


def purifier_rows(device, timer, b=8, c=6, hw=518, regions=128, calls=20) -> tuple:
    """VLMPurifier (oracle) end to end, its stage medians and the time outside the stages."""
    from semiearth.purify import OracleClassifier, VLMPurifier

    x = teacher_like_logits(b, c, hw, hw, device=device)
    gt = x.argmax(dim=1)
    images = torch.rand(b, 3, hw, hw, device=device)
    purifier = VLMPurifier(OracleClassifier(c, gt), num_classes=c, max_regions=regions // b)
    total = timer(lambda: purifier(images, x))
    outs = [purifier(images, x) for _ in range(calls)]
    stages = {k: statistics.median(o.timings[k] for o in outs) for k in outs[0].timings}
    case = f"B{b} C{c} {hw}x{hw} oracle {len(outs[0].records)} regions {device.type}"
    rows = [Row("vlm_pp", case, "VLMPurifier (total)", total, "target <= 2 ms")]
    rows += [Row("vlm_pp", case, f"  stage: {k}", v) for k, v in stages.items()]
    rows.append(Row("vlm_pp", case, "  outside the stages", total - sum(stages.values())))
    return rows, []


def bench_gpu(device=None, timer=None, quick=False) -> tuple:
    """(rows, ratios) of every GPU comparison; `device`/`timer` default to CUDA and CUDA events."""
    device = torch.device(device or "cuda")
    timer = timer or cuda_seconds
    rows, ratios = [], []
    stats_shapes = STATS_SHAPES[:1] if quick else STATS_SHAPES
    parts = (
        stats_rows(stats_shapes, device, timer),
        crop_rows(CROP_COUNTS[:1] if quick else CROP_COUNTS, device, timer),
        apply_rows(APPLY_SHAPES[:1] if quick else APPLY_SHAPES, device, timer),
        purifier_rows(device, timer),
    )
    for part_rows, part_ratios in parts:
        rows += part_rows
        ratios += part_ratios
    return rows, ratios
