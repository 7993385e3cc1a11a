"""Abstention in training (purify.abstain) and the live break-even monitor (purify.monitor_every),
issue 21 items 1-2, on the tiny synthetic run of tests/helpers.py."""

import json

import pytest
import torch
from helpers import TINY_RUN

from semiearth.config import ConfigError, load_config

pytestmark = pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound|ground truth).*")

RUN = [
    *TINY_RUN,
    "train.method=fixmatch",
    "train.iters=4",
    "train.eval_every=0",
    "train.ckpt_every=0",
    "train.panel_every=0",
    "purify.every=1",
    "purify.max_regions=4",
    "purify.cell=8",
    "purify.low_thresh=0.99",  # the untrained tiny teacher: every cell is uncertain, so there are regions
    "purify.abstain={}",
    "purify.calibrate_every=2",
    "purify.monitor_every=1",
    "purify.monitor_images=4",
]


def rows(path, split):
    return [r for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def run(tmp_path, monkeypatch, overrides):
    """Train; returns (result, [(purified label == teacher label, relabelled tally) per purified call])."""
    from semiearth.train import train
    from semiearth.train.methods import base

    seen = []
    inner = base.pseudo_labels

    def recording(purifier, images_w, logits_w, ignore=None, gt=None):
        out = inner(purifier, images_w, logits_w, ignore, gt)
        if purifier is not None:
            seen.append((torch.equal(out.label, out.teacher_label), int(out.output.tallies[0])))
        return out

    monkeypatch.setattr(base, "pseudo_labels", recording)
    cfg = load_config(None, [*RUN, *overrides, f"out_dir={tmp_path}"])
    result = train(cfg)
    assert not result["interrupted"]
    return result, seen


def test_always_wrong_classifier_is_abstained_from_everywhere_and_warned_about(tmp_path, monkeypatch, capsys):
    result, seen = run(
        tmp_path, monkeypatch, ["purify.method=noisy_oracle", "purify.classifier_options={accuracy: 0.0}"]
    )
    out = capsys.readouterr().out
    # calibration before training (iter 0) and at iter 2 (calibrate_every), not at the last iteration
    cal = rows(tmp_path, "calibration")
    assert [r["iter"] for r in cal] == [0, 2]
    for r in cal:
        assert r["regions"] > 0 and r["kept_share"] == 0.0 and r["kept"] == 0
        assert r["threshold"] is None  # inf: abstain everywhere (JSON null)
        assert r["temperature"] > 0 and r["min_accuracy"] == 0.65 and r["accuracy"] < 0.65
    assert "[semiearth] abstention calibrated at iter 0" in out and "keeps 0.0% of regions" in out
    # the run's pseudo-labels are the teacher's, exactly, at every purified step
    assert len(seen) == 4 and seen[0][1] >= 0
    assert all(same and relabelled == 0 for same, relabelled in seen), seen
    assert all(r["relabelled"] == 0 for r in rows(tmp_path, "train"))
    # the monitor: every iteration, classifier vs teacher, no change to the pseudo-labels
    mon = rows(tmp_path, "monitor")
    assert [r["iter"] for r in mon] == [1, 2, 3, 4]
    for r in mon:
        assert r["regions"] > 0 and r["kept_share"] == 0.0 and r["relabelled"] == 0
        assert r["classifier_accuracy"] < r["teacher_accuracy"]
        assert r["miou_change"] == 0 and r["precision_change"] == 0 and r["coverage_change"] == 0
        assert {"teacher_miou", "purified_miou", "teacher_precision", "purified_coverage"} <= set(r)
    assert [r["below_teacher_streak"] for r in mon] == [1, 2, 3, 4]
    warnings = [line for line in out.splitlines() if "WARNING VLM-PP monitor" in line]
    assert len(warnings) == 1 and "below the teacher's for 3 rounds in a row" in warnings[0]
    # the final results and TensorBoard
    summary = json.loads((tmp_path / "results.json").read_text())["purify_monitor"]
    assert summary == json.loads(json.dumps(result["purify_monitor"]))
    assert summary["monitor"]["rounds"] == 4 and summary["monitor"]["warnings"] == 1
    assert summary["calibration"]["kept_share"] == 0.0
    assert any((tmp_path / "tb").iterdir())


def test_oracle_is_kept_everywhere(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, ["purify.method=oracle", "purify.calibrate_every=0", "purify.monitor_every=2"])
    cal = rows(tmp_path, "calibration")
    assert [r["iter"] for r in cal] == [0]  # calibrate_every 0: before training only
    assert cal[0]["regions"] > 0 and cal[0]["kept_share"] == 1.0 and cal[0]["accuracy"] == 1.0
    mon = rows(tmp_path, "monitor")
    assert [r["iter"] for r in mon] == [2, 4]
    for r in mon:
        assert r["kept_share"] == 1.0 and r["classifier_accuracy"] == 1.0 and r["kept_accuracy"] == 1.0
        assert r["below_teacher_streak"] == 0


def test_monitor_without_abstention(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, ["purify.method=oracle", "purify.abstain=null", "purify.monitor_every=4"])
    assert rows(tmp_path, "calibration") == []
    mon = rows(tmp_path, "monitor")
    assert [r["iter"] for r in mon] == [4] and mon[0]["classifier_accuracy"] == 1.0 and mon[0]["kept_share"] == 1.0


def test_config_keys():
    cfg = load_config(None, [])
    assert cfg.purify.abstain is None and cfg.purify.monitor_every == 0  # off by default
    cfg = load_config(None, ["purify.abstain.min_accuracy=0.8"])
    assert cfg.purify.abstain.min_accuracy == 0.8 and cfg.purify.abstain.accuracy == "majority"
    assert load_config(None, ["purify.abstain={}"]).purify.abstain.min_accuracy == 0.65
    for bad in ("purify.abstain={min_accuracy: 0}", "purify.abstain={min_accuracy: 1.5}", "purify.monitor_every=-1",
                "purify.abstain={accuracy: votes}"):  # fmt: skip
        with pytest.raises(ConfigError):
            load_config(None, [bad])


def test_registry_wraps_the_classifier_when_abstain_is_set():
    from semiearth.purify.classifiers.abstain import AbstainingClassifier
    from semiearth.purify.classifiers.registry import ClassifierContext, build_classifier

    cfg = load_config(None, [*RUN, "purify.method=uniform"])
    clf = build_classifier("uniform", ClassifierContext(purify=cfg.purify, data=cfg.data))
    assert isinstance(clf, AbstainingClassifier) and clf.threshold == float("inf")  # abstains until calibrated
    q = clf(torch.zeros(2, 3, clf.input_size, clf.input_size), torch.zeros(2, 6))
    assert torch.equal(q, torch.full((2, cfg.data.num_classes), 1.0 / cfg.data.num_classes))
