"""bench/demo_ablation.py end to end at a toy scale: methods x arms x 1 seed, 2 iterations each."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.filterwarnings("ignore")
TOY = [
    "data.options={size: 40, labeled: 4, unlabeled: 8, val: 2, test: 2, seed: 0}",
    "data.crop_size=32",
    "model.name=tiny",
    "model.pretrained=false",
    "model.decoder_channels=8",
    "train.iters=2",
    "train.batch_size=2",
    "train.unlabeled_batch_size=2",
    "train.eval_every=1",
    "train.panel_every=0",
    "purify.every=1",
    "purify.max_regions=2",
    "purify.classifier_options={input_size: 32}",
]


def load_ablation():
    spec = importlib.util.spec_from_file_location("demo_ablation", os.path.join(ROOT, "bench", "demo_ablation.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ablation_runs_every_arm_and_summarises(tmp_path):
    mod = load_ablation()
    out, js, png = tmp_path / "runs", tmp_path / "a.json", tmp_path / "a.png"
    argv = ["--seeds", "0", "--methods", "supervised", "fixmatch", "mean_teacher", "--arms", "none", "oracle", "noisy"]
    argv += ["--out", str(out), "--json", str(js), "--plot", str(png), "--without", "car", "--set", *TOY]
    assert mod.main(argv) == 0
    summary = json.loads(js.read_text())["summary"]
    expected = ["supervised", "fixmatch", "fixmatch+oracle", "fixmatch+noisy"]
    expected += ["mean_teacher", "mean_teacher+oracle", "mean_teacher+noisy"]
    assert list(summary) == expected and all(0 <= s["mean"] <= 100 and s["n"] == 1 for s in summary.values())
    assert summary["fixmatch+oracle"]["vs"]["baseline"] == "fixmatch"
    assert summary["mean_teacher"]["vs"]["baseline"] == "supervised" and "vs" not in summary["supervised"]
    assert png.stat().st_size > 0
    sup = out / "supervised" / "seed0" / "purify.jsonl"
    assert not sup.exists() or sup.stat().st_size == 0  # supervised: no VLM-PP
    assert os.path.getsize(out / "fixmatch+noisy" / "seed0" / "purify.jsonl") > 0


def test_ablation_resume_reads_finished_runs_back(tmp_path, capsys):
    mod = load_ablation()
    out, js = tmp_path / "runs", tmp_path / "a.json"
    common = ["--seeds", "0", "--methods", "fixmatch", "--arms", "none", "--out", str(out), "--json", str(js)]
    common += ["--set", *TOY]
    assert mod.main(common) == 0
    first = json.loads(js.read_text())["runs"]["fixmatch"]["0"]
    with pytest.raises(Exception, match="already holds a run"):
        mod.main(common)  # neither --resume nor --overwrite
    assert mod.main([*common, "--resume"]) == 0
    assert "read back" in capsys.readouterr().out
    again = json.loads(js.read_text())["runs"]["fixmatch"]["0"]
    assert again["test_miou"] == first["test_miou"] and again["val"] == first["val"] and again["seconds"] is None


def test_ablation_seed0_runs_are_make_demo_runs():
    """The supervised and fixmatch+prototype runs at seed 0 train exactly make demo's two runs."""
    from semiearth.config import config_to_dict, load_config
    from semiearth.train.runs import comparison_configs

    mod = load_ablation()
    demo = comparison_configs(load_config(mod.DEMO_CONFIG, []))
    for name, ref in zip(("supervised", "fixmatch+prototype"), demo, strict=True):
        cfg = load_config(mod.DEMO_CONFIG, mod.arm_overrides(name, 0, ref.out_dir, []))
        assert used(config_to_dict(cfg)) == used(config_to_dict(ref)), name


def used(d: dict) -> dict:
    return {**d, "purify": {"method": "none"}} if d["purify"]["method"] == "none" else d
