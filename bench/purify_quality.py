"""Pseudo-label quality of VLM-PP on the real labelled tiles in ../shared/data.

For every tile, a seeded noisy teacher (semiearth.purify.noisy_teacher) turns the ground truth into
teacher logits; the tile is cut into 512 x 512 images (one batch). We report, for the teacher alone
and after VLMPurifier with each classifier x rule:
- precision: fraction of the pixels admitted by the loss threshold (conf >= 0.95) whose label is right,
- coverage: fraction of the valid pixels admitted,
- mIoU of the pseudo-labels over all valid pixels (classes present in the ground truth or prediction).

Classifiers: uniform (q = 1/C), oracle (ground-truth histogram of each segment), and prototypes on the
ImageNet EfficientNet-Lite0 fitted without leakage: LoveDA tile i uses prototypes fitted on the two
other LoveDA tiles; Potsdam has one tile, so its prototype rows are on the right half (512 x 256),
fitted on the left half (the "potsdam/R" unit, with its own teacher and oracle rows).

    python bench/purify_quality.py [--json out.json] [--max-regions 48] [--data ../shared/data]
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from semiearth import ops  # noqa: E402
from semiearth.purify import NoisyTeacher, VLMPurifier  # noqa: E402
from semiearth.purify.classifiers.classes import DATASET_CLASSES  # noqa: E402
from semiearth.purify.classifiers.registry import classifier_class  # noqa: E402

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data")
IGNORE = 255
ADMIT = 0.95
SUB = 512  # sub-image side: the tile is cut into a batch of SUB x SUB images


def load_tile(data: str, dataset: str, name: str):
    """(image [3,H,W] uint8, gt [H,W] int64 in training order with 255 = ignore, num_classes)."""
    from PIL import Image

    img = np.array(Image.open(os.path.join(data, dataset, "img", name)).convert("RGB"))
    ann = np.array(Image.open(os.path.join(data, dataset, "ann", name))).astype(np.int64)
    # Both files use 0 for ignore (LoveDA no-data, Potsdam boundary) and 1.. for the classes.
    gt = np.where(ann == 0, IGNORE, ann - 1)
    return torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(gt), len(DATASET_CLASSES[dataset])


def tiles(data: str):
    """Evaluation units: name, dataset, image, gt, and the labelled (image, gt) list for prototypes."""
    lov = [load_tile(data, "loveda", f"{i}.png") for i in range(3)]
    units = []
    for i in range(3):
        fit = [(lov[j][0], lov[j][1]) for j in range(3) if j != i]
        units.append((f"loveda/{i}", "loveda", lov[i][0], lov[i][1], lov[i][2], fit))
    img, gt, c = load_tile(data, "potsdam", "2_10_0_0_512_512.png")
    units.append(("potsdam", "potsdam", img, gt, c, None))
    half = img.shape[2] // 2
    units.append(("potsdam/R", "potsdam", img[:, :, half:], gt[:, half:], c, [(img[:, :, :half], gt[:, :half])]))
    return units


def to_batch(x: torch.Tensor, sub: int = SUB) -> torch.Tensor:
    """[...,H,W] -> [B,...,sub,sub'] tiles of a tile (H, W multiples of sub, or smaller than sub)."""
    h, w = x.shape[-2:]
    sh, sw = min(sub, h), min(sub, w)
    parts = [x[..., y : y + sh, xx : xx + sw] for y in range(0, h, sh) for xx in range(0, w, sw)]
    return torch.stack(parts)


def metrics(label: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor, c: int) -> dict:
    valid = gt != IGNORE
    admitted = valid & (conf >= ADMIT)
    correct = label == gt
    n_adm = int(admitted.sum())
    inter = torch.bincount(gt[valid & correct], minlength=c)[:c].double()
    pred = torch.bincount(label[valid], minlength=c)[:c].double()
    true = torch.bincount(gt[valid], minlength=c)[:c].double()
    union = pred + true - inter
    present = union > 0
    return {
        "precision": float((admitted & correct).sum()) / max(n_adm, 1),
        "coverage": n_adm / max(int(valid.sum()), 1),
        "miou": float((inter[present] / union[present]).mean()),
        "accuracy": float((valid & correct).sum()) / max(int(valid.sum()), 1),
    }


class CachedQ:
    """Wraps a classifier so the two rules reuse the same q for the same regions (same crops)."""

    def __init__(self, inner):
        self.inner = inner
        self.input_size, self.mean, self.std = inner.input_size, inner.mean, inner.std
        self.num_classes = inner.num_classes
        self.class_names = getattr(inner, "class_names", None)
        self.cache = {}
        self.seconds = 0.0
        self.crops = 0

    def observe(self, *args):
        if hasattr(self.inner, "observe"):
            self.inner.observe(*args)

    def __call__(self, crops, regions):
        key = regions.cpu().numpy().tobytes()
        if key not in self.cache:
            t = time.perf_counter()
            self.cache[key] = self.inner(crops, regions)
            self.seconds += time.perf_counter() - t
            self.crops += crops.shape[0]
        return self.cache[key]


def run(args) -> dict:
    torch.manual_seed(0)
    teacher = NoisyTeacher()
    results = {"config": vars(args).copy(), "teacher_model": teacher.as_dict(), "units": []}
    proto_cache = {}
    for ui, (name, dataset, img, gt, c, fit) in enumerate(tiles(args.data)):
        t0 = time.perf_counter()
        images = to_batch(img)  # [B,3,S,S] uint8
        gts = to_batch(gt)
        logits = teacher(gts, c, seed=args.seed + 7919 * ui)
        stats_kwargs = dict(
            num_classes=c,
            low_thresh=args.low_thresh,
            cell=args.cell,
            max_regions=args.max_regions,
            context=args.context,
            backend=args.backend,
        )
        rows = []
        # The teacher's labels and confidences as purify_stats computes them (the same op and
        # backend as the purifier), so that "unchanged" below is exact, not up to float rounding.
        teacher_stats = ops.purify_stats(logits, backend=args.backend)
        rows.append({"method": "teacher alone", **metrics(teacher_stats.label, teacher_stats.conf, gts, c)})
        classifiers = {
            "uniform": classifier_class("uniform")(c),
            "oracle": classifier_class("oracle")(c, gt=gts),
        }
        if fit is not None and not args.no_prototype:
            key = (dataset, name)
            proto = classifier_class("prototype")("efficientnet_lite0", num_classes=c, input_size=args.crop_size)
            t = time.perf_counter()
            f_img = torch.cat([to_batch(i) for i, _ in fit])
            f_gt = torch.cat([to_batch(g) for _, g in fit])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                proto.fit(f_img, f_gt, cell=args.cell, context=args.context, max_per_class=args.fit_per_class)
            proto_cache[key] = {
                "fit_seconds": time.perf_counter() - t,
                "fit_segments": proto.fit_counts.tolist(),
                "temperature": proto.fitted_temperature,
            }
            classifiers["prototype (EffNet-Lite0)"] = proto
        for cname, clf in classifiers.items():
            wrapped = CachedQ(clf)
            for rule in ("bayes", "paper"):
                purifier = VLMPurifier(wrapped, rule=rule, **stats_kwargs)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out = purifier(images, logits)
                m = metrics(out.label, out.conf, gts, c)
                rows.append(
                    {
                        "method": f"{cname} + {rule}",
                        **m,
                        "regions": out.num_regions,
                        "relabelled": out.relabelled,
                        "confirmed": out.confirmed,
                        "seconds": sum(out.timings.values()),
                    }
                )
            if cname.startswith("prototype"):
                proto_cache[(dataset, name)]["classify_seconds"] = wrapped.seconds
                proto_cache[(dataset, name)]["crops"] = wrapped.crops
        unit = {
            "unit": name,
            "size": list(gt.shape),
            "batch": list(images.shape),
            "classes": c,
            "rows": rows,
            "seconds": time.perf_counter() - t0,
        }
        if (dataset, name) in proto_cache:
            unit["prototype"] = proto_cache[(dataset, name)]
        results["units"].append(unit)
        print_unit(unit, flush=True)
    results["acceptance"] = acceptance(results)
    return results


def print_unit(unit: dict, flush=False) -> None:
    print(
        f"\n{unit['unit']}  ({unit['size'][0]}x{unit['size'][1]}, {unit['classes']} classes, {unit['seconds']:.1f} s)"
    )
    print(
        f"  {'method':34s} {'precision':>9s} {'coverage':>9s} {'mIoU':>7s} {'regions':>8s} {'relab.':>7s} {'conf.':>7s}"
    )
    for r in unit["rows"]:
        extra = f"{r.get('regions', ''):>8} {r.get('relabelled', ''):>7} {r.get('confirmed', ''):>7}"
        print(f"  {r['method']:34s} {r['precision']:9.4f} {r['coverage']:9.4f} {r['miou']:7.4f} {extra}", flush=flush)
    if "prototype" in unit:
        p = unit["prototype"]
        print(
            f"  prototypes: {p['fit_segments']} fit segments/class, T={p['temperature']:.3f}, fit {p['fit_seconds']:.1f} s"
        )


def acceptance(results: dict) -> dict:
    """The issue's checks, per unit: oracle+bayes vs the teacher; uniform exact; paper keeps coverage."""
    checks = {}
    for unit in results["units"]:
        rows = {r["method"]: r for r in unit["rows"]}
        t, o = rows["teacher alone"], rows["oracle + bayes"]
        u, p = rows["uniform + bayes"], rows["oracle + paper"]
        checks[unit["unit"]] = {
            "oracle_precision_not_lower": o["precision"] >= t["precision"],
            "oracle_coverage_higher": o["coverage"] > t["coverage"],
            "oracle_miou_higher": o["miou"] > t["miou"],
            "uniform_unchanged": u["relabelled"] == 0 and all(u[k] == t[k] for k in ("precision", "coverage", "miou")),
            "paper_coverage_unchanged": p["coverage"] == t["coverage"] and p["precision"] == t["precision"],
        }
    return checks


def markdown(results: dict) -> str:
    lines = [
        "| tile | method | precision@0.95 | coverage | mIoU | regions | relabelled | confirmed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for unit in results["units"]:
        for r in unit["rows"]:
            lines.append(
                f"| {unit['unit']} | {r['method']} | {r['precision']:.4f} | {r['coverage']:.4f} | {r['miou']:.4f} | "
                f"{r.get('regions', '')} | {r.get('relabelled', '')} | {r.get('confirmed', '')} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    ap.add_argument("--max-regions", type=int, default=48, help="per 512 x 512 image")
    ap.add_argument("--cell", type=int, default=32)
    ap.add_argument("--context", type=float, default=2.0)
    ap.add_argument("--low-thresh", type=float, default=0.7)
    ap.add_argument("--crop-size", type=int, default=128, help="prototype classifier input size")
    ap.add_argument("--fit-per-class", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--no-prototype", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "loveda")):
        print(f"no data at {args.data} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    t = time.perf_counter()
    results = run(args)
    results["seconds"] = time.perf_counter() - t
    results["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    print("\nacceptance:", json.dumps(results["acceptance"], indent=1))
    print(f"total {results['seconds']:.1f} s")
    if args.markdown:
        print("\n" + markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(all(v.values()) for v in results["acceptance"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
