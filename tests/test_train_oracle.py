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
    view = TrainView(data, cfg.data, cfg.train, labelled=False)[(0, 7)]
    g = torch.Generator().manual_seed(7)
    t = cfg.train
    image, expected, _ = weak_geometric(
        item["image"], item["gt"], cfg.data.crop_size, t.scale_range, cfg.data.ignore_index, g, t.hflip, t.rotate90
    )
    assert torch.equal(view["gt_w"], expected)
    two = TrainView(data, cfg.data, cfg.train, labelled=False, strong_views=2)[(0, 7)]
    for key in ("image_w", "image_s", "box", "gt_w"):  # a second strong view leaves the first as it was
        assert torch.equal(two[key], view[key]), key
    assert {"image_s2", "box2"} <= set(two) and not torch.equal(two["image_s2"], two["image_s"])


def test_a_batch_without_ground_truth_is_refused_by_the_oracle():
    from semiearth.purify import OracleClassifier

    with pytest.raises(ValueError, match="reads the ground truth of the unlabelled images"):
        OracleClassifier(6).set_gt(torch.full((2, 8, 8), 255, dtype=torch.long))
