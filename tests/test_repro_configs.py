"""The reproduction configs (semiearth/configs/repro/, issue 22 item 5): each one names the published
number it is to be compared with and its protocol, states the paper's settings, builds its model
(DINOv2-S + DPT with random weights) and trains 2 iterations with its own dataset class, class table,
split lists, method and VLM-PP (a tiny random Qwen2-VL loaded like downloaded weights) on a small
folder of synthetic scenes in the prepared layout. Training uses the tiny model: DINOv2-S steps take
about 10 s each on 2 busy CPU cores, past this file's budget of about a minute."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

from semiearth.config import load_config
from semiearth.configs import config_path, packaged_configs
from semiearth.data.registry import DATASETS
from semiearth.data.synthetic import generate_scene

pytestmark = pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound).*")
REPRO = sorted(n for n in packaged_configs() if n.startswith("repro/"))
TABLE = {f"repro/{d}_{p}" for d in ("potsdam", "loveda", "deepglobe") for p in (1, 5, 10)}
# The published numbers each config must name (issue 22; the LoveDA ones were not found: "not found").
PUBLISHED = {
    "potsdam_1": ["77.02"], "potsdam_5": ["79.01"], "potsdam_10": ["80.78"],
    "deepglobe_1": ["59.23", "57.66"], "deepglobe_5": ["68.26", "67.26"], "deepglobe_10": ["70.48", "69.95"],
    "loveda_1": ["not found"], "loveda_5": ["not found"], "loveda_10": ["not found"],
}  # fmt: skip
SIZE, CROP = 42, 28  # synthetic scenes and training crops, multiples of DINOv2's 14 px patch


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A prepared-layout folder (images/, masks/, splits/<ratio>/ lists) of synthetic scenes whose
    masks use ids 0..5, valid for every repro dataset (6 or 7 classes)."""
    root = tmp_path_factory.mktemp("scenes")
    for sub in ("images", "masks", "splits/1_100", "splits/5_100", "splits/10_100"):
        (root / sub).mkdir(parents=True)
    names = []
    for i in range(8):
        image, mask = generate_scene(i, SIZE)
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(root / f"images/{i}.png")
        Image.fromarray(mask.numpy().astype(np.uint8)).save(root / f"masks/{i}.png")
        names.append(f"images/{i}.png masks/{i}.png\n")
    lists = {"val.txt": names[:2], "test.txt": names[2:4]}
    for tag in ("1_100", "5_100", "10_100"):
        lists[f"{tag}/labeled.txt"], lists[f"{tag}/unlabeled.txt"] = names[4:6], names[6:]
    for rel, lines in lists.items():
        (root / "splits" / rel).write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """A tiny random Qwen2-VL saved to a folder (bench/vlm_timing.py), offline."""
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    from vlm_timing import save_random_vlm

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield save_random_vlm(str(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl"))


def test_every_row_of_the_paper_table_has_a_config():
    assert set(REPRO) == TABLE


@pytest.mark.parametrize("name", sorted(TABLE))
def test_config_states_the_paper_settings(name):
    if name not in REPRO:
        pytest.fail(f"{name} missing from semiearth/configs/repro/")
    cfg = load_config(name)
    assert cfg.model.name == "dinov2_dpt" and cfg.model.variant == "small" and cfg.data.crop_size == 518
    assert cfg.train.batch_size == 4 and cfg.train.unlabeled_batch_size == 4
    assert cfg.train.lr == 5e-6 and cfg.train.head_lr_mult == 40 and cfg.train.ema_momentum <= 0.996
    assert cfg.train.method == "fixmatch" and cfg.purify.method == "vlm"
    ratio = name.rsplit("_", 1)[1]
    assert cfg.data.splits["labeled"] == f"splits/{ratio}_100/labeled.txt"
    with open(config_path(name)) as f:
        head = "".join(line for line in f if line.startswith("#"))
    for word in ["Compare with:", "Protocol:", "--protocol semiearth", "Iterations:", str(cfg.train.iters)]:
        assert word in head, (name, word)
    for number in PUBLISHED[name.split("/")[1]]:
        assert number in head, (name, number)


def test_models_build_with_random_weights():
    """DINOv2-S + DPT as each config states it (random weights: no download), once per class count."""
    import torch

    from semiearth.models import build_model

    built = {}
    for name in REPRO:
        cfg = load_config(name, ["model.pretrained=false"])
        key = (repr(cfg.model), cfg.data.num_classes)
        if key not in built:
            model = build_model(cfg.model, cfg.data.num_classes).eval()
            with torch.no_grad():
                built[key] = tuple(model(torch.rand(1, 3, CROP, CROP)).shape)
    assert set(built.values()) == {(1, 6, CROP, CROP), (1, 7, CROP, CROP)}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_config_trains_two_iterations(name, scenes, vlm, tmp_path):
    from semiearth.train import train

    if name not in REPRO:
        pytest.fail(f"{name} missing from semiearth/configs/repro/")
    dataset = load_config(name).data.name
    if dataset not in DATASETS:
        pytest.skip(f"dataset {dataset!r} is not registered yet (semiearth/data/registry.py): {name} cannot train")
    overrides = [
        f"data.root={scenes}",
        f"data.crop_size={CROP}",
        "model.name=tiny",
        "model.pretrained=false",
        "model.decoder_channels=8",
        "train.iters=2",
        "train.eval_every=0",
        "train.ckpt_every=0",
        "train.panel_every=0",
        "train.num_workers=0",
        "train.threshold=0.5",
        "purify.max_regions=2",
        f"purify.classifier_options={{model: {vlm}, input_size: 56, synonyms: {{}}}}",
        f"out_dir={tmp_path}",
    ]
    cfg = load_config(name, overrides)
    result = train(cfg)
    assert not result["interrupted"] and result["iteration"] == 2
    assert 0 <= result["test"]["mIoU"] <= 1 and len(result["test"]["IoU"]) == cfg.data.num_classes
    assert (tmp_path / "purify.jsonl").read_text().strip(), "VLM-PP purified nothing"
