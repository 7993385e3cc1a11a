"""Checkpoint integrity (issue 11, cases 2, 3, 10): damaged tensor bytes, NaN weights, empty and foreign
files are one-line errors that never advise weights_only=False; an orphan temp file of a save killed
with SIGKILL is removed at the next start."""

import os
import signal
import struct
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from helpers import TINY_RUN

from semiearth.config import load_config
from semiearth.train import train
from semiearth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

TINY = [*TINY_RUN, "train.iters=4", "train.ckpt_every=0", "train.panel_every=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(load_config(None, [*TINY, f"out_dir={out}"]))
    return out


def data_entry_span(path, at_least: int) -> tuple[int, int]:
    """(offset, size) in the file of the largest stored tensor record `archive/data/N` of a torch zip."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size >= at_least, info
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "weights_only" not in text, text
    return text


def test_damaged_tensor_bytes_are_an_error_naming_the_tensor(run_dir, tmp_path, capsys):
    from semiearth.cli.evaluate import main as eval_main

    bad = tmp_path / "bad.pth"
    bad.write_bytes((run_dir / "best.pth").read_bytes())
    start, size = data_entry_span(bad, 64)
    with open(bad, "r+b") as f:  # overwrite bytes inside the tensor data (not the zip header)
        f.seek(start + size // 4)
        f.write(os.urandom(min(4000, size // 2)))
    with pytest.raises(CheckpointError, match=r"corrupt: 1 tensor\(s\) do not match the sha256.*e\.g\. \w+") as err:
        load_checkpoint(str(bad))
    one_line(err)
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(bad), "--split", "test"]) == 2
    assert "do not match the sha256" in capsys.readouterr().err
    assert eval_main(["--checkpoint", str(run_dir / "best.pth"), "--split", "test"]) == 0


def test_nan_weights_are_refused_naming_the_tensor(run_dir, tmp_path):
    state = load_checkpoint(str(run_dir / "latest.pth"))
    name = next(k for k, v in state["weights"]["student"].items() if v.is_floating_point())
    state["weights"]["student"][name].view(-1)[0] = float("nan")
    save_checkpoint(str(tmp_path / "nan.pth"), {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError, match=rf"tensor weights\.student\.{name} holds 1 NaN/inf") as err:
        load_checkpoint(str(tmp_path / "nan.pth"))
    one_line(err)


def test_empty_and_foreign_files_give_a_reason_without_unsafe_advice(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)") as err:
        load_checkpoint(str(empty))
    one_line(err)
    foreign = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), foreign)  # a pickled module: refused by the safe loader
    with pytest.raises(CheckpointError, match=r"corrupt or not a SemiEarth checkpoint \(.+\)") as err:
        load_checkpoint(str(foreign))
    one_line(err)
    truncated = tmp_path / "trunc.pth"
    save_checkpoint(str(truncated), {"w": torch.ones(3)})
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"corrupt or not a SemiEarth checkpoint \(.+\)") as err:
        load_checkpoint(str(truncated))
    one_line(err)


SAVER = """
import sys, torch
from semiearth.train.checkpoint import save_checkpoint
state = {"w": torch.randn(8_000_000)}
while True:
    save_checkpoint(sys.argv[1], state)
"""


def test_sigkill_during_save_leaves_latest_intact_and_the_orphan_is_removed(tmp_path, capsys):
    from semiearth.cli.train import main

    out = tmp_path / "run"
    save_checkpoint(str(out / "latest.pth"), {"w": torch.zeros(8_000_000)})
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(out / "latest.pth")])
    deadline = time.time() + 60
    while not list(out.glob(".tmp-*.pth")) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    orphans = list(out.glob(".tmp-*.pth"))
    assert orphans, "the saver was not killed during a save"
    assert load_checkpoint(str(out / "latest.pth"))["w"].shape == (8_000_000,)  # the old or the new one, whole

    # the next start removes the orphan (here a run that trains into the folder with --overwrite)
    args = ["--config", "demo", "--out", str(out), "--set", "compare_baseline=false"]
    assert main([*args, *[a for o in TINY for a in ("--set", o)], "--overwrite"]) == 0
    assert not list(out.glob(".tmp-*.pth"))
    assert "left by an interrupted save" in capsys.readouterr().err
