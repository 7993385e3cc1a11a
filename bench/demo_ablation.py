"""Ablation of the demo: what does VLM-PP add to each S4 method, beyond the method itself?

Per method (train.method: supervised, fixmatch, mean_teacher, unimatch_v2, cps) and VLM-PP arm, on
the demo's synthetic scenes (semiearth/configs/demo.yaml: 2 labelled images), with several training seeds:
  none       the method without VLM-PP (purify: none)
  oracle     VLM-PP with the ground truth of the unlabelled images as its classifier (an upper
             bound: no real run has these labels)
  noisy      VLM-PP with a simulated VLM of region accuracy 0.75 (NoisyOracleClassifier, calibrated)
  prototype  VLM-PP with the demo's prototype classifier (EfficientNet-Lite0 features, few-shot)
The oracle and noisy arms purify 16 regions per image at trust 1.0 (ORACLE_SETTINGS). supervised has one
arm (no unlabelled data, nothing to purify). Prints test mIoU per run name ("method" or
"method+arm", the best checkpoint on val, as the demo) as mean +- std over seeds, the paired
difference (same seed: same initialisation and batches) of every VLM-PP arm to the same method
without VLM-PP and of every method to supervised, the IoU per class and, with --without, the mean
IoU without some classes; writes a JSON and a PNG (val mIoU against iteration, test mIoU per seed).

    python bench/demo_ablation.py [--methods fixmatch ...] [--arms none oracle noisy] [--seeds 0 1 2]
        [--out runs/ablation] [--plot ablation.png] [--json ablation.json]
        [--set train.iters=1600 ...]      # any config override, applied to every run
        [--resume]                        # keep finished runs of the same config, continue unfinished ones
        [--without car]                   # also the mean IoU without these classes

Not part of `make demo`: 5 methods x 3 arms x 3 seeds is 39 trainings (docs/methods.md: measured times). With
--json, the file is rewritten after every training, so a stopped call loses at most the one in progress.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import yaml  # noqa: E402

from semiearth.config import config_to_dict, load_config  # noqa: E402

DEMO_CONFIG = os.path.join(ROOT, "semiearth", "configs", "demo.yaml")
METHODS = ("supervised", "fixmatch", "mean_teacher", "unimatch_v2", "cps")
ORACLE_SETTINGS = ["purify.trust=1.0", "purify.max_regions=16", "purify.every=1"]
ARMS = {
    "none": ["purify=none"],
    "oracle": ["purify.method=oracle", "purify.classifier_options={}", *ORACLE_SETTINGS],
    "noisy": ["purify.method=noisy_oracle", "purify.classifier_options={accuracy: 0.75}", *ORACLE_SETTINGS],
    "prototype": [],
}


def run_names(methods, arms) -> list[str]:
    """The runs of an ablation: "method" for its arm none, "method+arm" for the others
    (supervised has no unlabelled data and so only its arm none)."""
    names = []
    for method in methods:
        for arm in ("none",) if method == "supervised" else arms:
            names.append(method if arm == "none" else f"{method}+{arm}")
    return names


def split_name(name: str) -> tuple[str, str]:
    method, _, arm = name.partition("+")
    return method, arm or "none"


def run_arm(name: str, seed: int, args) -> dict:
    """Train one (arm, seed) from semiearth/configs/demo.yaml; its test metrics and val mIoU curve. With
    --resume, a finished run of the same config is read back instead of trained again."""
    from semiearth.train import train
    from semiearth.train.runs import prepare_run_folder

    out = os.path.join(args.out, name, f"seed{seed}")
    cfg = load_config(args.config, arm_overrides(name, seed, out, args.set))
    resume = args.resume and same_config(out, cfg)
    if resume and os.path.exists(os.path.join(out, "results.json")):
        with open(os.path.join(out, "results.json")) as f:
            result, seconds = json.load(f), None
    else:
        prepare_run_folder(out, resume=resume, overwrite=args.overwrite)
        t = time.perf_counter()
        result = train(cfg, resume=resume and os.path.exists(os.path.join(out, "latest.pth")))
        seconds = time.perf_counter() - t
    if result.get("interrupted"):
        raise SystemExit(f"[ablation] {name} seed {seed} was interrupted; continue it with --resume")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    val = {r["iter"]: r["mIoU"] for r in rows if r.get("split") == "val" and "mIoU" in r}
    val[result["iteration"]] = result["val"]["mIoU"]  # the final validation, in results.json only
    test = result["test"]
    return {"test_miou": test["mIoU"], "test_iou": test["IoU"], "val": sorted(val.items()), "seconds": seconds}


def arm_overrides(name: str, seed: int, out: str, extra: list) -> list:
    """The config overrides of one (run name, seed): the user's --set first, the method's and arm's last."""
    method, arm = split_name(name)
    own = [f"train.method={method}", *ARMS[arm]]
    return ["compare_baseline=false", f"out_dir={out}", f"train.seed={seed}", *extra, *own]


