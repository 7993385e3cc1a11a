"""semiearth-train as a user meets it (issue 11, cases 1, 4, 9, 11, 12, 13): a finished run is never
overwritten by accident, Ctrl-C stops cleanly (130) and twice at once, config mistakes are one-line
errors naming the key, the final metrics are printed, an empty config is a short CPU run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_CLI, cli_args, one_line_error

from semiearth.cli.train import main
from semiearth.config import load_config
from semiearth.data.registry import check_data_config
from semiearth.train.checkpoint import load_checkpoint

TINY = TINY_CLI
args = cli_args


def test_existing_run_is_refused_and_left_intact(tmp_path, capsys):
    out = tmp_path / "R"
    assert main(args(out, "train.iters=4")) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "impervious_surface" in printed  # case 11: the final table is printed
    assert (out / "results.txt").is_file()
    from semiearth.cli.evaluate import main as eval_main  # eval checks data.root before any work too

    assert (
        eval_main(
            [
                "--checkpoint",
                str(out / "best.pth"),
                "--set",
                "data.name=folder",
                "--set",
                "data.root=nope/",
                "--set",
                "data.options={}",
            ]
        )
        == 2
    )
    one_line_error(capsys, "data.root", "nope/", "does not exist")
    before = {n: (out / n).read_bytes() for n in ("latest.pth", "best.pth", "metrics.jsonl", "results.json")}

    assert main(args(out, "train.iters=2")) == 2  # a forgotten --resume
    one_line_error(capsys, str(out), "--resume", "--overwrite")
    assert {n: (out / n).read_bytes() for n in before} == before  # the old run is untouched

    assert main(args(out, "train.iters=6", extra=["--resume"])) == 0
    assert load_checkpoint(str(out / "latest.pth"))["iteration"] == 6
    assert main(args(out, "train.iters=2", extra=["--overwrite"])) == 0
    assert load_checkpoint(str(out / "latest.pth"))["iteration"] == 2
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert max(r["iter"] for r in rows) == 2  # the old run's log went with it


@pytest.mark.parametrize(
    "overrides, config, words",
    [
        (["data.crop_size=-5"], "demo", ["data.crop_size", ">= 1", "-5"]),
        (["eval.stride=0"], "demo", ["eval.stride", ">= 1"]),
        (["train.threshold=1.5"], "demo", ["train.threshold", "<= 1"]),
        (["data.options={size: 40, bogus: 1}"], "demo", ["data.options.bogus", "size"]),
        ([], "loveda", ["data.root", "data/loveda", "does not exist", "semiearth-prepare loveda"]),
        (["data.root="], "folder", ["data.root is not set"]),
        (["data.options={auto_splt: true}"], "folder", ["data.options.auto_splt", "auto_split"]),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, capsys, overrides, config, words):
    argv = ["--config", config, "--out", str(tmp_path / "x")] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 2
    one_line_error(capsys, "config error", *words)
    assert not (tmp_path / "x").exists()  # refused before any work


def test_empty_config_is_a_short_cpu_run(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    cfg = load_config(str(tmp_path / "empty.yaml"))
    demo = load_config("demo")
    check_data_config(cfg.data)  # needs no files
    assert cfg.model.name == "effnet_lite0_fpn" and cfg.data.name == "synthetic"
    assert cfg.data.crop_size == demo.data.crop_size == 64
    assert (cfg.train.lr, cfg.train.head_lr_mult) == (demo.train.lr, demo.train.head_lr_mult)
    assert cfg.train.iters <= 300
    assert (cfg.purify.every, cfg.purify.max_regions) == (demo.purify.every, demo.purify.max_regions)


def wait_for_iterations(out, proc, n, timeout=120):
    deadline = time.time() + timeout
    path = os.path.join(out, "metrics.jsonl")
    while proc.poll() is None and time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            if any(r["split"] == "train" and r["iter"] >= n for r in rows):
                return
        time.sleep(0.02)
    raise AssertionError(f"no iteration {n} logged: {proc.poll()}")


def test_ctrl_c_stops_after_the_step_and_saves(tmp_path):
    out = tmp_path / "R"
    cmd = [sys.executable, "-m", "semiearth.train", *args(out, "train.iters=5000", "train.log_every=1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_iterations(out, proc, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"continue with --resume" in err
    assert 3 <= load_checkpoint(str(out / "latest.pth"))["iteration"] < 5000


def test_second_ctrl_c_exits_at_once(tmp_path, capsys, monkeypatch):
    """Two Ctrl-C during a long step (sent from inside it, as a terminal would): no waiting for its end."""
    import semiearth.train.trainer as T

    step = T.train_step

    def long_step(s, *a):
        if s.iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the first asks to stop after this step
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)  # the second exits at once
            time.sleep(60)
        return step(s, *a)

    monkeypatch.setattr(T, "train_step", long_step)
    out = tmp_path / "R"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    t0 = time.time()
    assert main(args(out, "train.iters=50", "train.ckpt_every=2")) == 130
    assert time.time() - t0 < 30
    one_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "exited at once" in one_line and "latest.pth (continue with --resume)" in one_line
    assert load_checkpoint(str(out / "latest.pth"))["iteration"] == 2  # the last save, intact
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
