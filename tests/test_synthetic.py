import pytest
import torch

from semiearth.config import DataConfig
from semiearth.data import build_dataset
from semiearth.data.synthetic import generate_scene


def cfg(**options):
    return DataConfig(options={"size": 64, "labeled": 3, "unlabeled": 5, "val": 4, "test": 4, **options})


def test_items_follow_the_contract():
    for split, n in (("labeled", 3), ("unlabeled", 5), ("val", 4), ("test", 4)):
        ds = build_dataset(cfg(), split)
        assert len(ds) == n
        item = ds[n - 1]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == (64, 64)
        assert isinstance(item["name"], str) and split in item["name"]
        if split == "unlabeled":
            assert (item["mask"] == 255).all()
        else:
            assert item["mask"].max() < 6


def test_seeded_and_splits_differ():
    a, b = build_dataset(cfg(), "val")[0], build_dataset(cfg(), "val")[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], build_dataset(cfg(), "test")[0]["image"])
    assert not torch.equal(a["image"], build_dataset(cfg(seed=1), "val")[0]["image"])


def test_all_six_classes_appear():
    counts = torch.zeros(6)
    for seed in range(12):
        counts += torch.bincount(generate_scene(seed, 96)[1].flatten(), minlength=6)
    assert (counts > 0).all(), counts


def test_errors():
    with pytest.raises(ValueError, match="unknown key"):
        build_dataset(cfg(colour=1), "val")
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg(), "train")
    with pytest.raises(KeyError, match="known datasets"):
        build_dataset(DataConfig(name="mnist"), "val")
    with pytest.raises(IndexError):
        build_dataset(cfg(), "val")[4]