def same_config(out: str, cfg) -> bool:
    """Whether the run folder out was started with exactly cfg (its config.yaml)."""
    path = os.path.join(out, "config.yaml")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return yaml.safe_load(f) == yaml.safe_load(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def baseline_of(name: str, names) -> str | None:
    """The run a name is paired with: a VLM-PP arm with its method without VLM-PP, a method without
    VLM-PP with supervised (None when that run is not in the ablation)."""
    method, arm = split_name(name)
    base = method if arm != "none" else ("supervised" if method != "supervised" else None)
    return base if base in names else None


def summarise(runs: dict, score=lambda r: r["test_miou"]) -> dict:
    """Per run name: score (test mIoU by default) in % as mean, std (over seeds, ddof=1 when >= 2
    seeds), min, max, n, and the paired difference (same seed) to its baseline (`baseline_of`)."""
    out = {}
    for name, per_seed in runs.items():
        x = np.array([score(r) for r in per_seed.values()]) * 100
        out[name] = {
            "mean": float(x.mean()),
            "std": spread(x),
            "min": float(x.min()),
            "max": float(x.max()),
            "n": x.size,
        }
        base = baseline_of(name, runs)
        common = sorted(set(per_seed) & set(runs.get(base) or {}))
        if common:
            d = np.array([score(per_seed[k]) - score(runs[base][k]) for k in common]) * 100
            out[name]["vs"] = {"baseline": base, "mean": float(d.mean()), "std": spread(d), "n": d.size}
    return out


def mean_iou_without(excluded: list):
    """A score: the mean test IoU over the classes not in excluded."""
    return lambda r: float(np.mean([v for c, v in r["test_iou"].items() if c not in excluded]))


def spread(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1), 0 for a single value."""
    return float(x.std(ddof=1)) if x.size > 1 else 0.0


def print_summary(summary: dict, what: str = "test mIoU") -> None:
    """The summary as a Markdown table; "separates" when the paired difference exceeds twice its std."""
    print(f"\n| run | {what}, mean +- std | min | max | seeds | paired difference, mean +- std | vs | separates |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, s in summary.items():
        d = s.get("vs")
        diff = f"{d['mean']:+.2f} +- {d['std']:.2f}" if d else ""
        sep = ("yes" if abs(d["mean"]) > 2 * d["std"] and d["n"] > 1 else "no") if d else ""
        base = d["baseline"] if d else ""
        print(
            f"| {name} | {s['mean']:.2f} +- {s['std']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {s['n']} | {diff} | {base} | {sep} |"
        )


def print_per_class(runs: dict) -> None:
    """Test IoU per class and arm in %, mean +- std over seeds, as a Markdown table."""
    arms = list(runs)
    classes = list(next(iter(runs[arms[0]].values()))["test_iou"])
    print("\n| class | " + " | ".join(arms) + " |\n|---|" + "---:|" * len(arms))
    for c in classes:
        cells = []
        for arm in arms:
            x = np.array([r["test_iou"][c] for r in runs[arm].values()]) * 100
            cells.append(f"{x.mean():.1f} +- {spread(x):.1f}")
        print(f"| {c} | " + " | ".join(cells) + " |")


def plot(runs: dict, path: str) -> None:
    """Left: val mIoU against iteration per run (mean over seeds, shaded between the seeds' min and
    max), one colour per method and one line style per VLM-PP arm. Right: each seed's test mIoU per
    run, with the run's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(split_name(n)[0] for n in runs))
    styles = {"none": "o-", "oracle": "s--", "noisy": "^:", "prototype": "d-."}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.5), width_ratios=(3, 2), constrained_layout=True)
    for k, (name, per_seed) in enumerate(runs.items()):
        method, arm = split_name(name)
        colour = f"C{methods.index(method)}"
        curves = [dict(r["val"]) for r in per_seed.values()]
        iters = sorted(set.intersection(*(set(c) for c in curves)))
        if iters:
            y = np.array([[c[i] * 100 for i in iters] for c in curves])
            ax.plot(iters, y.mean(0), styles[arm], color=colour, label=f"{name} ({len(curves)} seeds)")
            ax.fill_between(iters, y.min(0), y.max(0), color=colour, alpha=0.08)
        test = [r["test_miou"] * 100 for r in per_seed.values()]
        bx.scatter([k] * len(test), test, color=colour, marker=styles[arm][0], alpha=0.7)
        bx.hlines(np.mean(test), k - 0.3, k + 0.3, color=colour)
    ax.set(xlabel="iteration", ylabel="val mIoU (%)", title="val mIoU (mean over seeds, shaded min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    bx.set_xticks(range(len(runs)), list(runs), rotation=45, ha="right", fontsize=8)
    bx.set(ylabel="test mIoU (%)", title="test mIoU of each seed (line: mean)")
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle("Demo ablation: S4 methods, each with and without VLM-PP (oracle, noisy oracle)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEMO_CONFIG)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help=f"train.method names ({', '.join(METHODS)})")
    ap.add_argument("--arms", nargs="+", default=["none", "oracle", "noisy"], choices=list(ARMS))
    ap.add_argument("--out", default=os.path.join("runs", "ablation"))
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every arm (key=value)")
    ap.add_argument("--overwrite", action="store_true", help="replace runs left in --out by an earlier call")
    ap.add_argument("--resume", action="store_true", help="reuse finished runs of the same config, continue others")
    ap.add_argument("--plot", help="PNG of the val curves and test mIoU per seed (matplotlib)")
    ap.add_argument("--json", help="write the per-run results and the summary here")
    ap.add_argument(
        "--without", nargs="+", default=[], metavar="CLASS", help="also summarise the mean IoU without these"
    )
    args = ap.parse_args(argv)
    names = load_config(args.config, args.set).data.class_names
    unknown = sorted(set(args.without) - set(names))
    if unknown:
        ap.error(f"--without {' '.join(unknown)}: no such class; the classes are {', '.join(names)}")
    runs = {name: {} for name in run_names(args.methods, args.arms)}
    for seed in args.seeds:
        for name in runs:
            r = runs[name][seed] = run_arm(name, seed, args)
            took = "read back" if r["seconds"] is None else f"{r['seconds']:.0f} s"
            print(f"[ablation] {name} seed {seed}: test mIoU {100 * r['test_miou']:.2f} ({took})", flush=True)
            if args.json:
                write_json(args.json, runs, args.set)
    print_summary(summarise(runs))
    print_per_class(runs)
    if args.without:
        print_summary(summarise(runs, mean_iou_without(args.without)), f"mean IoU without {', '.join(args.without)}")
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")
    return 0


def write_json(path: str, runs: dict, overrides: list) -> None:
    """The per-run results so far and their summary (arms with no finished run yet are left out)."""
    done = {arm: per_seed for arm, per_seed in runs.items() if per_seed}
    with open(path, "w") as f:
        json.dump({"runs": done, "summary": summarise(done), "overrides": overrides}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
