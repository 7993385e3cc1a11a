"""A run as the user starts it: the run folder (refused when it holds a run, unless resume or
overwrite), one training run or, with `compare_baseline`, a supervised-only baseline first and the
two results side by side (`run`), and the printed metrics table (`print_comparison`)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time

from semiearth.config import Config
from semiearth.eval import format_table
from semiearth.train import distributed as D
from semiearth.train.checkpoint import CheckpointError
from semiearth.train.folder import RunFolderError, RunLockedError, lock_run_folder  # noqa: F401 (re-exported)
from semiearth.train.trainer import train

RUN_FILES = ("latest.pth", "best.pth", "results.json", "metrics.jsonl", "comparison.txt")  # a run lives here
RUN_ARTEFACTS = (*RUN_FILES, "results.txt", "purify.jsonl", "config.yaml", "tb", "panels", "supervised", "semi")


def existing_run(out_dir: str) -> str | None:
    """The first file showing that `out_dir` (or its supervised/ or semi/ sub-run) holds a run, or None."""
    for sub in ("", "supervised", "semi"):
        for name in RUN_FILES:
            path = os.path.join(out_dir, sub, name)
            if os.path.exists(path):
                return path
    return None


def prepare_run_folder(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run unless resuming or overwriting; with overwrite,
    delete that run's artefacts (only them: other files in the folder stay)."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: give one")
    found = existing_run(out_dir)
    if found is None or resume:
        return
    if not overwrite:
        raise RunFolderError(
            f"{out_dir} already holds a run ({found}); continue it with --resume, replace it with --overwrite, "
            "or choose another --out"
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name in RUN_ARTEFACTS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
    print(f"[semiearth] --overwrite: removed the previous run in {out_dir}", file=sys.stderr)


# ----------------------------------------------------------------------------- baseline comparison
def run(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """Train cfg and print its final metrics; with compare_baseline, first a supervised-only baseline,
    then print both. A folder that already holds a run needs resume or overwrite (RunFolderError);
    one that another training holds is refused (RunLockedError), whatever the flags."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: give one")
    if resume and not os.path.isdir(cfg.out_dir):  # checked before the lock creates the folder
        raise CheckpointError(f"--resume: there is no run to resume in {cfg.out_dir} (no such folder)")
    lock = lock_run_folder(cfg.out_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        prepare_run_folder(cfg.out_dir, resume, overwrite)
        return _run(cfg, resume)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: Config, resume: bool) -> dict:
    if not cfg.compare_baseline:
        result = train(cfg, resume, lock=False)  # run() holds the folder's lock
        if D.is_main() and not result.get("interrupted"):
            print_comparison(cfg, {run_name(cfg): result}, "results.txt")
        return result
    sup, semi = comparison_configs(cfg)
    results = {}
    for name, c in (("supervised", sup), (run_name(cfg), semi)):
        done = os.path.join(c.out_dir, "results.json")
        if resume and os.path.exists(done):
            with open(done) as f:
                results[name] = json.load(f)
            continue
        t0 = time.perf_counter()
        results[name] = train(c, resume=resume and os.path.exists(os.path.join(c.out_dir, "latest.pth")))
        if results[name].get("interrupted"):
            return results[name]
        results[name]["seconds"] = time.perf_counter() - t0
    if D.is_main():
        print_comparison(cfg, results)
    return {"runs": results}


def comparison_configs(cfg: Config) -> tuple[Config, Config]:
    """The two runs of compare_baseline: supervised only (no unlabelled batch, no VLM-PP) in
    out_dir/supervised, and cfg itself in out_dir/semi."""
    sup = copy.deepcopy(cfg)
    sup.compare_baseline = False
    sup.out_dir = os.path.join(cfg.out_dir, "supervised")
    sup.train.method = "supervised"
    sup.train.method_options = {}
    sup.train.unlabeled_batch_size = 0
    sup.purify.method = "none"
    semi = copy.deepcopy(cfg)
    semi.compare_baseline = False
    semi.out_dir = os.path.join(cfg.out_dir, "semi")
    return sup, semi


def run_name(cfg: Config) -> str:
    """How a run is named in tables: its S4 method, with "+VLM-PP" when purification is on."""
    vlmpp = "+VLM-PP" if cfg.purify.method != "none" and cfg.train.method != "supervised" else ""
    return f"{cfg.train.method}{vlmpp}"


def print_comparison(cfg: Config, results: dict, table_name: str = "comparison.txt") -> None:
    """Print the metrics table of one or more finished runs and where their outputs are; save the table."""
    split = "test" if all("test" in r for r in results.values()) else "val"
    table = format_table({name: r[split] for name, r in results.items()}, cfg.data.class_names)
    print(f"\n[semiearth] {split} split ({cfg.data.name}), IoU per class and means in %:\n{table}\n")
    for name, r in results.items():
        p = r["paths"]
        secs = f" in {r['seconds']:.0f}s" if "seconds" in r else ""
        print(f"[semiearth] {name}{secs}: checkpoint {p['best']}, logs {p['metrics']} (TensorBoard {p['tensorboard']})")
        if os.path.isdir(p["panels"]):
            print(f"[semiearth] {name}: purification records {p['purify']}, panels {p['panels']}")
    with open(os.path.join(cfg.out_dir, table_name), "w") as f:
        f.write(table + "\n")
    print(f"[semiearth] this table: {os.path.join(cfg.out_dir, table_name)}")
