"""Throughput of the VLM-PP kernels and of VLM-PP itself, side by side in one run.

    python bench/purify_throughput.py [--quick] [--json PATH] [--repeats N]

Rows per op and shape: the fast paths (C++ on CPU; Triton / CUDA when a GPU is present, else
"not run: no GPU"), the plain-torch reference, and a baseline:
- purify_stats: a single torch reduction over the same logits (logits.amax(dim=1)), the read floor;
- crop_batch: torchvision roi_align(aligned=True, sampling_ratio=1) followed by normalisation;
- purify_apply: its torch reference.
Then the ratios of the performance targets (crop_batch >= 2x roi_align + normalisation, purify_apply
>= 3x and purify_stats >= 5x their references, purify_stats within 2x of the read floor), and VLM-PP
end to end with its stage split. Logits are contiguous NCHW float32 (a segmentation head's layout), and purify_stats and its
read floor cycle through three copies so that no call reads its input from the CPU's cache.
Medians of repeated runs; the machine is shared, so read ratios, not absolute times.
"""

import argparse
import os
import statistics
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Rotating, Row, median_seconds, print_table, teacher_like_logits, write_json  # noqa: E402

from semiearth import ops  # noqa: E402

GPU = torch.cuda.is_available()
NO_GPU = "not run: no GPU"


def sync():
    if GPU:
        torch.cuda.synchronize()


def fast_backends(op: str) -> list:
    """(impl name, backend, device) rows to time for an op; GPU rows are skipped without a GPU."""
    names = {"cpp": "C++", "triton": "Triton", "cuda": "CUDA"}
    return [
        (f"{names[b]} ({ops.backend_device(b)})", b, ops.backend_device(b)) for b in ops.backends(op) if b != "torch"
    ]


