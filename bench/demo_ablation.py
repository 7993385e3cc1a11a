"""Ablation of the demo: what does VLM-PP add to training, beyond the teacher-student method itself?

Four arms on the demo's synthetic scenes (configs/demo.yaml), each with several training seeds:
  supervised      the labelled images only (train.unlabeled_batch_size = 0)
  semi            teacher-student without VLM-PP (purify: none)
  semi+prototype  teacher-student + VLM-PP with the demo's prototype classifier
  semi+oracle     teacher-student + VLM-PP with the ground truth of the unlabelled images (an upper
                  bound: no real run has these labels)
Prints test mIoU per arm (the best checkpoint on val, as the demo) as mean +- std over seeds with
each arm's paired difference to semi (same seed), the IoU per class, and with --without the mean IoU
without some classes; writes a JSON and a PNG (val mIoU against iteration, test mIoU per seed).

    python bench/demo_ablation.py [--seeds 0 1 2] [--arms ...] [--out runs/ablation] [--plot ablation.png]
        [--set train.iters=1600 ...]      # any config override, applied to every arm
        [--resume]                        # keep finished runs of the same config, continue unfinished ones
        [--without car]                   # also the mean IoU without these classes

Not part of `make demo`: 4 arms x 3 seeds is 12 trainings (96 min at train.iters=1000 on the shared
2-core machine, README). With --json, the file is rewritten after every training, so a stopped call
loses at most the one in progress.
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

DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
ARMS = {
    "supervised": ["train.unlabeled_batch_size=0", "purify=none"],
    "semi": ["purify=none"],
    "semi+prototype": [],
    "semi+oracle": ["purify.method=oracle", "purify.classifier_options={}"],
}


def run_arm(arm: str, seed: int, args) -> dict:
    """Train one (arm, seed) from configs/demo.yaml; its test metrics and val mIoU curve. With
    --resume, a finished run of the same config is read back instead of trained again."""
    from semiearth.train import train
    from semiearth.train.runs import prepare_run_folder

    out = os.path.join(args.out, arm, f"seed{seed}")
    cfg = load_config(args.config, arm_overrides(arm, seed, out, args.set))
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
        raise SystemExit(f"[ablation] {arm} seed {seed} was interrupted; continue it with --resume")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    val = {r["iter"]: r["mIoU"] for r in rows if r.get("split") == "val" and "mIoU" in r}
    val[result["iteration"]] = result["val"]["mIoU"]  # the final validation, in results.json only
    test = result["test"]
    return {"test_miou": test["mIoU"], "test_iou": test["IoU"], "val": sorted(val.items()), "seconds": seconds}


def arm_overrides(arm: str, seed: int, out: str, extra: list) -> list:
    """The config overrides of one (arm, seed) run: the user's --set first, the arm's own last."""
    return ["compare_baseline=false", f"out_dir={out}", f"train.seed={seed}", *extra, *ARMS[arm]]


def same_config(out: str, cfg) -> bool:
    """Whether the run folder out was started with exactly cfg (its config.yaml)."""
    path = os.path.join(out, "config.yaml")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return yaml.safe_load(f) == yaml.safe_load(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def summarise(runs: dict, score=lambda r: r["test_miou"]) -> dict:
    """Per arm: score (test mIoU by default) in % as mean, std (over seeds, ddof=1 when >= 2 seeds),
    min, max, n, and the paired difference to the semi arm (same seed: same initialisation and
    batches) as mean and std."""
    out = {}
    for arm, per_seed in runs.items():
        x = np.array([score(r) for r in per_seed.values()]) * 100
        out[arm] = {
            "mean": float(x.mean()),
            "std": spread(x),
            "min": float(x.min()),
            "max": float(x.max()),
            "n": x.size,
        }
        common = sorted(set(per_seed) & set(runs.get("semi", {})))
        if arm != "semi" and common:
            d = np.array([score(per_seed[k]) - score(runs["semi"][k]) for k in common]) * 100
            out[arm]["vs_semi"] = {"mean": float(d.mean()), "std": spread(d), "n": d.size}
    return out


def mean_iou_without(excluded: list):
    """A score: the mean test IoU over the classes not in excluded."""
    return lambda r: float(np.mean([v for c, v in r["test_iou"].items() if c not in excluded]))


def spread(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1), 0 for a single value."""
    return float(x.std(ddof=1)) if x.size > 1 else 0.0


def print_summary(summary: dict, what: str = "test mIoU") -> None:
    """The summary as a Markdown table."""
    print(f"\n| arm | {what}, mean +- std | min | max | seeds | paired difference to semi, mean +- std |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm, s in summary.items():
        d = s.get("vs_semi")
        diff = f"{d['mean']:+.2f} +- {d['std']:.2f}" if d else ""
        print(f"| {arm} | {s['mean']:.2f} +- {s['std']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {s['n']} | {diff} |")


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
    """Left: val mIoU against iteration per arm (mean over seeds, shaded between the seeds' min and
    max). Right: each seed's test mIoU per arm, with the arm's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), width_ratios=(3, 2), constrained_layout=True)
    for k, (arm, per_seed) in enumerate(runs.items()):
        colour = f"C{k}"
        curves = [dict(r["val"]) for r in per_seed.values()]
        iters = sorted(set.intersection(*(set(c) for c in curves)))
        if iters:
            y = np.array([[c[i] * 100 for i in iters] for c in curves])
            ax.plot(iters, y.mean(0), "o-", color=colour, label=f"{arm} ({len(curves)} seeds)")
            ax.fill_between(iters, y.min(0), y.max(0), color=colour, alpha=0.15)
        test = [r["test_miou"] * 100 for r in per_seed.values()]
        bx.scatter([k] * len(test), test, color=colour, alpha=0.7)
        bx.hlines(np.mean(test), k - 0.25, k + 0.25, color=colour)
    ax.set(xlabel="iteration", ylabel="val mIoU (%)", title="val mIoU per arm (mean over seeds, shaded min-max)")
    ax.grid(alpha=0.3)
    ax.legend()
    bx.set_xticks(range(len(runs)), list(runs), rotation=15)
    bx.set(ylabel="test mIoU (%)", title="test mIoU of each seed (line: mean)")
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle("Demo ablation: what VLM-PP adds to teacher-student training")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEMO_CONFIG)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
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
    runs = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            r = runs[arm][seed] = run_arm(arm, seed, args)
            took = "read back" if r["seconds"] is None else f"{r['seconds']:.0f} s"
            print(f"[ablation] {arm} seed {seed}: test mIoU {100 * r['test_miou']:.2f} ({took})", flush=True)
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
