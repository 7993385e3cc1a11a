"""Ablation of the demo: what does VLM-PP add to training, beyond the teacher-student method itself?

Four arms on the demo's synthetic scenes (configs/demo.yaml), each with several training seeds:
  supervised      the labelled images only (train.unlabeled_batch_size = 0)
  semi            teacher-student without VLM-PP (purify: none)
  semi+prototype  teacher-student + VLM-PP with the demo's prototype classifier
  semi+oracle     teacher-student + VLM-PP with the ground truth of the unlabelled images (an upper
                  bound: no real run has these labels)
Prints test mIoU mean +- std per arm (the best checkpoint on val, as the demo), writes a JSON and a
PNG of val mIoU against iteration per arm (mean over seeds, shaded min-max).

    python bench/demo_ablation.py [--seeds 0 1 2] [--arms ...] [--out runs/ablation] [--plot ablation.png]
        [--set train.iters=1600 ...]      # any config override, applied to every arm
        [--resume]                        # keep finished runs of the same config, continue unfinished ones

Not part of `make demo`: 4 arms x 3 seeds is 12 trainings (about an hour on 2 CPU cores). With
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
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    val = sorted({r["iter"]: r["mIoU"] for r in rows if r.get("split") == "val" and "mIoU" in r}.items())
    return {"test_miou": result["test"]["mIoU"], "val": val, "seconds": seconds}


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


def summarise(runs: dict) -> dict:
    """Per arm: test mIoU mean, std (over seeds, ddof=1 when >= 2 seeds), min, max, n."""
    out = {}
    for arm, per_seed in runs.items():
        x = np.array([r["test_miou"] for r in per_seed.values()]) * 100
        std = float(x.std(ddof=1)) if x.size > 1 else 0.0
        out[arm] = {"mean": float(x.mean()), "std": std, "min": float(x.min()), "max": float(x.max()), "n": x.size}
    return out


def plot(runs: dict, path: str) -> None:
    """Val mIoU against iteration per arm: mean over seeds, shaded between the seeds' min and max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for arm, per_seed in runs.items():
        curves = [dict(r["val"]) for r in per_seed.values()]
        iters = sorted(set.intersection(*(set(c) for c in curves)))
        if not iters:
            continue
        y = np.array([[c[i] * 100 for i in iters] for c in curves])
        (line,) = ax.plot(iters, y.mean(0), "o-", label=f"{arm} ({len(curves)} seeds)")
        ax.fill_between(iters, y.min(0), y.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("Demo ablation: val mIoU per arm (mean over seeds, shaded min-max)")
    ax.grid(alpha=0.3)
    ax.legend()
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
    ap.add_argument("--plot", help="PNG of val mIoU against iteration (needs matplotlib)")
    ap.add_argument("--json", help="write the per-run results and the summary here")
    args = ap.parse_args(argv)
    runs = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            r = runs[arm][seed] = run_arm(arm, seed, args)
            took = "read back" if r["seconds"] is None else f"{r['seconds']:.0f} s"
            print(f"[ablation] {arm} seed {seed}: test mIoU {100 * r['test_miou']:.2f} ({took})", flush=True)
            if args.json:
                write_json(args.json, runs, args.set)
    summary = summarise(runs)
    print("\n| arm | test mIoU, mean +- std | min | max | seeds |\n|---|---:|---:|---:|---:|")
    for arm, s in summary.items():
        print(f"| {arm} | {s['mean']:.2f} +- {s['std']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {s['n']} |")
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        write_json(args.json, runs, args.set)
    return 0


def write_json(path: str, runs: dict, overrides: list) -> None:
    """The per-run results so far and their summary (arms with no finished run yet are left out)."""
    done = {arm: per_seed for arm, per_seed in runs.items() if per_seed}
    with open(path, "w") as f:
        json.dump({"runs": done, "summary": summarise(done), "overrides": overrides}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
