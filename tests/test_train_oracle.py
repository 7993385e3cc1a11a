"""purify.method: oracle in the trainer: the unlabelled batch's ground truth reaches the oracle."""

import json

import pytest
import torch
from helpers import TINY_RUN

from semiearth.config import load_config
from semiearth.data.synthetic import SyntheticAerial
from semiearth.train.augment import TrainView, weak_geometric

pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")
ORACLE = [*TINY_RUN, "train.iters=3", "train.eval_every=0", "purify.method=oracle", "purify.every=1"]


def test_oracle_trains_with_an_upper_bound_warning(tmp_path):
    from semiearth.train import train

    cfg = load_config(None, [*ORACLE, f"out_dir={tmp_path}", "purify.max_regions=4"])
    with pytest.warns(UserWarning, match="upper bound"):
        result = train(cfg)
    assert not result["interrupted"]
    records = [json.loads(line) for line in open(tmp_path / "purify.jsonl")]
    assert records
    # the oracle's q is a ground-truth histogram: its top-1 probabilities are pixel shares k/n, not 1/C
    assert any(r["vlm_top3"][0]["prob"] > 1 / 6 + 1e-3 for r in records)


def test_unlabelled_views_carry_the_ground_truth_under_the_same_geometry():
    cfg = load_config(None, ORACLE)
    data = SyntheticAerial(cfg.data, "unlabeled")
    item = data[0]
    assert bool((item["mask"] == cfg.data.ignore_index).all())  # the trainer's mask stays unlabelled
    plain = TrainView(data, cfg.data, cfg.train, labelled=False)[(0, 7)]
    with_gt = TrainView(data, cfg.data, cfg.train, labelled=False, with_gt=True)[(0, 7)]
    assert "gt_w" not in plain and torch.equal(plain["image_w"], with_gt["image_w"])
    g = torch.Generator().manual_seed(7)
    t = cfg.train
    _, expected, _ = weak_geometric(
        item["image"], item["gt"], cfg.data.crop_size, t.scale_range, cfg.data.ignore_index, g, t.hflip, t.rotate90
    )
    assert torch.equal(with_gt["gt_w"], expected)


def test_a_dataset_without_ground_truth_is_refused():
    cfg = load_config(None, ORACLE)

    class NoGT(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 40, 40), "mask": torch.full((40, 40), 255, dtype=torch.long)}

    with pytest.raises(ValueError, match="oracle needs the ground truth"):
        TrainView(NoGT(), cfg.data, cfg.train, labelled=False, with_gt=True)[(0, 1)]
