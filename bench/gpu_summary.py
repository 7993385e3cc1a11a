"""Collect what bench/gpu_check.sh measured into one JSON and print it as tables.

    python bench/gpu_summary.py OUT    # writes OUT/gpu_check.json

Reads OUT/steps.jsonl (exit code and wall time of each step), OUT/gpu_tests.xml (pytest's junit
report), OUT/throughput.json (bench/purify_throughput.py), OUT/train_*/metrics.jsonl (stage times
per training iteration) and OUT/vlm_timing.json. Training figures skip the first logged window
(compilation, cuDNN autotuning, allocator warm-up) and average the rest.
"""

import json
import os
import sys
import xml.etree.ElementTree as ET


def read_jsonl(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def test_counts(path: str) -> dict | None:
    """passed/failed/skipped/errors of a junit XML report, with the failing test ids."""
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": []}
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                counts["failed"].append(f"{case.get('classname')}::{case.get('name')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def training_split(metrics: list) -> dict | None:
    """Seconds per iteration of each stage (and of the VLM-PP sub-stages) and their share of a step."""
    rows = [r for r in metrics if "stage_s" in r]
    steady = rows[1:] or rows
    if not steady:
        return None
    stages = sorted({k for r in steady for k in r["stage_s"]})
    stage_s = {k: sum(r["stage_s"].get(k, 0.0) for r in steady) / len(steady) for k in stages}
    step = sum(v for k, v in stage_s.items() if k != "data")
    purify_keys = sorted({k for r in steady for k in r if k.startswith("purify_") and isinstance(r[k], (int, float))})
    purify = {k[len("purify_") :]: sum(r.get(k, 0.0) for r in steady) / len(steady) for k in purify_keys}
    return {
        "iterations_averaged": sum(1 for _ in steady),
        "step_s": step,
        "stage_s": stage_s,
        "stage_share_of_step": {k: v / step for k, v in stage_s.items() if k != "data"} if step else {},
        "purify_stage_s": purify,
        "purify_outside_stages_s": stage_s.get("purify", 0.0) - sum(purify.values()) if purify else None,
    }


def main(out: str) -> int:
    summary = {
        "steps": read_jsonl(os.path.join(out, "steps.jsonl")),
        "gpu_tests": test_counts(os.path.join(out, "gpu_tests.xml")),
        "throughput": read_json(os.path.join(out, "throughput.json")),
        "vlm_timing": read_json(os.path.join(out, "vlm_timing.json")),
        "training": {},
    }
    for name in ("train_none", "train_vlmpp"):
        split = training_split(read_jsonl(os.path.join(out, name, "metrics.jsonl")))
        if split is not None:
            summary["training"][name] = split
    with open(os.path.join(out, "gpu_check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for step in summary["steps"]:
        print(f"step {step['step']:<12} rc {step['rc']}  {step['seconds']} s")
    if summary["gpu_tests"]:
        t = summary["gpu_tests"]
        print(f"GPU tests: {t['passed']} passed, {t['failures'] + t['errors']} failed, {t['skipped']} skipped")
        for name in t["failed"][:30]:
            print(f"  FAILED {name}")
    for name, split in summary["training"].items():
        share = split["stage_share_of_step"]
        shares = ", ".join(f"{k} {v * 1e3:.1f} ms ({share[k]:.1%})" for k, v in split["stage_s"].items() if k in share)
        data = split["stage_s"].get("data", 0.0) * 1e3
        print(f"{name}: step {split['step_s'] * 1e3:.1f} ms; {shares}; data loading {data:.1f} ms (not in the step)")
        if split["purify_stage_s"]:
            sub = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in split["purify_stage_s"].items())
            print(f"  VLM-PP stages: {sub}; outside the stages {split['purify_outside_stages_s'] * 1e3:.2f} ms")
    print(f"all figures: {os.path.join(out, 'gpu_check.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu_check"))
