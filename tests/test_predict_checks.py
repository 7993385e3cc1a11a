"""semiearth-predict and semiearth-eval arguments (issue 11, cases 5, 8, 13): bad windows, batch sizes and
output paths are one-line errors before any work; a 16-bit image is refused at the 8-bit scale and
read right with --value-scale; --weights teacher|student in both tools."""

import numpy as np
import pytest
import torch
from helpers import save_tiny_checkpoint
from PIL import Image

from semiearth.cli.evaluate import parse_args as eval_args
from semiearth.cli.predict import PredictError, load_model, main, window_and_stride


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "c.pth"
    student, teacher = save_tiny_checkpoint(path)
    return path, student, teacher


def run(capsys, *argv):
    rc = main(["--no-progress", *argv])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--window", "-3"], "--window must be a positive number of pixels, got -3"),
        (["--window", "0"], "--window must be a positive number of pixels, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--overlap", "0.99"], "--overlap must be in [0, 0.9]"),
        (["--value-scale", "0"], "--value-scale must be > 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, ckpt, extra, words):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    rc, err = run(
        capsys, "--checkpoint", str(ckpt[0]), "--input", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), *extra
    )
    assert rc == 2 and words in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_is_refused(tmp_path, capsys, ckpt):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    rc, err = run(
        capsys, "--checkpoint", str(ckpt[0]), "--input", str(tmp_path / "a.png"), "--out", str(tmp_path / "file")
    )
    assert rc == 2 and "--out" in err and "is a file" in err and "\n" not in err


def test_window_below_the_model_multiple_and_the_stride_of_the_rounded_window():
    with pytest.raises(PredictError, match="smaller than this model's input multiple 32"):
        window_and_stride(3, 0.25, multiple=32)
    assert window_and_stride(100, 0.25, multiple=32) == (96, 72)  # the stride follows the window used
    assert window_and_stride(512, 0.0, multiple=14) == (504, 504)


def test_16bit_png_is_refused_at_the_8bit_scale_and_read_with_value_scale(tmp_path, capsys, ckpt, monkeypatch):
    import semiearth.cli.predict as P

    raw = (np.arange(48 * 40).reshape(48, 40) % 4096).astype(np.uint16)  # 12-bit values in a 16-bit PNG
    Image.fromarray(raw).save(tmp_path / "deep.png")
    args = ["--checkpoint", str(ckpt[0]), "--input", str(tmp_path / "deep.png"), "--out", str(tmp_path / "o")]
    rc, err = run(capsys, *args)
    assert rc == 1 and "deep.png" in err and "exceed data.value_scale=255" in err and "--value-scale" in err
    seen = []
    monkeypatch.setattr(
        P, "sliding_predict", lambda model, x, *a, **k: seen.append(x) or np.zeros(x.shape[1:], np.uint8)
    )
    rc, _ = run(capsys, *args, "--value-scale", "4095")
    assert rc == 0 and (tmp_path / "o" / "deep.png").is_file()
    cfg = load_model(str(ckpt[0]))[1]
    rgb = (seen[0] * torch.tensor(cfg.data.std).view(3, 1, 1)) + torch.tensor(cfg.data.mean).view(3, 1, 1)
    torch.testing.assert_close(rgb[0], torch.from_numpy(raw.astype(np.float32) / 4095), atol=1e-5, rtol=0)


def test_weights_have_one_name_in_eval_and_predict(ckpt):
    path, student, teacher = ckpt
    for which, ref in (("teacher", teacher), ("student", student)):
        model, _ = load_model(str(path), which)
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
        assert eval_args(["--checkpoint", str(path), "--weights", which]).weights == which
    default, _ = load_model(str(path))  # the method's own choice: FixMatch's EMA teacher
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in default.state_dict().items())
    from semiearth.cli.evaluate import main as eval_main

    for old in ("ema", "model", "auto"):  # names a checkpoint does not offer: one line naming those it does
        assert eval_main(["--checkpoint", str(path), "--weights", old]) == 2
        assert main(["--checkpoint", str(path), "--input", "x", "--out", "y", "--weights", old]) != 0
