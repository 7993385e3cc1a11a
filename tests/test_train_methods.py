"""The method seam: FixMatch unchanged by it, every method trains with and without VLM-PP, resumes
exactly, names itself in its checkpoint and refuses another method's."""

import os
import platform
import subprocess
import sys

import pytest
import reference_run
import torch
from helpers import TINY_RUN

from semiearth.config import ConfigError, load_config
from semiearth.train.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound).*")
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "fixmatch_reference.pt")
METHODS = ("supervised", "fixmatch", "mean_teacher", "unimatch_v2", "cps")
ORACLE = ["purify.method=oracle", "purify.every=1", "purify.max_regions=4"]
QUICK = [*TINY_RUN, "train.iters=2", "train.eval_every=0", "train.ckpt_every=0", "train.panel_every=0"]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the reference weights pin x86-64 AVX2 numerics")
def test_fixmatch_weights_are_bit_identical_to_the_pre_seam_trainer(tmp_path):
    """tests/data/fixmatch_reference.pt: final weights of 6-iteration runs with and without VLM-PP,
    recorded by tests/reference_run.py with the trainer of commit e9e60fa (FixMatch-EMA wired in),
    on the CPU with numerics pinned to AVX2 and one thread (so any x86-64 CPU reproduces them)."""
    out = tmp_path / "weights.pt"
    env = {**os.environ, **reference_run.PINNED_ENV}
    env.pop("TRITON_INTERPRET", None)
    script = os.path.join(os.path.dirname(__file__), "reference_run.py")
    proc = subprocess.run([sys.executable, "-P", script, str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ref = torch.load(REFERENCE, weights_only=True)["weights"]
    got = torch.load(out, weights_only=True)["weights"]
    for case in ("none", "oracle"):
        for net in ("student", "teacher"):
            for name, expected in ref[case][net].items():
                diff = (got[case][net][name].float() - expected.float()).abs().max()
                assert torch.equal(got[case][net][name], expected), f"{case} {net}.{name}: max |diff| {diff}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("purify", ["none", "oracle"])
def test_every_method_trains_with_and_without_vlmpp(tmp_path, method, purify):
    from semiearth.train import train

    extra = ORACLE if purify == "oracle" else []
    cfg = load_config(None, [*QUICK, f"train.method={method}", *extra, f"out_dir={tmp_path}"])
    result = train(cfg)
    assert not result["interrupted"] and 0 <= result["test"]["mIoU"] <= 1
    ckpt = load_checkpoint(str(tmp_path / "latest.pth"))
    assert ckpt["method"] == method and ckpt["default_weights"] in ckpt["weights"] or ckpt["ensembles"]
    purified = (tmp_path / "purify.jsonl").read_text().strip()
    assert bool(purified) == (purify == "oracle" and method != "supervised")


def _stop_after(monkeypatch, iteration: int):
    """Make the loop stop (as on SIGTERM) once `iteration` steps are done."""
    import signal

    from semiearth.train import trainer as T

    step = T.train_step

    def stopping_step(s, *args):
        out = step(s, *args)
        if s.iteration + 1 >= iteration:
            s.stop_signal = signal.SIGTERM
        return out

    monkeypatch.setattr(T, "train_step", stopping_step)


@pytest.mark.parametrize("method", METHODS)
def test_resume_is_bit_identical(tmp_path, monkeypatch, method):
    from semiearth.train import train

    common = [*QUICK, "train.iters=5", "train.deterministic=true", "train.threads=1", "train.grad_clip=0.5"]
    common += [f"train.method={method}", *ORACLE]
    full = train(load_config(None, [*common, f"out_dir={tmp_path / 'full'}"]))
    assert not full["interrupted"]
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        cut = train(load_config(None, [*common, f"out_dir={tmp_path / 'cut'}"]))
    assert cut["interrupted"] and cut["iteration"] == 2
    train(load_config(None, [*common, f"out_dir={tmp_path / 'cut'}"]), resume=True)
    a = load_checkpoint(str(tmp_path / "full" / "latest.pth"))
    b = load_checkpoint(str(tmp_path / "cut" / "latest.pth"))
    assert a["iteration"] == b["iteration"] == 5
    for net, weights in a["weights"].items():
        for name, tensor in weights.items():
            assert torch.equal(tensor, b["weights"][net][name]), f"{net}.{name} differs after resume"


def test_a_checkpoint_of_another_method_is_refused_at_resume(tmp_path):
    from semiearth.train import train

    train(load_config(None, [*QUICK, "train.method=cps", f"out_dir={tmp_path}"]))
    config_before = (tmp_path / "config.yaml").read_bytes()
    with pytest.raises(CheckpointError, match="trained with train.method cps, this run is fixmatch"):
        train(load_config(None, [*QUICK, "train.method=fixmatch", f"out_dir={tmp_path}"]), resume=True)
    assert (tmp_path / "config.yaml").read_bytes() == config_before  # a refused --resume changes nothing


def test_method_options_are_typed_and_recorded():
    cfg = load_config(None, [*QUICK, "train.method=mean_teacher", "train.method_options={rampup_iters: 5}"])
    assert cfg.train.method_options == {"consistency": 10.0, "rampup_iters": 5, "loss": "mse"}
    with pytest.raises(ConfigError, match="unknown key 'train.method_options.threshold'"):
        load_config(None, [*QUICK, "train.method=mean_teacher", "train.method_options={threshold: 0.5}"])
    with pytest.raises(ConfigError, match="train.method_options.eval_weights"):
        load_config(None, [*QUICK, "train.method=cps", "train.method_options={eval_weights: teacher}"])
    with pytest.raises(ConfigError, match="unknown method 'fixmatchh'"):
        load_config(None, [*QUICK, "train.method=fixmatchh"])
    with pytest.raises(ConfigError, match="unlabeled_batch_size >= 1"):
        load_config(None, [*QUICK, "train.unlabeled_batch_size=0"])
    sup = load_config(None, [*QUICK, "train.method=supervised", "purify.method=prototype"])
    assert sup.train.unlabeled_batch_size == 0 and sup.purify.method == "none"  # what runs is recorded


def test_cps_evaluates_a_named_student_or_their_mean(tmp_path):
    from semiearth.cli.evaluate import main as eval_main
    from semiearth.train import train

    cfg = load_config(
        None, [*QUICK, "train.method=cps", "train.method_options={eval_weights: mean}", f"out_dir={tmp_path}"]
    )
    train(cfg)
    ckpt = load_checkpoint(str(tmp_path / "best.pth"))
    assert set(ckpt["weights"]) == {"student_a", "student_b"} and ckpt["default_weights"] == "mean"
    assert not torch.equal(
        ckpt["weights"]["student_a"]["decoder.2.weight"], ckpt["weights"]["student_b"]["decoder.2.weight"]
    )
    for weights in ("student_a", "student_b", "mean"):
        assert eval_main(["--checkpoint", str(tmp_path / "best.pth"), "--split", "test", "--weights", weights]) == 0
    assert eval_main(["--checkpoint", str(tmp_path / "best.pth"), "--weights", "teacher"]) == 2


def test_pseudo_labels_carry_purified_probabilities():
    """Hard-label and soft-target methods consume the same purified result: prob's argmax/max are
    label/conf where VLM-PP ran, and the teacher's softmax without it."""
    from semiearth.purify import OracleClassifier, VLMPurifier
    from semiearth.train.purify_hook import pseudo_labels

    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 4, (2, 32, 32), generator=g)
    logits = torch.randn(2, 4, 32, 32, generator=g)
    images = torch.randn(2, 3, 32, 32, generator=g)
    purifier = VLMPurifier(OracleClassifier(4), 4, cell=8, max_regions=8)
    p = pseudo_labels(purifier, images, logits, gt=gt)
    assert p.output.num_regions > 0 and not torch.equal(p.label, p.teacher_label)
    assert torch.equal(p.prob.argmax(1), p.label)
    torch.testing.assert_close(p.prob.amax(1), p.conf, rtol=1e-5, atol=1e-6)
    plain = pseudo_labels(None, images, logits)
    torch.testing.assert_close(plain.prob, logits.softmax(1))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_in_bf16_with_gradient_clipping(tmp_path, method):
    """train.amp bf16 (autocast on the CPU here, on CUDA on a GPU) and train.grad_clip, with VLM-PP."""
    from semiearth.train import train

    cfg = load_config(None, [*QUICK, f"train.method={method}", *ORACLE, "train.amp=bf16", "train.grad_clip=0.1"])
    cfg.out_dir = str(tmp_path)
    result = train(cfg)
    assert not result["interrupted"]
    weights = load_checkpoint(str(tmp_path / "latest.pth"))["weights"]
    assert all(t.dtype == torch.float32 for w in weights.values() for t in w.values() if t.is_floating_point())


@pytest.mark.parametrize("method", METHODS)
def test_semiearth_train_set_train_method_on_the_demo_config(tmp_path, method):
    """`semiearth-train --config demo --set train.method=M`, with VLM-PP (the demo's
    prototype classifier) and without, at a toy scale."""
    from semiearth.cli.train import main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    toy = [o for o in QUICK if not o.startswith("purify")] + ["compare_baseline=false", f"train.method={method}"]
    toy += ["purify.classifier_options={input_size: 32}", "purify.max_regions=2", "purify.every=1"]
    for purify in ("prototype", "none"):
        argv = ["--config", os.path.join(root, "semiearth", "configs", "demo.yaml"), "--out", str(tmp_path / purify)]
        for o in [*toy, f"purify.method={purify}"]:
            argv += ["--set", o]
        assert main(argv) == 0
        assert load_checkpoint(str(tmp_path / purify / "latest.pth"))["method"] == method
