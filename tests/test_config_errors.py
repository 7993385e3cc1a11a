"""The typed config (issue 23, item 2): every kind of mistake is one ConfigError line naming the key,
the value, what is allowed and where it came from (the file or the --set); member options are checked
against the chosen classifier / dataset / method when the config is loaded; the ranges the ops check
are the config's; and loading a config imports no member, no torch."""

import json
import subprocess
import sys

import pytest

from semiearth import bounds
from semiearth.config import ConfigError, load_config


def error(overrides, path=None) -> str:
    """The one-line message of the ConfigError that loading raises."""
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def yaml_file(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "run.yaml"
        path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize(
    "overrides, words",
    [
        # unknown key: the key, a near miss, the allowed keys of its section, the --set
        (["train.lrr=1"], ["unknown key 'train.lrr'", "did you mean 'lr'", "allowed keys in train:", "iters",
                           "(from --set train.lrr=1)"]),
        (["bogus=1"], ["unknown key 'bogus'", "allowed keys in the config: data, model, train"]),
        (["data.splits.training=a.txt"], ["unknown key 'data.splits.training'", "labeled, unlabeled, val, test"]),
        # wrong type
        (["train.iters=many"], ["train.iters: expected int, got 'many'", "(from --set train.iters=many)"]),
        (["train.iters=1.5"], ["train.iters: expected int, got 1.5"]),
        (["train.hflip='yes'"], ["train.hflip: expected bool (true/false), got 'yes'"]),
        (["data.mean=0.5"], ["data.mean: expected a list, got 0.5"]),
        (["train.lr=.inf"], ["train.lr: expected a finite float"]),
        (["model.name=resnet"], ["model.name: 'resnet' is not one of [effnet_lite0_fpn, dinov2_dpt, tiny, smp]"]),
        # out of range: the whole allowed interval
        (["train.iters=0"], ["train.iters: must be >= 1, got 0", "(from --set train.iters=0)"]),
        (["purify.tau=1.5"], ["purify.tau: must be > 0 and <= 1, got 1.5"]),
        (["purify.abstain={min_accuracy: 0}"], ["purify.abstain.min_accuracy: must be > 0 and <= 1, got 0"]),
        # options of the chosen classifier / dataset / method
        (["purify.classifier_options={input_sise: 3}"],
         ["unknown key 'purify.classifier_options.input_sise'", "did you mean 'input_size'",
          "(options of purify.method prototype)"]),
        (["purify.method=vlm", "purify.classifier_options={view: boxy}"],
         ["purify.classifier_options.view: 'boxy' is not one of [masked, box]", "(options of purify.method vlm)"]),
        (["purify.method=noisy_oracle"], ["purify.classifier_options.accuracy: required", "noisy_oracle",
                                          "(from --set purify.method=noisy_oracle)"]),
        (["purify.classifier_options={num_classes: 3}"], ["comes from data.num_classes"]),
        (["data.options={sise: 64}"], ["unknown key 'data.options.sise'", "did you mean 'size'",
                                       "(options of dataset synthetic)"]),
        (["data.options={size: 2}"], ["data.options.size: must be >= 8, got 2"]),
        (["train.method=cps", "train.method_options={eval_weights: best}"],
         ["train.method_options.eval_weights: 'best' is not one of [student_a, student_b, mean]",
          "(options of train.method cps)"]),
        (["train.method_options={threshold: 0.3}"], ["unknown key 'train.method_options.threshold'",
                                                     "(options of train.method fixmatch)"]),
        (["train.method=fixmatchh"], ["train.method: unknown method 'fixmatchh'", "supervised, fixmatch"]),
        (["purify.method=magic"], ["purify.method: 'magic' is not one of [none, "]),
        # cross-field: the --set in the section is named
        (["data.ignore_index=0"], ["data.ignore_index", "allow_ignore_in_classes", "(from --set data.ignore_index=0)"]),
        (["eval.mode=slide", "eval.stride=600"], ["eval.stride: 600 > eval.window 512"]),
        (["eval.exclude_classes=[cars]"], ["eval.exclude_classes: unknown class 'cars'", "clutter"]),
        (["train.scale_range=[2, 1]"], ["train.scale_range", "0 < min <= max"]),
        (["data.name=folder"], ["data.num_classes", "dataset folder has no class table", "--set data.name=folder"]),
        (["data.name=nope"], ["data.name: unknown dataset 'nope'", "potsdam"]),
        # a YAML error in a --set value
        (["data.mean=[0.5, 0.5"], ["--set data.mean=[0.5, 0.5", "not valid YAML", "line 1, column"]),
    ],
)  # fmt: skip
def test_each_mistake_is_one_line(overrides, words):
    text = error(overrides)
    for word in words:
        assert word in text, (word, text)


def test_the_file_is_named_when_the_value_came_from_it(yaml_file):
    path = yaml_file("train:\n  iters: 0\n")
    assert error([], path) == f"train.iters: must be >= 1, got 0 (in {path})"
    assert "(from --set train.iters=-1)" in error(["train.iters=-1"], path)  # the --set wins over the file
    path = yaml_file("purify:\n  method: prototype\n  classifier_options: {batch_size: 0}\n")
    assert error([], path).endswith(f"(options of purify.method prototype) (in {path})")
    broken = yaml_file("train:\n  lr: [1, 2\n")
    text = error([], broken)
    assert text.startswith(f"{broken}: invalid YAML at line ") and "\n" not in text


def test_valid_options_are_kept_and_defaults_recorded():
    cfg = load_config(None, ["train.method=cps", "train.method_options={threshold: 0.5}",
                             "purify.classifier_options={temperature: auto, input_size: 64}"])  # fmt: skip
    assert cfg.train.method_options == {"cps_weight": 1.5, "threshold": 0.5, "eval_weights": "student_a"}
    assert cfg.purify.classifier_options == {"temperature": "auto", "input_size": 64}  # the class owns defaults
    assert cfg.data.options["size"] == 128 and cfg.data.options["cache"] is True  # the dataset model's defaults
    assert load_config(None, ["purify=none", "train.lr=5e-6"]).train.lr == 5e-6  # `purify: none`, `5e-6`


def test_the_config_and_the_ops_share_their_ranges():
    """`--set purify.low_thresh=0` used to pass the config and die inside ops.purify_stats."""
    import torch

    from semiearth.ops import purify_stats

    assert "purify.low_thresh: must be > 0 and <= 1, got 0" in error(["purify.low_thresh=0"])
    with pytest.raises(ValueError, match=r"low_thresh must be a number > 0 and <= 1, got 0"):
        purify_stats(torch.zeros(1, 2, 4, 4), low_thresh=0, cell=2, backend="torch")
    cfg = load_config(None, ["purify.low_thresh=1", "purify.cell=1", "purify.radius=0"])
    stats = purify_stats(
        torch.zeros(1, 2, 4, 4), cfg.purify.low_thresh, cfg.purify.radius, cfg.purify.cell, backend="torch"
    )
    assert stats.cell == 1
    assert bounds.LOW_THRESH.field() == {"gt": 0, "le": 1} and bounds.LOW_THRESH.text() == "> 0 and <= 1"


def test_loading_a_config_imports_no_member_and_no_torch():
    code = (
        "import json, sys\n"
        "from semiearth.config import load_config\n"
        "cfg = load_config('demo', ['purify.method=vlm', 'train.method=cps'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "             or m.startswith(('semiearth.purify', 'semiearth.ops', 'semiearth.train')))\n"
        "print(json.dumps({'modules': len(sys.modules), 'bad': bad}))\n"
    )
    before = subprocess.run([sys.executable, "-P", "-c", "import sys; print(len(sys.modules))"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    run = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout)
    print(f"import semiearth.config + load_config('demo'): {result['modules']} modules in sys.modules "
          f"({int(before.stdout)} at interpreter start)")  # fmt: skip
    assert result["bad"] == []
