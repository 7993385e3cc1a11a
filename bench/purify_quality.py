"""Pseudo-label quality of VLM-PP on the real labelled tiles in ../shared/data.

For every tile, a seeded noisy teacher (semiearth.purify.noisy_teacher) turns the ground truth into
teacher logits; the tile is cut into 512 x 512 images (one batch). We report, for the teacher alone
and after VLMPurifier with each classifier x rule (bayes at trust 1 and 0.5, paper):
- precision: fraction of the pixels admitted by the loss threshold (conf >= 0.95) whose label is right,
- coverage: fraction of the valid pixels admitted,
- mIoU of the pseudo-labels over all valid pixels (classes present in the ground truth or prediction).

1. How good must the VLM be? A noisy oracle (semiearth.purify.classifiers.noisy_oracle) of region
   accuracy a in ACCURACIES (3 seeded draws each): the change of each metric against the teacher
   alone, per rule, the break-even accuracies, and a PNG of the curves (--plot).
2. Classifiers: uniform (q = 1/C), oracle (ground-truth histogram of each segment), and prototypes on
   the ImageNet EfficientNet-Lite0 fitted without leakage: LoveDA tile i uses prototypes fitted on
   the two other LoveDA tiles; Potsdam has one tile, so its prototype rows are on the right half
   (512 x 256), fitted on the left half (the "potsdam/R" unit, with its own teacher and oracle rows).
   Every classifier's region accuracy (top-1 = majority ground truth of the segment's candidates)
   is measured on the same regions, so it can be read against the curves.
3. Abstaining prototypes (semiearth.purify.classifiers.abstain), calibrated on the purifier's regions
   of the labelled images under their own noisy teacher, prototypes cross-fitted; they answer only
   where the calibrated accuracy reaches max(0.95, the worst tile's mIoU break-even).

4. Score only what can change (--topk-agreement: this section only): VLMPurifier with the classes
   per region restricted to the teacher's top-k + those above the probability floor (the unscored at
   the neutral q of classifiers/_base.fill_unscored) against full scoring, for the noisy oracle (its
   full q restricted with _base.restrict_q: exactly what a restricted VLM/CLIP returns) and a tiny
   random Qwen2.5-VL (really restricted); on the purified pixels (candidates of the selected
   segments): the share whose label differs, the max and mean |confidence difference|, the share
   whose admission (conf >= 0.95) differs, and the classes scored per region.

    python bench/purify_quality.py [--json out.json] [--markdown] [--plot curves.png] [--data ../shared/data]
    python bench/purify_quality.py --topk-agreement [--topk 3] [--prob-floor 0.05] [--no-vlm] [--neutral min]
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
from semiearth.ops.purify_apply import pixel_regions  # noqa: E402
from semiearth.purify import NoisyTeacher, VLMPurifier  # noqa: E402
from semiearth.purify.classifiers._base import restrict_q  # noqa: E402
from semiearth.purify.classifiers.abstain import AbstainingClassifier  # noqa: E402
from semiearth.purify.classifiers.classes import DATASET_CLASSES  # noqa: E402
from semiearth.purify.classifiers.noisy_oracle import NoisyOracleClassifier  # noqa: E402
from semiearth.purify.classifiers.oracle import segment_histogram  # noqa: E402
from semiearth.purify.classifiers.registry import classifier_class  # noqa: E402

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data")
IGNORE = 255
ADMIT = 0.95
SUB = 512  # sub-image side: the tile is cut into a batch of SUB x SUB images
FIT_SUB = 256  # the labelled images of the prototypes are cut smaller, so there are >= 2 to cross-fit
ACCURACIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # region accuracies of the noisy oracle
RULES = (("bayes", 1.0), ("bayes", 0.5), ("paper", 1.0))  # (rule, trust)


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
    """Wraps a classifier so the rules reuse the same q for the same regions (same crops).

    With `gt` [B,H,W], it also records each region's true class (majority ground truth of its
    candidate pixels, -1 when none is labelled) and the classifier's top-1, for region accuracy.
    """

    def __init__(self, inner, gt=None):
        self.inner = inner
        self.input_size, self.mean, self.std = inner.input_size, inner.mean, inner.std
        self.num_classes = inner.num_classes
        self.class_names = getattr(inner, "class_names", None)
        self.cache = {}
        self.seconds = 0.0
        self.crops = 0
        self.gt = gt
        self.truth = {}
        self._observed = None

    def observe(self, *args):
        self._observed = args
        if hasattr(self.inner, "observe"):
            self.inner.observe(*args)

    def __call__(self, crops, regions):
        key = regions.cpu().numpy().tobytes()
        if key not in self.cache:
            t = time.perf_counter()
            self.cache[key] = self.inner(crops, regions)
            self.seconds += time.perf_counter() - t
            self.crops += crops.shape[0]
            if self.gt is not None and self._observed is not None:
                stats, _, seg_table = self._observed
                n = regions.shape[0]
                hist = segment_histogram(stats, seg_table, self.gt, n, self.num_classes, IGNORE).cpu()
                self.truth[key] = torch.where(hist.sum(1) > 0, hist.argmax(1), torch.full((n,), -1))
        return self.cache[key]

    def teacher_accuracy(self) -> tuple[float, int]:
        """(fraction of labelled regions whose pseudo-label class, column 5, is the true class, count)."""
        right = total = 0
        for key, truth in self.truth.items():
            cls = torch.from_numpy(np.frombuffer(key, dtype=np.float32).reshape(-1, 6)[:, 5].copy()).long()
            lab = truth >= 0
            right += int((cls[lab] == truth[lab]).sum())
            total += int(lab.sum())
        return right / max(total, 1), total

    def region_accuracy(self) -> tuple[float, int]:
        """(fraction of labelled regions whose top-1 is the true class, labelled regions) so far."""
        right = total = 0
        for key, truth in self.truth.items():
            pred = self.cache[key].argmax(1).cpu()
            lab = truth >= 0
            right += int((pred[lab] == truth[lab]).sum())
            total += int(lab.sum())
        return right / max(total, 1), total


def rule_name(rule: str, trust: float) -> str:
    return rule if rule == "paper" or trust == 1.0 else f"{rule} t={trust:g}"


def purify_row(label: str, clf, rule: str, trust: float, images, logits, gts, c, stats_kwargs) -> dict:
    """One table row: `clf` + rule through VLMPurifier, scored against the ground truth."""
    purifier = VLMPurifier(clf, rule=rule, trust=trust, **stats_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = purifier(images, logits)
    return {
        "method": f"{label} + {rule_name(rule, trust)}",
        **metrics(out.label, out.conf, gts, c),
        "regions": out.num_regions,
        "relabelled": out.relabelled,
        "confirmed": out.confirmed,
        "seconds": sum(out.timings.values()),
    }


def prepare_units(args, teacher) -> list[dict]:
    """Every evaluation unit with its batch, ground truth, teacher logits and teacher row."""
    units = []
    for ui, (name, dataset, img, gt, c, fit) in enumerate(tiles(args.data)):
        images, gts = to_batch(img), to_batch(gt)
        logits = teacher(gts, c, seed=args.seed + 7919 * ui)
        # The teacher's labels and confidences as purify_stats computes them (the same op and
        # backend as the purifier), so that "unchanged" below is exact, not up to float rounding.
        st = ops.purify_stats(logits, backend=args.backend)
        units.append(
            {
                "index": ui,
                "name": name,
                "dataset": dataset,
                "size": list(gt.shape),
                "c": c,
                "images": images,
                "gts": gts,
                "logits": logits,
                "fit": fit,
                "teacher": {"method": "teacher alone", **metrics(st.label, st.conf, gts, c)},
            }
        )
    return units


def stats_kwargs_for(args, c: int, side: int = SUB) -> dict:
    """Purifier settings; the region budget scales with the image area (args.max_regions per SUB^2)."""
    budget = max(1, round(args.max_regions * side * side / (SUB * SUB)))
    return dict(
        num_classes=c,
        low_thresh=args.low_thresh,
        cell=args.cell,
        max_regions=budget,
        context=args.context,
        backend=args.backend,
    )


def accuracy_curves(args, units) -> dict:
    """Noisy oracle at each region accuracy x rule: metric changes against the teacher, per unit.

    Returns {"rows": [...], "mean": {rule: {accuracy: {d_precision, d_coverage, d_miou, realised}}}}.
    Each (unit, accuracy, rule) is the mean over args.oracle_seeds draws of the oracle's answers.
    """
    rows = []
    for u in units:
        t0 = time.perf_counter()
        names = DATASET_CLASSES[u["dataset"]]
        for a in ACCURACIES:
            for seed in range(args.oracle_seeds):
                clf = NoisyOracleClassifier(
                    u["c"], a, names, u["dataset"], gt=u["gts"], seed=seed, calibration=args.oracle_calibration
                )
                wrapped = CachedQ(clf, gt=u["gts"])
                for rule, trust in RULES:
                    r = purify_row(
                        "noisy",
                        wrapped,
                        rule,
                        trust,
                        u["images"],
                        u["logits"],
                        u["gts"],
                        u["c"],
                        stats_kwargs_for(args, u["c"]),
                    )
                    rows.append(
                        {
                            "unit": u["name"],
                            "accuracy": a,
                            "seed": seed,
                            "rule": rule_name(rule, trust),
                            "realised": wrapped.region_accuracy()[0],
                            **{f"d_{k}": r[k] - u["teacher"][k] for k in ("precision", "coverage", "miou")},
                        }
                    )
        print(f"  curves {u['name']}: {time.perf_counter() - t0:.1f} s", flush=True)
    return {"rows": rows, "mean": curve_means(rows), "per_unit": curve_means(rows, by_unit=True)}


def curve_means(rows, by_unit: bool = False) -> dict:
    """Mean of the metric changes over seeds (and units, unless by_unit): {key: {rule: {a: {...}}}}."""
    groups = {}
    for r in rows:
        key = (r["unit"] if by_unit else "all", r["rule"], r["accuracy"])
        groups.setdefault(key, []).append(r)
    out = {}
    for (unit, rule, a), rs in groups.items():
        mean = {k: float(np.mean([r[k] for r in rs])) for k in ("d_precision", "d_coverage", "d_miou", "realised")}
        out.setdefault(unit, {}).setdefault(rule, {})[a] = mean
    return out if by_unit else out["all"]


def break_even(curve: dict, key: str) -> float | None:
    """Lowest accuracy from which `key` (a metric change) stays >= 0 on the grid, linearly
    interpolated between grid points; the grid's first point if it never drops, None if the last is < 0."""
    acc = sorted(curve)
    d = [curve[a][key] for a in acc]
    if d[-1] < 0:
        return None
    neg = [i for i, v in enumerate(d) if v < 0]
    if not neg:
        return acc[0]
    i = neg[-1]
    return acc[i] + (0 - d[i]) / (d[i + 1] - d[i]) * (acc[i + 1] - acc[i])


