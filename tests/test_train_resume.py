"""SIGTERM mid-run + --resume ends with exactly the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from semiearth.train.checkpoint import load_checkpoint

ARGS = [
    "data.crop_size=32",
    "data.options={size: 40, labeled: 4, unlabeled: 16, val: 2, test: 2}",
    "model.name=tiny",
    "model.pretrained=false",
    "model.decoder_channels=8",
    "train.iters=80",
    "train.batch_size=2",
    "train.unlabeled_batch_size=2",
    "train.lr=0.01",
    "train.log_every=1",
    "train.ckpt_every=0",
    "train.eval_every=0",
    "train.panel_every=0",
    "train.threshold=0.6",
    "train.deterministic=true",
    "train.threads=1",
    "purify=none",
]


def command(out, *extra):
    cmd = [sys.executable, "-m", "semiearth.train", "--config", "demo", "--set", "compare_baseline=false"]
    for a in [*ARGS, f"out_dir={out}"]:
        cmd += ["--set", a]
    return cmd + list(extra)


def iterations_logged(out) -> int:
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return max([r["iter"] for r in rows if r["split"] == "train"], default=0)


def test_sigterm_then_resume_matches_uninterrupted(tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    proc = subprocess.Popen(command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while iterations_logged(cut) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    stopped = load_checkpoint(os.path.join(cut, "latest.pth"))["iteration"]
    assert 10 <= stopped < 80
    assert b"--resume" in err

    resumed = subprocess.run(command(cut, "--resume"), capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    uninterrupted = subprocess.run(command(full), capture_output=True, timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr.decode()[-2000:]

    a = load_checkpoint(os.path.join(full, "latest.pth"))
    b = load_checkpoint(os.path.join(cut, "latest.pth"))
    assert a["iteration"] == b["iteration"] == 80
    for key in ("student", "teacher"):
        for name, tensor in a["weights"][key].items():
            assert torch.equal(tensor, b["weights"][key][name]), f"{key}.{name} differs"
