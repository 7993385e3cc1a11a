"""semiearth.lightning: torchgeo's SemanticSegmentationTask trained teacher-student with VLM-PP, and
examples/torchgeo_lightning.py run at toy scale on the CPU (a synthetic LoveDA in torchgeo's layout)."""

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torchgeo_layouts as layouts

pytest.importorskip("torchgeo", reason="the [torchgeo] extra is not installed (pip install -e .[torchgeo])")
pytest.importorskip("lightning", reason="the [torchgeo] extra is not installed (pip install -e .[torchgeo])")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torchgeo_lightning.py"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture
def one_thread():
    """One torch thread: the CPUs of CI are shared, and Lightning's small steps oversubscribe them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_example():
    spec = importlib.util.spec_from_file_location("torchgeo_lightning", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_with_vlmpp_on_the_cpu(tmp_path, capsys, one_thread):
    root = layouts.loveda(str(tmp_path / "loveda"), n_train=2, n_test=1, size=64)
    argv = ["--root", root, "--steps", "2", "--batch", "2", "--backbone", "mobilenet_v2", "--cell", "16"]
    argv += ["--crop", "32", "--fit-images", "4", "--val-every", "2", "--accelerator", "cpu", "--threshold", "0"]
    assert load_example().main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("after 2 steps:"), line
    metrics = ast.literal_eval(line.split(":", 1)[1].strip())  # the dict the example printed
    assert metrics["train_purified_regions"] > 0  # VLM-PP purified the teacher's pseudo-labels
    assert metrics["train_mask_ratio"] > 0 and all(math.isfinite(v) for v in metrics.values())
    assert "val_loss" in metrics


def test_teacher_is_an_eval_mode_ema_of_the_student_and_evaluates(one_thread):
    from semiearth.lightning import TeacherStudentTask

    task = TeacherStudentTask([torch.rand(2, 3, 32, 32)], None, model="unet", backbone="mobilenet_v2", num_classes=3)
    assert "unlabeled" not in task.hparams and "purifier" not in task.hparams
    assert task.hparams["threshold"] == 0.95 and task.hparams["backbone"] == "mobilenet_v2"
    task.train()
    assert task.model.training and not task.teacher.training
    assert not any(p.requires_grad for p in task.teacher.parameters())
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(1.0)
    w_s = next(task.model.parameters())
    w_t = next(task.teacher.parameters()).clone()
    from semiearth.train.ema import ema_update

    ema_update(task.teacher, task.model, 0.5)
    torch.testing.assert_close(next(task.teacher.parameters()), (w_t + w_s) / 2)
    task.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(task(x), task.teacher(x))


def test_bad_arguments_are_one_line_errors():
    from semiearth.lightning import TeacherStudentTask

    with pytest.raises(ValueError, match="threshold 2 must be in") as err:
        TeacherStudentTask([], None, threshold=2, model="unet", backbone="mobilenet_v2", num_classes=3)
    assert "\n" not in str(err.value)