def break_evens(curves: dict) -> dict:
    """Per rule: break-even accuracy for mIoU, for precision, and where VLM-PP stops hurting (both),
    on the mean over units and the worst unit."""
    out = {}
    for rule in curves["mean"]:
        row = {}
        for key in ("d_miou", "d_precision"):
            row[key] = break_even(curves["mean"][rule], key)
            per_unit = [break_even(curves["per_unit"][u][rule], key) for u in curves["per_unit"]]
            row[key + "_worst"] = None if None in per_unit else max(per_unit)
        both = [row["d_miou_worst"], row["d_precision_worst"]]
        row["stops_hurting"] = None if None in both else max(both)
        out[rule] = row
    return out


def fit_prototype(args, u):
    """A PrototypeClassifier fitted on the unit's labelled images (not the unit's own pixels)."""
    proto = classifier_class("prototype")(
        "efficientnet_lite0", num_classes=u["c"], input_size=args.crop_size, **prototype_options(args)
    )
    t = time.perf_counter()
    f_img, f_gt = fit_batch(u["fit"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        proto.fit(f_img, f_gt, cell=args.cell, context=args.context, max_per_class=args.fit_per_class)
    info = {
        "fit_seconds": time.perf_counter() - t,
        "fit_segments": proto.fit_counts.tolist(),
        "temperature": proto.fitted_temperature,
    }
    return proto, info


def weighted_classifiers(args, dataset: str) -> dict:
    """Zero-shot classifiers whose weights the user gives (--openclip FILE, --vlm FOLDER); none by default."""
    out = {}
    if args.openclip:
        clf = classifier_class("openclip")("auto", args.openclip, class_names=dataset)
        out[f"openclip ({os.path.basename(args.openclip)})"] = clf
    if args.vlm:
        clf = classifier_class("vlm")(args.vlm, class_names=dataset, device=args.vlm_device)
        out[f"vlm ({os.path.basename(os.path.normpath(args.vlm))})"] = clf
    return out


def prototype_options(args) -> dict:
    scales = tuple(float(x) for x in str(args.scales).split(","))
    return {"prototypes_per_class": args.prototypes_per_class, "scales": scales}


def fit_batch(fit) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled (image, gt) list cut into FIT_SUB x FIT_SUB images (>= 2, for cross-fitting)."""
    f_img = torch.cat([to_batch(i, FIT_SUB) for i, _ in fit])
    f_gt = torch.cat([to_batch(g, FIT_SUB) for _, g in fit])
    return f_img, f_gt


def abstaining(args, u, proto, teacher, min_accuracy: dict):
    """One AbstainingClassifier per bayes rule around the fitted prototypes, calibrated on the purifier's
    regions of the labelled images under their own seeded noisy teacher (cross-fitted prototypes)."""
    f_img, f_gt = fit_batch(u["fit"])
    f_logits = teacher(f_gt, u["c"], seed=args.seed + 104729 + 7919 * u["index"])
    kw = stats_kwargs_for(args, u["c"], FIT_SUB)
    first = None
    wrappers = {}
    for rule, accuracy in min_accuracy.items():
        clf = AbstainingClassifier(proto, min_accuracy=accuracy)
        if first is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                clf.fit(
                    f_img,
                    f_gt,
                    VLMPurifier(clf, **kw),
                    logits=f_logits,
                    ignore_index=IGNORE,
                    cell=args.cell,
                    context=args.context,
                    max_per_class=args.fit_per_class,
                )
            first = clf
        else:
            clf.calibrate(*first.fit_outcomes)
        wrappers[rule] = clf
    return wrappers


def evaluate_unit(args, u, teacher, min_accuracy: dict) -> dict:
    """The table rows of one unit: teacher, uniform, oracle, prototypes, abstaining prototypes."""
    t0 = time.perf_counter()
    c, kw = u["c"], stats_kwargs_for(args, u["c"])
    rows = [u["teacher"]]
    classifiers = {"uniform": classifier_class("uniform")(c), "oracle": classifier_class("oracle")(c, gt=u["gts"])}
    unit = {"unit": u["name"], "size": u["size"], "batch": list(u["images"].shape), "classes": c}
    if u["fit"] is not None and not args.no_prototype:
        proto, unit["prototype"] = fit_prototype(args, u)
        classifiers["prototype (EffNet-Lite0)"] = proto
    classifiers.update(weighted_classifiers(args, u["dataset"]))
    accuracy = {}
    for cname, clf in classifiers.items():
        wrapped = CachedQ(clf, gt=u["gts"])
        for rule, trust in RULES:
            args_ = (u["images"], u["logits"], u["gts"], c, kw)
            rows.append(purify_row(cname, wrapped, rule, trust, *args_))
        if cname != "uniform":  # a uniform row has no top-1
            accuracy[cname] = wrapped.region_accuracy()
        else:
            accuracy["teacher pseudo-label (the segment's class)"] = wrapped.teacher_accuracy()
        if cname.startswith("prototype"):
            unit["prototype"].update(classify_seconds=wrapped.seconds, crops=wrapped.crops)
    if "prototype (EffNet-Lite0)" in classifiers:
        for rname, clf in abstaining(args, u, classifiers["prototype (EffNet-Lite0)"], teacher, min_accuracy).items():
            rule, trust = next((r, t) for r, t in RULES if rule_name(r, t) == rname)
            wrapped = CachedQ(clf, gt=u["gts"])
            row = purify_row("prototype, abstaining", wrapped, rule, trust, u["images"], u["logits"], u["gts"], c, kw)
            kept = clf.last_keep
            row.update(kept=int(kept.sum()), threshold=clf.threshold, min_accuracy=clf.min_accuracy)
            rows.append(row)
            accuracy[f"prototype, on the regions abstention kept ({rname})"] = kept_accuracy(wrapped, clf)
    unit.update(rows=rows, region_accuracy=accuracy, seconds=time.perf_counter() - t0)
    return unit


def kept_accuracy(wrapped: CachedQ, clf: AbstainingClassifier) -> tuple[float, int]:
    """Region accuracy of the inner classifier on the regions the abstention kept (last call)."""
    ((key, truth),) = wrapped.truth.items()
    keep = clf.last_keep & (truth >= 0)
    pred = wrapped.cache[key].argmax(1).cpu()
    return float((pred[keep] == truth[keep]).float().mean()) if bool(keep.any()) else float("nan"), int(keep.sum())


def run(args) -> dict:
    torch.manual_seed(0)
    teacher = NoisyTeacher()
    results = {"config": vars(args).copy(), "teacher_model": teacher.as_dict(), "units": []}
    units = prepare_units(args, teacher)
    print("noisy-oracle curves:", flush=True)
    curves = accuracy_curves(args, units)
    results["curves"] = curves
    results["break_even"] = break_evens(curves)
    print_curves(results)
    min_accuracy = {name: args.min_accuracy or abstention_accuracy(results["break_even"][name]) for name in BAYES}
    results["min_accuracy"] = min_accuracy
    for u in units:
        unit = evaluate_unit(args, u, teacher, min_accuracy)
        results["units"].append(unit)
        print_unit(unit, flush=True)
    results["acceptance"] = acceptance(results)
    return results


BAYES = [rule_name(r, t) for r, t in RULES if r == "bayes"]


def abstention_accuracy(be: dict) -> float:
    """The region accuracy an abstaining classifier must reach to answer under a bayes rule: the mIoU
    break-even of the worst tile, and at least the loss threshold ADMIT. The precision curve gives no
    break-even (even an always-right top-1 lowers precision@0.95 a little: a segment is not pure), so
    a region is only allowed to confirm pixels where its pixels are as often right as the admitted ones."""
    miou = be["d_miou_worst"]
    return max(ADMIT, 1.0 if miou is None else miou)


def print_curves(results: dict) -> None:
    print("\nmean change against the teacher alone (precision, coverage, mIoU in points) per region accuracy:")
    for rule, curve in results["curves"]["mean"].items():
        for a, m in sorted(curve.items()):
            print(
                f"  {rule:12s} a={a:.1f} (realised {m['realised']:.3f}): precision {100 * m['d_precision']:+.3f} "
                f"coverage {100 * m['d_coverage']:+.3f} mIoU {100 * m['d_miou']:+.3f}"
            )
        be = results["break_even"][rule]
        print(f"  {rule:12s} break-even: {json.dumps(be)}", flush=True)


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
    for r in unit["rows"]:
        if "kept" in r:
            print(f"  {r['method']}: kept q on {r['kept']}/{r['regions']} regions (top-1 >= {r['threshold']:.3f})")
    for cname, (acc, n) in unit.get("region_accuracy", {}).items():
        print(f"  region accuracy of {cname}: {acc:.3f} on {n} labelled regions", flush=flush)


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
        for r in unit["rows"]:  # abstaining prototypes: never lower mIoU by > 0.1 point, nor precision
            if r["method"].startswith("prototype, abstaining"):
                rule = r["method"].split(" + ")[1]
                checks[unit["unit"]][f"abstain_{rule}_miou_within_0.1pt"] = r["miou"] >= t["miou"] - 0.001
                checks[unit["unit"]][f"abstain_{rule}_precision_not_lower"] = r["precision"] >= t["precision"]
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


def markdown_curves(results: dict) -> str:
    """Mean change against the teacher alone per rule and region accuracy, and the break-even points."""
    lines = [
        "| rule | region accuracy a (realised) | precision@0.95 change | coverage change | mIoU change | tiles with mIoU down |",
        "|---|---|---|---|---|---|",
    ]
    per_unit = results["curves"]["per_unit"]
    for rule, curve in results["curves"]["mean"].items():
        for a, m in sorted(curve.items()):
            down = sum(per_unit[u][rule][a]["d_miou"] < 0 for u in per_unit)
            lines.append(
                f"| {rule} | {a:.1f} ({m['realised']:.3f}) | {100 * m['d_precision']:+.3f} | "
                f"{100 * m['d_coverage']:+.2f} | {100 * m['d_miou']:+.2f} | {down}/{len(per_unit)} |"
            )
    lines += ["", "| rule | break-even a, mIoU (mean / worst tile) | precision (mean / worst tile) | stops hurting |"]
    lines.append("|---|---|---|---|")

    def f(x):
        return "never" if x is None else f"{x:.3f}"

    for rule, be in results["break_even"].items():
        lines.append(
            f"| {rule} | {f(be['d_miou'])} / {f(be['d_miou_worst'])} | {f(be['d_precision'])} / "
            f"{f(be['d_precision_worst'])} | {f(be['stops_hurting'])} |"
        )
    lines += ["", "| tile | classifier | region accuracy | labelled regions |", "|---|---|---|---|"]
    for unit in results["units"]:
        for cname, (acc, n) in unit["region_accuracy"].items():
            if n:
                lines.append(f"| {unit['unit']} | {cname} | {acc:.3f} | {n} |")
    return "\n".join(lines)


def measured_points(results: dict) -> list:
    """(rule, region accuracy, row, teacher row) of the prototype classifier on every unit that has it."""
    points = []
    for unit in results["units"]:
        rows = {r["method"]: r for r in unit["rows"]}
        acc = unit["region_accuracy"].get("prototype (EffNet-Lite0)")
        for rule in results["curves"]["mean"]:
            row = rows.get(f"prototype (EffNet-Lite0) + {rule}")
            if acc is not None and row is not None:
                points.append((rule, acc[0], row, rows["teacher alone"]))
    return points


def plot_curves(results: dict, path: str) -> None:
    """PNG: precision / coverage / mIoU change against region accuracy, one line per rule (mean over
    tiles, thin lines per tile), and the prototype classifier's measured points (its region accuracy,
    its change; X in the rule's colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    colours = {"bayes": "tab:blue", "bayes t=0.5": "tab:green", "paper": "tab:red"}
    measured = measured_points(results)
    for ax, key, title in zip(
        axes, ("d_precision", "d_coverage", "d_miou"), ("precision@0.95", "coverage", "mIoU"), strict=True
    ):
        for rule, curve in results["curves"]["mean"].items():
            acc = sorted(curve)
            ax.plot(acc, [100 * curve[a][key] for a in acc], "o-", color=colours.get(rule), label=rule, lw=2)
            for per in results["curves"]["per_unit"].values():
                ax.plot(acc, [100 * per[rule][a][key] for a in acc], "-", color=colours.get(rule), lw=0.6, alpha=0.4)
        ax.axhline(0, color="black", lw=0.8)
        for i, (rule, a, row, teacher) in enumerate(measured):
            label = "prototype (EffNet-Lite0) measured, per tile" if i == 0 else None
            y = 100 * (row[key[2:]] - teacher[key[2:]])
            ax.plot([a], [y], "X", ms=9, mec="black", color=colours.get(rule), label=label)
        ax.set_xlabel("region accuracy of the classifier (noisy oracle)")
        ax.set_ylabel(f"{title} change vs teacher alone (points)")
        ax.set_title(f"{title}: mean over tiles (thin: each tile)")
        ax.grid(alpha=0.3)
    axes[2].legend(loc="upper left", fontsize=9)
    fig.suptitle("VLM-PP on the real tiles: how accurate must the region classifier be?")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Restricted:
    """A classifier scoring only the purifier's candidate classes, from one that scores all of them:
    its q restricted with _base.restrict_q (what a restricted VLM or CLIP call returns)."""

    def __init__(self, inner, neutral: str = "min"):
        self.inner, self.neutral = inner, neutral
        self.input_size, self.mean, self.std = inner.input_size, inner.mean, inner.std
        self.num_classes = inner.num_classes
        self.class_names = getattr(inner, "class_names", None)

    def observe(self, *args):
        if hasattr(self.inner, "observe"):
            self.inner.observe(*args)

    def __call__(self, crops, regions, classes=None):
        return restrict_q(self.inner(crops, regions), classes, self.neutral)


def agreement(full, top) -> dict:
    """Restricted (`top`) against full scoring (`full`), two PurifyOutputs of the same regions, on the
    purified pixels (the selected segments' candidates)."""
    _, hit = pixel_regions(full.stats, full.seg_table)
    n = max(int(hit.sum()), 1)
    dconf = (full.conf - top.conf).abs()[hit]
    admit = (full.conf >= ADMIT) != (top.conf >= ADMIT)
    return {
        "pixels": int(hit.sum()),
        "label_diff": float((full.label != top.label)[hit].sum()) / n,
        "conf_max_diff": float(dconf.max()) if dconf.numel() else 0.0,
        "conf_mean_diff": float(dconf.mean()) if dconf.numel() else 0.0,
        "admit_diff": float(admit[hit].sum()) / n,
        "scored_per_region": float(top.classes.sum(1).float().mean()) if top.classes is not None else float("nan"),
        "regions": full.num_regions,
    }


def topk_pair(clf, images, logits, kw, topk, prob_floor, rule="bayes", trust=1.0, neutral="min") -> dict:
    """agreement() of `clf` restricted (Restricted(clf, neutral) unless it takes `classes`) vs full scoring."""
    from semiearth.purify.classifiers._base import accepts_classes

    if not accepts_classes(clf):  # the same q in both runs (the noisy oracle draws anew per call)
        clf = CachedQ(clf)
    restricted = clf if accepts_classes(clf) else Restricted(clf, neutral)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = VLMPurifier(clf, rule=rule, trust=trust, topk=0, **kw)(images, logits)
        top = VLMPurifier(restricted, rule=rule, trust=trust, topk=topk, prob_floor=prob_floor, **kw)(images, logits)
    return agreement(full, top)


def tiny_vlm(dataset: str, input_size: int = 56):
    """HFVLMClassifier on a tiny random Qwen2.5-VL (bench/vlm_timing.py) with `dataset`'s classes."""
    # The repository's own kernels/ folder (on sys.path through ROOT) shadows the `kernels` package that
    # transformers' model modules import: import them without ROOT on the path first.
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
    try:
        import transformers.activations  # noqa: F401
    finally:
        sys.path[:] = saved
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from vlm_timing import build_random_vlm

    from semiearth.purify import HFVLMClassifier

    model, processor = build_random_vlm("tiny-qwen2.5-vl")
    return HFVLMClassifier(model, dataset, processor=processor, input_size=input_size, batch_size=64)


def topk_agreement(args, units=None) -> list:
    """Rows of section 4: per unit, classifier (noisy oracle at several accuracies, tiny VLM) and rule."""
    units = units if units is not None else prepare_units(args, NoisyTeacher())
    rows = []
    for u in units:
        kw = stats_kwargs_for(args, u["c"])
        classifiers = {
            f"noisy oracle a={a}": NoisyOracleClassifier(
                u["c"], a, DATASET_CLASSES[u["dataset"]], u["dataset"], gt=u["gts"], seed=0
            )  # fmt: skip
            for a in (0.5, 0.7, 0.9)
        }
        if not args.no_vlm:
            classifiers["tiny random VLM"] = tiny_vlm(u["dataset"])
        for cname, clf in classifiers.items():
            for rule, trust in (("bayes", 1.0), ("bayes", 0.5)) if not cname.startswith("tiny") else (("bayes", 1.0),):
                r = topk_pair(clf, u["images"], u["logits"], kw, args.topk, args.prob_floor, rule, trust, args.neutral)
                rows.append({"unit": u["name"], "classifier": cname, "rule": rule_name(rule, trust), **r})
                print(
                    f"  {u['name']:10s} {cname:20s} {rule_name(rule, trust):12s} scored {r['scored_per_region']:.2f}"
                    f"/{u['c']} classes: label differs on {100 * r['label_diff']:.4f} % of {r['pixels']} purified px, "
                    f"|conf diff| max {r['conf_max_diff']:.4f} mean {r['conf_mean_diff']:.5f}, "
                    f"admission differs on {100 * r['admit_diff']:.4f} %",
                    flush=True,
                )
    return rows


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
    ap.add_argument("--fit-per-class", type=int, default=192, help="labelled segments per class for prototypes")
    ap.add_argument("--prototypes-per-class", type=int, default=1)
    ap.add_argument("--scales", default="1.0", help="prototype crop zooms, comma-separated (e.g. 1.0,0.5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--no-prototype", action="store_true")
    ap.add_argument(
        "--openclip", help="also measure OpenClipClassifier with this checkpoint (model from the file name)"
    )
    ap.add_argument("--vlm", help="also measure HFVLMClassifier with the model in this folder (e.g. Qwen2.5-VL-3B)")
    ap.add_argument("--vlm-device", default="cpu")
    ap.add_argument("--oracle-seeds", type=int, default=3, help="noisy-oracle draws per accuracy and tile")
    ap.add_argument(
        "--oracle-calibration",
        default="segments",
        choices=("segments", "labels"),
        help="noisy oracle's confidence: calibrated per pixel on each segment's class shares, or on top-1 labels",
    )
    ap.add_argument(
        "--min-accuracy", type=float, default=None, help="abstention threshold (default: the measured break-even)"
    )
    ap.add_argument("--plot", help="write the noisy-oracle curves as a PNG here (needs matplotlib)")
    ap.add_argument("--topk-agreement", action="store_true", help="only section 4: restricted vs full scoring")
    ap.add_argument("--topk", type=int, default=3, help="section 4: teacher top-k classes scored per region")
    ap.add_argument("--prob-floor", type=float, default=0.05, help="section 4: also classes above this mean prob")
    ap.add_argument("--no-vlm", action="store_true", help="section 4: noisy oracle only (no tiny VLM)")
    ap.add_argument(
        "--neutral", default="min", choices=("min", "mean", "max"),
        help="section 4: the unscored classes' q for the noisy oracle (classifiers/_base.fill_unscored)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "loveda")):
        print(f"no data at {args.data} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    if args.topk_agreement:
        t = time.perf_counter()
        rows = topk_agreement(args)
        print(f"total {time.perf_counter() - t:.1f} s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": vars(args), "topk_agreement": rows}, f, indent=1)
        return 0
    t = time.perf_counter()
    results = run(args)
    results["seconds"] = time.perf_counter() - t
    results["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    print("\nacceptance:", json.dumps(results["acceptance"], indent=1))
    print(f"total {results['seconds']:.1f} s")
    if args.markdown:
        print("\n" + markdown(results))
        print("\n" + markdown_curves(results))
    if args.plot:
        plot_curves(results, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(all(v.values()) for v in results["acceptance"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
