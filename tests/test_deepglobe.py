"""DeepGlobe Land Cover: colour encoding (binarised at 128, unknown -> ignore), semiearth-prepare from
the official layout (train/<id>_sat.jpg + <id>_mask.png, valid/ and test/ without masks), the
official layout read directly, build_dataset and 2 training iterations on small synthetic files."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiearth.cli.prepare import main as prepare_main
from semiearth.config import DataConfig, load_config
from semiearth.data.classes import IGNORE_INDEX, LabelError
from semiearth.data.deepglobe import DEEPGLOBE, DeepGlobe, binarise, decode_deepglobe
from semiearth.data.io import DataError
from semiearth.data.prepare import assemble, prepare
from semiearth.data.registry import build_dataset, dataset_spec, preparable_datasets

QUIET = {"progress": False, "log": lambda *a: None}
# the 7 official colours in train-id order, then unknown (black)
COLOURS = np.array([*DEEPGLOBE.palette, (0, 0, 0)], dtype=np.int16)


def jittered(ids: np.ndarray, rng) -> np.ndarray:
    """Colour mask [H,W,3] uint8 of train ids 0..6 (6 = unknown), every channel moved by up to 20 steps
    towards the middle (255 -> 235..255, 0 -> 0..20), as compressed masks are."""
    rgb = COLOURS[ids]
    step = rng.integers(0, 21, rgb.shape)
    return np.where(rgb == 255, rgb - step, rgb + step).astype(np.uint8)


def make_deepglobe(root: Path, n=4, size=96, seed=0, valid=1, test=1) -> dict:
    """train/<id>_sat.jpg + <id>_mask.png (jittered colours, blocks of every class incl. unknown),
    valid/ and test/ images without masks. Returns {scene name: expected train ids [H,W]}."""
    rng = np.random.default_rng(seed)
    expect = {}
    for k, (part, count) in enumerate((("train", n), ("valid", valid), ("test", test))):
        (root / part).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            key = str(1000 * (k + 1) + 17 * i)  # random integers in the real data
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / part / f"{key}_sat.jpg", quality=95)
            if part != "train":
                continue
            ids = np.kron(rng.integers(0, 7, (size // 16, size // 16)), np.ones((16, 16), np.int64))
            Image.fromarray(jittered(ids, rng)).save(root / part / f"{key}_mask.png")
            expect[f"train_{key}"] = np.where(ids == 6, IGNORE_INDEX, ids).astype(np.uint8)
    return expect


def data_cfg(root, **kw):
    return DataConfig(name="deepglobe", root=str(root), num_classes=6, class_names=list(DEEPGLOBE.class_names), **kw)


def test_class_table_and_encoding():
    assert "deepglobe" in preparable_datasets() and dataset_spec("deepglobe") is DEEPGLOBE
    assert DEEPGLOBE.class_names == (
        "urban_land",
        "agriculture_land",
        "rangeland",
        "forest_land",
        "water",
        "barren_land",
    )
    raw = np.array(
        [[[0, 255, 255], [255, 255, 0], [255, 0, 255], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]]
    )
    ids, unknown = decode_deepglobe(raw.astype(np.uint8), "m.png")
    assert ids.tolist() == [[0, 1, 2, 3, 4, 5, IGNORE_INDEX]] and unknown == {}
    off = np.array([[[3, 250, 128], [127, 200, 9], [140, 0, 252]]], np.uint8)  # threshold: >= 128 -> 255
    assert binarise(off).tolist() == [[[0, 255, 255], [0, 255, 0], [255, 0, 255]]]
    assert decode_deepglobe(off, "m.png")[0].tolist() == [[0, 3, 2]]
    with pytest.raises(LabelError, match=r"m\.png: 1 colour\(s\).*RGB\(255, 0, 0\): 1 px"):
        decode_deepglobe(np.array([[[250, 10, 10]]], np.uint8), "m.png")  # red is no DeepGlobe colour
    with pytest.raises(DataError, match="single-channel"):
        decode_deepglobe(np.zeros((4, 4), np.uint8), "m.png")


def test_prepare_official_layout(tmp_path):
    expect = make_deepglobe(tmp_path / "src", n=5)
    out = tmp_path / "out"
    prepare("deepglobe", str(tmp_path / "src"), str(out), tile=48, **QUIET)
    for name, ids in expect.items():
        image, mask = assemble(str(out), name)
        assert image.shape == (3, 96, 96) and np.array_equal(mask, ids), name
    meta = json.loads((out / "semiearth.json").read_text())
    assert meta["split_level"] == "scene" and meta["protocol"] == "scene" and meta["num_classes"] == 6
    split = {name: s["split"] for name, s in meta["scenes"].items()}
    assert sorted(split.values()) == ["test", "train", "train", "train", "unlabeled", "unlabeled", "val"]
    assert {n for n, s in split.items() if s == "unlabeled"} == {"valid_2000", "test_3000"}  # no public masks
    unlabeled_only = (out / "splits" / "unlabeled_only.txt").read_text().split()
    assert len(unlabeled_only) == 8 and all("valid_" in p or "test_" in p for p in unlabeled_only)
    assert set(unlabeled_only) <= set((out / "splits" / "10_100" / "unlabeled.txt").read_text().split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_names"] == list(DEEPGLOBE.class_names) and summary["splits"]["train"]["ignore_pixels"] > 0


def test_unknown_colours_are_reported(tmp_path, capsys):
    make_deepglobe(tmp_path / "src", n=3)
    mask = next((tmp_path / "src" / "train").glob("*_mask.png"))
    rgb = np.array(Image.open(mask))
    rgb[:8, :8] = (240, 12, 12)  # red after binarising
    Image.fromarray(rgb).save(mask)
    argv = ["deepglobe", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--tile", "48", "--no-progress"]
    assert prepare_main(argv) == 1
    err = capsys.readouterr().err
    assert mask.name in err and "(255, 0, 0): 64 px" in err and "--on-unknown ignore" in err
    assert prepare_main([*argv, "--on-unknown", "ignore"]) == 0
    assert "semiearth-train --config deepglobe" in capsys.readouterr().out


def test_official_layout_read_directly(tmp_path):
    expect = make_deepglobe(tmp_path, n=3)
    lab = DeepGlobe(data_cfg(tmp_path), "labeled")
    assert lab.layout == "official" and len(lab) == 3
    for item in lab:
        assert tuple(item["image"].shape) == (3, 96, 96)
        assert np.array_equal(item["mask"].numpy(), expect[item["name"]].astype(np.int64))
    unl = DeepGlobe(data_cfg(tmp_path), "unlabeled")
    assert len(unl) == 2 and bool((unl[0]["mask"] == 255).all())
    with pytest.raises(DataError, match="semiearth-prepare deepglobe"):
        DeepGlobe(data_cfg(tmp_path), "val")
    with pytest.raises(FileNotFoundError, match="no DeepGlobe Land Cover layout"):
        DeepGlobe.find_scenes(str(tmp_path / "train"))


def test_build_dataset_and_train_two_iterations(tmp_path):
    from semiearth.train import train

    make_deepglobe(tmp_path / "src", n=5)
    root = tmp_path / "data"
    prepare("deepglobe", str(tmp_path / "src"), str(root), tile=48, ratios=["1/4"], **QUIET)
    overrides = [
        f"data.root={root}",
        "data.splits={labeled: splits/1_4/labeled.txt, unlabeled: splits/1_4/unlabeled.txt, "
        "val: splits/val.txt, test: splits/test.txt}",
        f"out_dir={tmp_path / 'run'}",
        "data.crop_size=32",
        "model.name=tiny",
        "model.pretrained=false",
        "model.decoder_channels=8",
        "train.batch_size=2",
        "train.unlabeled_batch_size=2",
        "train.iters=2",
        "train.num_workers=0",
        "train.log_every=1",
        "train.eval_every=0",
        "train.ckpt_every=0",
        "train.panel_every=0",
        "purify=none",
        "eval.window=48",
        "eval.stride=48",
    ]
    cfg = load_config("deepglobe", overrides)
    ds = build_dataset(cfg.data, "labeled")
    assert isinstance(ds, DeepGlobe) and ds.layout == "list"
    assert set(np.unique(ds[0]["mask"].numpy()).tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    result = train(cfg)
    assert not result["interrupted"] and result["iteration"] == 2
    assert len(result["test"]["IoU"]) == 6