def bench_purify_stats(shapes, repeats) -> tuple:
    rows, ratios = [], []
    for b, c, h, w in shapes:
        case = f"B{b} C{c} {h}x{w} f32"
        logits = teacher_like_logits(b, c, h, w)
        times = {}
        for impl, backend, device in fast_backends("purify_stats"):
            if device == "cuda" and not GPU:
                rows.append(Row("purify_stats", case, impl, None, NO_GPU))
                continue
            fresh = Rotating(logits.to(device))
            t = median_seconds(fresh(lambda x: ops.purify_stats(x, backend=backend)), repeats, sync=sync)
            times[backend] = t
            rows.append(Row("purify_stats", case, impl, t))
        fresh = Rotating(logits)
        times["torch"] = median_seconds(fresh(lambda x: ops.purify_stats(x, backend="torch")), max(1, repeats // 2))
        rows.append(Row("purify_stats", case, "torch reference", times["torch"]))
        times["floor"] = median_seconds(fresh(lambda x: x.amax(dim=1)), repeats)
        rows.append(Row("purify_stats", case, "read floor: logits.amax(1)", times["floor"]))
        ratios.append((f"purify_stats {case}: reference / C++", times["torch"] / times["cpp"], lambda v: v >= 5))
        ratios.append((f"purify_stats {case}: C++ / read floor", times["cpp"] / times["floor"], lambda v: v <= 2))
    return rows, ratios


def random_boxes(n: int, b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Regions [N,6] (batch, x1, y1, x2, y2, class): boxes of 32-160 px, some partly outside."""
    g = torch.Generator().manual_seed(seed)
    size = 32 + 128 * torch.rand(n, 2, generator=g)
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    x1y1 = centre - size / 2
    batch = torch.randint(0, b, (n, 1), generator=g).float()
    cls = torch.randint(0, 6, (n, 1), generator=g).float()
    return torch.cat([batch, x1y1, x1y1 + size, cls], dim=1)


def bench_crop_batch(counts, repeats, size=224, b=4, hw=512) -> tuple:
    rows, ratios = [], []
    images = torch.rand(b, 3, hw, hw)
    labels = teacher_like_logits(b, 6, hw, hw).argmax(dim=1)
    scale = torch.tensor([1 / 0.229, 1 / 0.224, 1 / 0.225])  # undo nothing, apply ImageNet's
    shift = -torch.tensor([0.485, 0.456, 0.406]) * scale
    for n in counts:
        case = f"N{n} {size}x{size} from {hw}px"
        regions = random_boxes(n, b, hw, hw)

        def roi_align_then_normalise():
            out = torchvision.ops.roi_align(images, regions[:, :5], size, aligned=True, sampling_ratio=1)
            return out * scale[None, :, None, None] + shift[None, :, None, None]

        times = {}
        for impl, backend, device in fast_backends("crop_batch"):
            if device == "cuda" and not GPU:
                rows.append(Row("crop_batch", case, impl, None, NO_GPU))
                continue
            args = [t.to(device) for t in (images, regions, labels, scale, shift)]
            t = median_seconds(
                lambda: ops.crop_batch(args[0], args[1], size, None, args[3], args[4], backend=backend),
                repeats,
                sync=sync,
            )
            times[backend] = t
            rows.append(Row("crop_batch", case, impl, t))
        t_mask = median_seconds(
            lambda: ops.crop_batch(images, regions, size, labels, scale, shift, backend="cpp"), repeats
        )
        rows.append(Row("crop_batch", case, "C++ (cpu) with class mask", t_mask))
        times["roi"] = median_seconds(roi_align_then_normalise, repeats)
        rows.append(Row("crop_batch", case, "roi_align + normalisation", times["roi"]))
        t_ref = median_seconds(lambda: ops.crop_batch(images, regions, size, None, scale, shift, backend="torch"), 1)
        rows.append(Row("crop_batch", case, "torch reference", t_ref))
        ratios.append((f"crop_batch {case}: roi_align+norm / C++", times["roi"] / times["cpp"], lambda v: v >= 2))
    return rows, ratios


def top_cell_segments(stats: ops.PurifyStats, per_image: int = 16):
    """seg_table [B,Hc,Wc,C] and region count: every class segment of the `per_image` cells with
    the most uncertainty mass (a simple stand-in for select_regions, so the kernel is timed alone)."""
    b, hc, wc, c = stats.hist.shape
    seg = torch.full((b, hc, wc, c), -1, dtype=torch.int32)
    top = stats.mass.flatten(1).topk(min(per_image, hc * wc), dim=1).indices
    n = 0
    for i in range(b):
        for cell in top[i].tolist():
            y, x = divmod(cell, wc)
            for k in torch.nonzero(stats.hist[i, y, x] > 0).flatten().tolist():
                seg[i, y, x, k] = n
                n += 1
    return seg, n


def bench_purify_apply(shapes, repeats) -> tuple:
    rows, ratios = [], []
    for b, c, h, w in shapes:
        case = f"B{b} C{c} {h}x{w} f32"
        logits = teacher_like_logits(b, c, h, w)
        stats = ops.purify_stats(logits, backend="cpp")
        seg, n = top_cell_segments(stats)
        q = torch.softmax(torch.randn(n, c, generator=torch.Generator().manual_seed(1)) * 3, dim=1)
        case += f" {n} segs"
        times = {}
        for impl, backend, device in fast_backends("purify_apply"):
            if device == "cuda" and not GPU:
                rows.append(Row("purify_apply", case, impl, None, NO_GPU))
                continue
            args = (logits.to(device), ops.PurifyStats(*[t.to(device) for t in stats[:6]], cell=stats.cell))
            t = median_seconds(
                lambda: ops.purify_apply(*args, seg.to(device), q.to(device), backend=backend), repeats, sync=sync
            )
            times[backend] = t
            rows.append(Row("purify_apply", case, impl, t))
        times["torch"] = median_seconds(lambda: ops.purify_apply(logits, stats, seg, q, backend="torch"), repeats)
        rows.append(Row("purify_apply", case, "torch reference", times["torch"]))
        ratios.append((f"purify_apply {case}: reference / C++", times["torch"] / times["cpp"], lambda v: v >= 3))
    return rows, ratios


def bench_vlm_pp(repeats, b=4, c=6, hw=512) -> tuple:
    """VLM-PP end to end (oracle classifier: the kernels and plumbing without a network's cost)."""
    try:
        from semiearth.purify import OracleClassifier, VLMPurifier
    except ImportError as err:
        return [Row("vlm_pp", "", "VLMPurifier", None, f"not run: {err}")], []
    logits = teacher_like_logits(b, c, hw, hw)
    gt = logits.argmax(dim=1)
    images = torch.rand(b, 3, hw, hw)
    purifier = VLMPurifier(OracleClassifier(c, gt), num_classes=c)
    out = purifier(images, logits)
    total = median_seconds(lambda: purifier(images, logits), repeats)
    case = f"B{b} C{c} {hw}x{hw} oracle"
    rows = [Row("vlm_pp", case, "VLMPurifier (total)", total, f"{len(out.records)} regions")]
    timings = [purifier(images, logits).timings for _ in range(max(5, repeats))]
    for stage in out.timings:
        rows.append(Row("vlm_pp", case, f"  stage: {stage}", statistics.median(t[stage] for t in timings)))
    return rows, []


def bench_vlm_classifier(quick: bool) -> tuple:
    """One VLM-PP call with HFVLMClassifier on the tiny random Qwen2.5-VL: the plumbing cost on the
    CPU (prompt, prefix + cached answer scoring, records), not a real VLM's time."""
    try:
        from vlm_timing import time_vlm_call
    except ImportError as err:  # transformers not installed
        return [Row("vlm_pp", "", "HFVLMClassifier (tiny)", None, f"not run: {err}")], []
    regions = 16 if quick else 64
    r = time_vlm_call("tiny-qwen2.5-vl", device="cpu", regions=regions, input_size=112, repeats=3)
    case = f"{r['images']} tiny Qwen2.5-VL"
    note = f"{r['scored_regions']} regions, {r['answers']} answers, random weights"
    rows = [Row("vlm_pp", case, "HFVLMClassifier (tiny, total)", r["seconds_per_call"], note)]
    rows += [Row("vlm_pp", case, f"  stage: {k}", v) for k, v in r["stage_seconds"].items()]
    return rows, []


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small set of shapes, under a minute")
    parser.add_argument("--json", help="write the rows and ratios to this JSON file")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (median)")
    args = parser.parse_args(argv)
    if not ops.has_cpp():
        sys.exit("the C++ extension is not built: run `make build` (or pip install --no-build-isolation -e .)")
    repeats = args.repeats or (5 if args.quick else 15)
    sizes = [512] if args.quick else [512, 1024]
    channels = [6] if args.quick else [6, 8]
    shapes = [(4, c, s, s) for s in sizes for c in channels]
    rows, ratios = [], []
    parts = [
        bench_purify_stats(shapes, repeats),
        bench_crop_batch([64] if args.quick else [64, 256], repeats),
        bench_purify_apply(shapes, repeats),
        bench_vlm_pp(max(1, repeats // 3)),
        bench_vlm_classifier(args.quick),
    ]
    if GPU:  # the GPU targets' shapes, CUDA-event timing, torch's floors on the same GPU
        from purify_gpu import bench_gpu

        parts.append(bench_gpu(quick=args.quick))
    for part in parts:
        rows += part[0]
        ratios += part[1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, GPU: {GPU}\n")
    print_table(rows, ratios)
    if args.json:
        write_json(args.json, rows, ratios)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
