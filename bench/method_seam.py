"""Does the method seam cost anything? FixMatch seconds per iteration on the demo, this tree against
the trainer before the seam (FixMatch-EMA wired in), side by side in one run.

The baseline is a git worktree of --baseline (default e9e60fa, the last commit before the seam) with
this tree's built extension copied in (csrc/ is unchanged since). Rounds alternate the two trees, each
a fresh process training `--iters` iterations of semiearth/configs/demo.yaml (FixMatch + VLM-PP with the
prototype classifier, every 2nd iteration, the same overrides for both) with evaluation, checkpoints
and panels off; a round's seconds per iteration are the loop's own stage times (data, teacher,
purify, student, optimiser) from metrics.jsonl, after the first `--warmup` iterations.

    python bench/method_seam.py [--rounds 3] [--iters 60] [--json runs/method_seam.json]

Prints the median seconds per iteration of each tree, their ratio (seam / before), the ratio of each
tree's fastest round (the least disturbed by other jobs on a shared host) and the ratio per round.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Identical for both trees: the data regime of today's demo, and no evaluation or saving in the loop.
OVERRIDES = [
    "compare_baseline=false",
    "data.options={size: 128, labeled: 2, unlabeled: 400, val: 32, test: 48, seed: 0}",
    "train.eval_every=0",
    "train.ckpt_every=0",
    "train.panel_every=0",
    "train.log_every=10",
    "train.threads=2",
]


def baseline_tree(rev: str, where: str) -> str:
    """A worktree of `rev` at `where` with this tree's built extension."""
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", where, rev], check=True, capture_output=True)
    for so in glob.glob(os.path.join(ROOT, "semiearth", "_C*.so")):
        shutil.copy(so, os.path.join(where, "semiearth"))
    return where


def seconds_per_iteration(tree: str, iters: int, warmup: int, out: str) -> tuple[float, dict]:
    """Train `iters` iterations with the code of `tree`; the mean loop seconds per iteration after
    warmup, and per stage."""
    config = os.path.join(tree, "semiearth", "configs", "demo.yaml")
    if not os.path.exists(config):  # revisions before the configs moved into the package
        config = os.path.join(tree, "configs", "demo.yaml")
    cmd = [sys.executable, "-m", "semiearth.train", "--config", config]
    for o in [*OVERRIDES, f"train.iters={iters}", f"out_dir={out}"]:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONPATH": tree}
    subprocess.run(cmd, check=True, cwd=tree, env=env, capture_output=True)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if r["split"] == "train" and r["iter"] > warmup]
    stages = {k: statistics.mean(r["stage_s"][k] for r in rows) for k in rows[0]["stage_s"]}
    return sum(stages.values()), stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="e9e60fa", help="git revision of the trainer before the seam")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", help="write the per-round figures and the ratio here")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="seam-")
    trees = {"before": baseline_tree(args.baseline, os.path.join(work, "before")), "seam": ROOT}
    times = {name: [] for name in trees}
    stages = {name: [] for name in trees}
    try:
        for k in range(args.rounds):
            for name, tree in trees.items() if k % 2 == 0 else reversed(trees.items()):
                out = os.path.join(work, f"{name}{k}")
                total, per_stage = seconds_per_iteration(tree, args.iters, args.warmup, out)
                times[name].append(total)
                stages[name].append(per_stage)
                split = ", ".join(f"{s} {1000 * v:.1f}" for s, v in per_stage.items())
                print(f"[seam] round {k} {name}: {total:.4f} s/iteration (ms: {split})", flush=True)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", trees["before"]], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["seam"] / med["before"]
    paired = [b / a for a, b in zip(times["before"], times["seam"], strict=True)]
    fastest = min(times["seam"]) / min(times["before"])  # the least disturbed round of each: robust to host noise
    print(f"\nFixMatch + VLM-PP on the demo, median of {args.rounds} rounds, {args.iters} iterations each:")
    print(f"| trainer | s / iteration |\n|---|---:|\n| before the seam ({args.baseline}) | {med['before']:.4f} |")
    print(f"| method seam | {med['seam']:.4f} |\n\nratio seam / before: {ratio:.3f} (of the medians), "
          f"{fastest:.3f} (of the fastest rounds); per round: " + ", ".join(f"{r:.3f}" for r in paired))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": times, "stages": stages, "median": med, "ratio": ratio, "per_round": paired, "fastest": fastest,
                       "baseline": args.baseline}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
