"""The extension points: a classifier and a dataset added through their registries only (this file
touches no other) train 2 iterations; purify.method is checked against the classifier registry;
an op refuses a backend it does not have, naming those it has."""

import json
import os

import pytest
import torch
from helpers import TINY_RUN

from semiearth import ops
from semiearth.config import ConfigError, load_config
from semiearth.data.registry import DATASETS, preparable_datasets, register_dataset, scene_finder
from semiearth.purify.classifiers._base import check_crops
from semiearth.purify.classifiers.registry import CLASSIFIERS, register_classifier, trainer_methods


class ToyClassifier:
    """q = one-hot of the region's teacher class (a 'VLM' that always agrees with the teacher)."""

    built = 0

    def __init__(self, num_classes: int):
        self.num_classes, self.input_size = num_classes, 8
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @classmethod
    def from_config(cls, ctx) -> "ToyClassifier":
        cls.built += 1
        return cls(ctx.data.num_classes)

    def __call__(self, crops, regions):
        check_crops("ToyClassifier", crops, regions)
        return torch.nn.functional.one_hot(regions[:, 5].long(), self.num_classes).float()


class ToyDataset(torch.utils.data.Dataset):
    """Two-class stripes of random width, 24 px; unlabelled items carry an all-ignore mask."""

    NEEDS_ROOT = False
    OPTIONS = ()
    spec = None
    LENGTH = {"labeled": 4, "unlabeled": 4, "val": 2, "test": 2}

    def __init__(self, cfg, split):
        self.split, self.ignore = split, cfg.ignore_index

    @staticmethod
    def find_scenes(src, **_):
        return []

    def __len__(self):
        return self.LENGTH[self.split]

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.arange(24)
        mask = ((x // int(torch.randint(3, 9, (), generator=g))) % 2).expand(24, 24).long()
        image = torch.stack([mask.float(), 1 - mask.float(), torch.full((24, 24), 0.5)])
        if self.split == "unlabeled":
            mask = torch.full_like(mask, self.ignore)
        return {"image": image, "mask": mask, "name": f"toy_{self.split}_{i}"}


@pytest.fixture
def toys():
    register_classifier("toy", ToyClassifier)
    register_dataset("toy", ToyDataset)
    yield
    CLASSIFIERS.pop("toy")
    DATASETS.pop("toy")


def test_toy_classifier_and_dataset_train_two_iterations(toys, tmp_path):
    from semiearth.train import train

    assert "toy" in trainer_methods() and "toy" in preparable_datasets()
    assert scene_finder("toy") is ToyDataset.find_scenes
    overrides = [
        *TINY_RUN,
        f"out_dir={tmp_path}",
        "data.name=toy",
        "data.options={}",
        "data.num_classes=2",
        "data.class_names=[a,b]",
        "data.crop_size=24",
        "train.iters=2",
        "purify.method=toy",
        "purify.every=1",
        "purify.cell=8",
        "purify.max_regions=2",
        "purify.low_thresh=1.0",
    ]
    built = ToyClassifier.built
    result = train(load_config(None, overrides))
    assert not result["interrupted"] and result["iteration"] == 2
    assert ToyClassifier.built == built + 1
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    last = [r for r in rows if r["split"] == "train"][-1]
    assert last["iter"] == 2 and last["stage_s"]["purify"] > 0 and "relabelled" in last
    assert os.path.getsize(tmp_path / "purify.jsonl") > 0  # the toy classifier's regions were recorded


def test_purify_method_is_checked_against_the_registry():
    assert {"prototype", "openclip", "vlm"} <= set(trainer_methods())
    with pytest.raises(ConfigError, match=r"purify.method: 'magic' is not one of \[none, "):
        load_config(None, ["purify.method=magic"])
    if "oracle" not in trainer_methods():  # the oracle needs the unlabelled batch's ground truth
        with pytest.raises(ConfigError, match="cannot be built by the trainer"):
            load_config(None, ["purify.method=oracle"])
    with pytest.raises(ConfigError, match="'toy' is not one of"):
        load_config(None, ["purify.method=toy"])  # not registered outside the fixture


@pytest.mark.parametrize(
    "op, backend, has",
    [("purify_stats", "cuda", "torch, cpp, triton"), ("purify_apply", "cuda", "torch, cpp, triton"),
     ("crop_batch", "triton", "torch, cpp, cuda"), ("purify_stats", "cpu", "torch, cpp, triton")],
)  # fmt: skip
def test_unsupported_backend_raises(op, backend, has):
    assert ", ".join(ops.backends(op)) == has
    logits = torch.randn(1, 3, 8, 8)
    calls = {
        "purify_stats": lambda: ops.purify_stats(logits, cell=4, backend=backend),
        "crop_batch": lambda: ops.crop_batch(
            torch.rand(1, 3, 8, 8), torch.tensor([[0.0, 0, 0, 4, 4, 0]]), 4, backend=backend
        ),
        "purify_apply": lambda: ops.purify_apply(
            logits,
            ops.purify_stats(logits, cell=4, backend="torch"),
            torch.full((1, 2, 2, 3), -1, dtype=torch.int32),
            torch.zeros(0, 3),
            backend=backend,
        ),
    }
    with pytest.raises(ValueError, match=rf"{op}: backend must be 'auto' or one of the backends {op} has \({has}\)"):
        calls[op]()
