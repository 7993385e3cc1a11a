import json
import os

import pytest
import torch
from helpers import TINY_RUN

from semiearth.config import load_config
from semiearth.train.augment import apply_cutmix, cutmix_box, strong_photometric, weak_geometric
from semiearth.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from semiearth.train.ema import create_teacher, ema_momentum, ema_update
from semiearth.train.losses import unsupervised_loss
from semiearth.train.sampler import StreamBatchSampler

TINY = TINY_RUN + ["train.iters=6", "train.ckpt_every=3", "train.panel_every=2"]


def test_ema_momentum_and_update():
    assert ema_momentum(0) == 0.0 and ema_momentum(1) == 0.5 and ema_momentum(10**6, 0.996) == 0.996
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    teacher = create_teacher(student)
    with torch.no_grad():
        student[0].weight.add_(1.0)
    before = teacher[0].weight.clone()
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher[0].weight, 0.9 * before + 0.1 * student[0].weight)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_cutmix_pastes_the_partner():
    g = torch.Generator().manual_seed(0)
    box = cutmix_box(16, g, p=1.0)
    assert box.sum() > 0
    x = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 16, 16)
    boxes = box[None].expand(3, 16, 16)
    mixed = apply_cutmix(x, boxes)
    assert (mixed[0][:, box.bool()] == 2).all() and (mixed[0][:, ~box.bool()] == 0).all()
    assert cutmix_box(16, g, p=0.0).sum() == 0


def test_augment_shapes_and_padding():
    g = torch.Generator().manual_seed(1)
    image, mask = torch.rand(3, 20, 24), torch.randint(0, 6, (20, 24))
    img, m, pad = weak_geometric(image, mask, 32, [1.0, 1.0], 255, g)
    assert img.shape == (3, 32, 32) and m.shape == pad.shape == (32, 32)
    assert (m[pad] == 255).all() and (m[~pad] < 6).all() and pad.sum() == 32 * 32 - 20 * 24
    s = strong_photometric(img, g)
    assert s.shape == img.shape and 0 <= s.min() and s.max() <= 1


def test_unsupervised_loss_masks_by_confidence():
    logits = torch.zeros(1, 2, 1, 4, requires_grad=True)
    label = torch.tensor([[[0, 1, 0, 1]]])
    conf = torch.tensor([[[0.99, 0.99, 0.5, 0.99]]])
    valid = torch.tensor([[[True, True, True, False]]])
    loss, ratio = unsupervised_loss(logits, label, conf, valid, 0.95)
    assert ratio.item() == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item() / 3)


def test_sampler_is_resumable_and_sharded():
    full = StreamBatchSampler(5, 3, seed=0, rank=0, world=1, start=0, stop=6, salt=0)
    later = StreamBatchSampler(5, 3, seed=0, rank=0, world=1, start=4, stop=6, salt=0)
    assert list(full)[4:] == list(later)
    r0 = StreamBatchSampler(8, 2, 0, 0, 2, 0, 2, 0)
    r1 = StreamBatchSampler(8, 2, 0, 1, 2, 0, 2, 0)
    i0 = [i for b in r0 for i, _ in b]
    i1 = [i for b in r1 for i, _ in b]
    assert not set(i0) & set(i1) and len(set(i0 + i1)) == 8


def test_checkpoint_atomic_and_errors(tmp_path):
    path = str(tmp_path / "latest.pth")
    save_checkpoint(path, {"iteration": 3, "w": torch.ones(2)})
    assert load_checkpoint(path)["iteration"] == 3
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []
    with open(path, "r+b") as f:
        f.truncate(50)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.pth"))
    torch.save({"a": 1}, path)
    with pytest.raises(CheckpointError, match="not a SemiEarth checkpoint"):
        load_checkpoint(path)


def test_train_writes_logs_and_mismatched_resume_fails(tmp_path):
    from semiearth.cli.evaluate import main as eval_main
    from semiearth.train import train

    cfg = load_config(None, [*TINY, f"out_dir={tmp_path}"])
    result = train(cfg)
    for name in ("latest.pth", "best.pth", "metrics.jsonl", "config.yaml", "results.json"):
        assert os.path.exists(tmp_path / name), name
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["iter"] for r in train_rows] == [2, 4, 6]
    assert {"teacher", "purify", "student", "optimiser", "data"} <= set(train_rows[-1]["stage_s"])
    assert "mask_ratio" in train_rows[-1] and "images_per_s" in train_rows[-1]
    assert 0 <= result["test"]["mIoU"] <= 1
    assert eval_main(["--checkpoint", str(tmp_path / "best.pth"), "--split", "test"]) == 0

    bad = load_config(None, [*TINY, f"out_dir={tmp_path}", "model.decoder_channels=4"])
    with pytest.raises(CheckpointError, match="do not fit"):
        train(bad, resume=True)
    other = load_config(None, [*TINY, f"out_dir={tmp_path}", "train.method=mean_teacher"])
    with pytest.raises(CheckpointError, match="another method"):
        train(other, resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(load_config(None, [*TINY, f"out_dir={tmp_path / 'empty'}"]), resume=True)


def test_train_with_vlmpp_writes_records_and_panels(tmp_path):
    from semiearth.train import train

    overrides = [
        *TINY,
        f"out_dir={tmp_path}",
        "data.options={size: 64, labeled: 3, unlabeled: 6, val: 2, test: 2}",
        "data.crop_size=64",
        "train.iters=2",
        "purify.method=prototype",
        "purify.every=1",
        "purify.max_regions=2",
        "purify.classifier_options={input_size: 32}",
        "train.eval_every=0",
    ]
    result = train(load_config(None, overrides))
    assert not result["interrupted"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    last = [r for r in rows if r["split"] == "train"][-1]
    assert "relabelled" in last and "confirmed" in last and last["stage_s"]["purify"] > 0
    records = [json.loads(line) for line in open(tmp_path / "purify.jsonl")]
    assert records and {"box", "vlm_top3", "iter"} <= set(records[0])
    panels = sorted(os.listdir(tmp_path / "panels"))
    assert "iter_000002.png" in panels and "iter_000002_vlmpp.png" in panels
