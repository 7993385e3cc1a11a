"""Training never loses work and its folder tells the truth (issue 20, items 1, 2, 3, 7): a diverged
run stops before saving the diverged state and names the likely cause; a refused --resume changes
nothing; a resumed run applies and records a changed config, or refuses it naming the key; one
run per folder (a lock, taken over when stale); outputs follow the user's umask."""

import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import TINY_CLI, cli_args, one_line_error

from semiearth.cli.train import main
from semiearth.config import load_config
from semiearth.data.registry import DATASETS, register_dataset
from semiearth.data.synthetic import SyntheticAerial
from semiearth.train.checkpoint import load_checkpoint, save_checkpoint
from semiearth.train.folder import LOCK_NAME

TINY = TINY_CLI
args = cli_args
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_after_the_bar(capsys, *words) -> str:
    """A run that stopped mid-way: its progress bar on stderr, then one line (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert all(line.startswith("fixmatch:") for line in lines[:-1]), lines  # the progress bar
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


def snapshot(folder) -> dict:
    """{relative path: (bytes, mtime_ns)} of every file under `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished 4-iteration run (latest.pth and best.pth at iteration 4), copied by each test."""
    out = tmp_path_factory.mktemp("good") / "R"
    assert main(args(out, "train.iters=4")) == 0
    return out


@pytest.fixture
def run_dir(good_run, tmp_path):
    import shutil

    out = tmp_path / "R"
    shutil.copytree(good_run, out)
    return out


# ----------------------------------------------------------------------------- 1. divergence
def test_diverging_lr_stops_before_any_save_and_names_the_lr(run_dir, capsys):
    capsys.readouterr()
    before = {n: (run_dir / n).read_bytes() for n in ("latest.pth", "best.pth", "config.yaml")}
    # a checkpoint after every step: the first step at lr 1e8 already makes weights of 1e8
    code = main(args(run_dir, "train.iters=12", "train.lr=1.0e+8", "train.ckpt_every=1", extra=["--resume"]))
    assert code == 3
    words = ("training diverged", "train.lr 1e+08", "too high", "latest.pth (iteration 4)", "--resume")
    error_after_the_bar(capsys, *words)
    assert {n: (run_dir / n).read_bytes() for n in before} == before  # config.yaml: what latest.pth ran
    assert load_checkpoint(str(run_dir / "latest.pth"))["iteration"] == 4
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert rows[-1]["split"] == "diverged" and "train.lr" in rows[-1]["error"]


def test_a_nan_loss_is_caught_at_the_logging_step_before_the_save(run_dir, capsys):
    """Without a save every step: the run goes on to NaN, and stops at the first check after it."""
    capsys.readouterr()
    latest = (run_dir / "latest.pth").read_bytes()
    code = main(args(run_dir, "train.iters=40", "train.lr=1.0e+8", "train.ckpt_every=20", extra=["--resume"]))
    assert code == 3
    error_after_the_bar(capsys, "training diverged", "train.lr", "latest.pth (iteration 4) and best.pth are left")
    assert (run_dir / "latest.pth").read_bytes() == latest


def test_a_diverging_new_run_saves_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "R"
    assert main(args(out, "train.iters=6", "train.lr=1.0e+8", "train.ckpt_every=1")) == 3
    error_after_the_bar(capsys, "training diverged", "train.lr 1e+08", "no checkpoint had been saved", "--overwrite")
    assert not (out / "latest.pth").exists() and not (out / "best.pth").exists()


class NanPixels(SyntheticAerial):
    """The synthetic dataset with one labelled image (index 1) made of NaN pixels."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.split == "labeled" and index == 1:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


def test_nan_pixels_are_named_as_the_cause_not_the_lr(tmp_path, capsys):
    register_dataset("nan_pixels", NanPixels)
    try:
        assert main(args(tmp_path / "R", "data.name=nan_pixels", "train.iters=8", "train.ckpt_every=2")) == 3
    finally:
        DATASETS.pop("nan_pixels")
    err = error_after_the_bar(
        capsys, "training diverged", "the loss is nan", "synthetic_labeled_00001", "NaN/inf pixel"
    )
    assert "train.lr" not in err


def test_a_zero_std_is_named_as_the_cause(tmp_path):
    """data.std with a zero (refused when the config is read; here set behind the config's back)."""
    from semiearth.train import train
    from semiearth.train.divergence import TrainingDiverged

    cfg = load_config("demo", [*TINY, "train.iters=4", f"out_dir={tmp_path / 'R'}"])
    cfg.data.std = [0.0, 0.0, 0.0]
    with pytest.raises(TrainingDiverged, match=r"likely cause: data\.std \[0\.0, 0\.0, 0\.0\] holds a zero"):
        train(cfg)
    assert not (tmp_path / "R" / "latest.pth").exists()


class FakeWindow:
    def __init__(self, steps):
        self.steps = steps

    def read(self):
        pass


def test_fp16_overflow_skips_stop_the_run_after_20_in_a_row():
    """Under fp16's grad scaler a skipped step is normal; OVERFLOW_SKIPS (20) in a row is divergence."""
    from semiearth.train.divergence import OVERFLOW_SKIPS, DivergenceGuard, TrainingDiverged

    assert OVERFLOW_SKIPS == 20
    cfg = load_config(None, TINY)
    guard = DivergenceGuard(cfg, torch.device("cpu"), scaled=True)
    steps = [{"iter": i, "loss": float("inf"), "overflow": 1.0} for i in range(1, 20)]  # 19 skipped
    steps.append({"iter": 20, "loss": 1.0, "overflow": 0.0})
    guard.check(FakeWindow(steps))
    steps = [{"iter": i, "loss": float("nan"), "overflow": 1.0} for i in range(21, 41)]
    with pytest.raises(TrainingDiverged, match="20 fp16 gradient overflows in a row"):
        guard.check(FakeWindow(steps))
    plain = DivergenceGuard(cfg, torch.device("cpu"), scaled=False)  # without the scaler: at once
    with pytest.raises(TrainingDiverged, match="the gradient norm is inf at iteration 3"):
        plain.check(FakeWindow([{"iter": 3, "loss": 1.0, "grad_norm": float("inf")}]))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # skipped steps
def test_fp16_overflows_stop_a_training_at_the_20th_in_a_row(tmp_path, monkeypatch):
    """The trainer's side of the fp16 rule, on the CPU: a grad scaler (CPU) whose every step overflows."""
    from semiearth.train import train
    from semiearth.train import trainer as T
    from semiearth.train.divergence import TrainingDiverged
    from semiearth.train.methods.base import Method

    build, backward = T.build_method, Method.backward

    def scaled_method(*a):
        method = build(*a)
        method.scaler = torch.amp.GradScaler("cpu")  # what train.amp: fp16 gives on CUDA
        return method

    monkeypatch.setattr(T, "build_method", scaled_method)
    monkeypatch.setattr(Method, "backward", lambda self, loss: backward(self, loss * float("inf")))
    out = tmp_path / "R"
    cfg = load_config("demo", [*TINY, "train.iters=30", "train.log_every=25", "train.ckpt_every=10"])
    cfg.out_dir = str(out)
    with pytest.raises(
        TrainingDiverged, match=r"20 fp16 gradient overflows in a row \(iterations 1-20.*latest\.pth \(iteration 10\)"
    ):
        train(cfg)
    assert load_checkpoint(str(out / "latest.pth"))["iteration"] == 10  # 10 skips were no divergence yet


# ----------------------------------------------------------------------------- 2. resume
def test_a_refused_resume_changes_nothing_and_names_the_key(run_dir, capsys):
    capsys.readouterr()
    before = snapshot(run_dir)
    assert main(args(run_dir, "train.iters=8", "data.options={size: 80}", extra=["--resume"])) == 3
    one_line_error(capsys, "data.options", "a resumed run trains on the data it started with")
    assert snapshot(run_dir) == before  # bytes and mtimes of every file; no lock file left

    assert main(args(run_dir, "train.iters=8", "model.decoder_channels=4", extra=["--resume"])) == 3
    err = one_line_error(capsys, "model.decoder_channels 8, this run is 4", "--set model.decoder_channels=8")
    assert "state_dict" not in err and "size mismatch" not in err
    assert snapshot(run_dir) == before

    assert main(args(run_dir, "train.iters=2", extra=["--resume"])) == 3  # below the checkpoint's iteration
    one_line_error(capsys, "train.iters 2", "train.iters >= 4")
    assert snapshot(run_dir) == before


def test_resume_with_a_new_lr_trains_at_it_and_records_it(run_dir, capsys):
    from semiearth.train.methods.base import poly_lambda

    capsys.readouterr()
    assert main(args(run_dir, "train.iters=8", "train.lr=0.02", extra=["--resume"])) == 0
    out = capsys.readouterr().out
    assert "train.lr 0.01 -> 0.02" in out and "train.iters 4 -> 8" in out  # the log names the changed keys
    cfg = load_config("demo", [*TINY, "train.iters=8", "train.lr=0.02"])
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    resumed = [r for r in rows if r["split"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["iter"] == 4 and resumed[0]["changed"]["train.lr"] == [0.01, 0.02]
    train_rows = {r["iter"]: r["lr"] for r in rows if r["split"] == "train" and r["iter"] > 4}
    assert set(train_rows) == {6, 8}
    for it, lr in train_rows.items():  # the new base lr under the new schedule (the lr of the next step)
        assert lr == pytest.approx(0.02 * poly_lambda(cfg)(it), rel=1e-9), (it, lr)
    ckpt = load_checkpoint(str(run_dir / "latest.pth"))
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.02, 0.02 * cfg.train.head_lr_mult])
    assert ckpt["config"]["train"]["lr"] == 0.02 and ckpt["iteration"] == 8
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["train"]["lr"] == 0.02 and recorded["train"]["iters"] == 8


# ----------------------------------------------------------------------------- 3. one run per folder
HOLDER = """
import sys, time
from semiearth.train.folder import lock_run_folder
lock = lock_run_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_locked_folder_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(run_dir, capsys):
    capsys.readouterr()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run_dir)
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main(args(run_dir, "train.iters=8", extra=extra)) == 2
            one_line_error(capsys, "in use by another training", f"pid {holder.pid} on host", "started")
        assert snapshot(run_dir) == before  # the holder's lock file included
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays, its flock goes
        holder.wait(timeout=30)
    assert (run_dir / LOCK_NAME).is_file()
    assert main(args(run_dir, "train.iters=6", extra=["--resume"])) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of pid {holder.pid}" in err
    assert not (run_dir / LOCK_NAME).exists()  # a run that ends removes its lock file
    assert load_checkpoint(str(run_dir / "latest.pth"))["iteration"] == 6


def test_the_lock_is_held_while_training(tmp_path, capsys, monkeypatch):
    """Seen from inside a step: the folder's lock file names this process and a second start is refused."""
    import semiearth.train.trainer as T

    step, seen = T.train_step, []

    def spying_step(s, *a):
        if s.iteration == 1 and not seen:
            seen.append((tmp_path / "R" / LOCK_NAME).read_text())
            seen.append(main(args(tmp_path / "R", "train.iters=2", extra=["--overwrite"])))
        return step(s, *a)

    monkeypatch.setattr(T, "train_step", spying_step)
    assert main(args(tmp_path / "R", "train.iters=2")) == 0
    assert json.loads(seen[0])["pid"] == os.getpid() and seen[1] == 2
    assert "in use by another training" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 7. permissions
def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "R"
        assert main(args(out, "train.iters=2")) == 0
        for name in ("latest.pth", "best.pth", "config.yaml", "metrics.jsonl", "results.json"):
            assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o644, name
        for folder in (out, out / "tb"):
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755, folder
        os.umask(0o002)
        save_checkpoint(str(tmp_path / "g" / "x.pth"), {"w": torch.zeros(2)})
        assert stat.S_IMODE(os.stat(tmp_path / "g" / "x.pth").st_mode) == 0o664
        assert stat.S_IMODE(os.stat(tmp_path / "g").st_mode) == 0o775
    finally:
        os.umask(old)
