"""LoveDA: official and mmseg layouts, prepared folders, bad input, and the real tiles in ../shared/data."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiearth.config import DataConfig
from semiearth.data.classes import LOVEDA
from semiearth.data.io import DataError
from semiearth.data.loveda import LoveDA
from semiearth.data.prepare import prepare

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cfg(root, **kw):
    return DataConfig(name="loveda", root=str(root), num_classes=7, class_names=list(LOVEDA.class_names), **kw)


def make_official(root: Path, size=32, seed=0):
    """Train/Val/{Urban,Rural}/{images_png,masks_png} with raw labels 0..7, Test without masks."""
    rng = np.random.default_rng(seed)
    raws = {}
    for part, n in (("Train", 3), ("Val", 1), ("Test", 1)):
        for scene in ("Urban", "Rural"):
            (root / part / scene / "images_png").mkdir(parents=True)
            if part != "Test":
                (root / part / scene / "masks_png").mkdir(parents=True)
            for i in range(n):
                stem = f"{scene[0]}{part[0]}{i}"
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / part / scene / "images_png" / f"{stem}.png")
                if part != "Test":
                    raw = rng.integers(0, 8, (size, size), dtype=np.uint8)
                    Image.fromarray(raw).save(root / part / scene / "masks_png" / f"{stem}.png")
                    raws[f"{part}_{scene}_{stem}"] = raw
    return raws


def test_official_layout(tmp_path):
    raws = make_official(tmp_path)
    ds = LoveDA(cfg(tmp_path), "labeled")
    assert len(ds) == 6
    item = ds[0]
    assert item["image"].dtype.is_floating_point and tuple(item["image"].shape) == (3, 32, 32)
    assert float(item["image"].max()) <= 1.0 and str(item["mask"].dtype) == "torch.int64"
    raw = raws[item["name"]]
    expect = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    assert np.array_equal(item["mask"].numpy(), expect)
    assert len(LoveDA(cfg(tmp_path), "val")) == 2
    unl = LoveDA(cfg(tmp_path), "unlabeled")  # the official Test images: no public labels
    assert len(unl) == 2 and bool((unl[0]["mask"] == 255).all())
    with pytest.warns(UserWarning, match="val and test then coincide"):
        LoveDA(cfg(tmp_path), "test")
    names = [it["name"] for it in ds]
    assert len(set(names)) == len(names)


def test_mmseg_layout(tmp_path):
    rng = np.random.default_rng(1)
    for sub in ("train", "val"):
        (tmp_path / "img_dir" / sub).mkdir(parents=True)
        (tmp_path / "ann_dir" / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img_dir" / sub / "a.png")
        Image.fromarray(np.full((16, 16), 3, np.uint8)).save(tmp_path / "ann_dir" / sub / "a.png")
    ds = LoveDA(cfg(tmp_path), "labeled")
    assert len(ds) == 1 and bool((ds[0]["mask"] == 2).all())


def test_bad_input_names_the_file(tmp_path):
    make_official(tmp_path)
    mdir = tmp_path / "Train" / "Urban" / "masks_png"
    Image.fromarray(np.full((20, 32), 1, np.uint8)).save(mdir / "UT0.png")  # wrong size
    ds = LoveDA(cfg(tmp_path), "labeled")
    i = [it.name for it in ds.items].index("Train_Urban_UT0")
    with pytest.raises(DataError, match=r"UT0\.png is 32x20 .*UT0\.png is 32x32"):
        ds[i]
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(mdir / "UT0.png")  # raw value 9: not LoveDA
    with pytest.raises(ValueError, match=r"UT0\.png.*9: 1024 px"):
        ds[i]
    with pytest.raises(FileNotFoundError, match="dataset root not found: .*missing"):
        LoveDA(cfg(tmp_path / "missing"), "labeled")
    with pytest.raises(DataError, match="7 classes"):
        LoveDA(DataConfig(name="loveda", root=str(tmp_path), num_classes=6), "labeled")


def test_prepared_folder_and_splits(tmp_path):
    make_official(tmp_path / "src")
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "out"), tile=16, progress=False, log=lambda *a: None)
    splits = {"labeled": "splits/10_100/labeled.txt", "unlabeled": "splits/10_100/unlabeled.txt",
              "val": "splits/val.txt", "test": "splits/test.txt"}  # fmt: skip
    lab = LoveDA(cfg(tmp_path / "out", splits=splits), "labeled")
    assert lab.layout == "list" and tuple(lab[0]["mask"].shape) == (16, 16)
    unl = LoveDA(cfg(tmp_path / "out", splits=splits), "unlabeled")
    assert bool((unl[0]["mask"] == 255).all())  # unlabelled masks are not loaded by default
    unl2 = LoveDA(cfg(tmp_path / "out", splits=splits, options={"unlabeled_masks": True}), "unlabeled")
    assert not bool((unl2[0]["mask"] == 255).all())
    test = LoveDA(cfg(tmp_path / "out", splits=splits), "test")  # official Val -> test
    assert all(it.name.startswith("Val_") for it in test.items)
    val = LoveDA(cfg(tmp_path / "out", splits=splits), "val")  # held out from Train scenes
    assert all(it.name.startswith("Train_") for it in val.items)
    with pytest.raises(FileNotFoundError, match=r"split list not found: .*nope\.txt"):
        LoveDA(cfg(tmp_path / "out", splits={"labeled": "splits/nope.txt"}), "labeled")
    with pytest.raises(FileNotFoundError, match="no split list for 'val'"):
        LoveDA(cfg(tmp_path / "out"), "val")
    (tmp_path / "out" / "splits" / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match=r"split list is empty: .*empty\.txt"):
        LoveDA(cfg(tmp_path / "out", splits={"labeled": "splits/empty.txt"}), "labeled")


def link_real_loveda(root: Path):
    if not (SHARED / "loveda" / "img" / "0.png").exists():
        pytest.skip(f"real LoveDA tiles not found at {SHARED / 'loveda'} (../shared/data is absent outside CI)")
    for part, ids in (("Train", ("0", "1")), ("Val", ("2",))):
        (root / part / "Rural" / "images_png").mkdir(parents=True)
        (root / part / "Rural" / "masks_png").mkdir(parents=True)
        for i in ids:
            os.symlink(SHARED / "loveda" / "img" / f"{i}.png", root / part / "Rural" / "images_png" / f"{i}.png")
            os.symlink(SHARED / "loveda" / "ann" / f"{i}.png", root / part / "Rural" / "masks_png" / f"{i}.png")


def test_real_loveda_tiles(tmp_path):
    link_real_loveda(tmp_path)  # the official layout, by symlinks into ../shared/data (nothing copied)
    ds = LoveDA(cfg(tmp_path), "labeled")
    expect = {"Train_Rural_0": {0, 1, 2, 3, 6}, "Train_Rural_1": {0, 1, 2, 3, 5, 6}}  # raw {1,2,3,4,7}, ...
    for item in ds:
        assert tuple(item["image"].shape) == (3, 1024, 1024) and tuple(item["mask"].shape) == (1024, 1024)
        assert set(np.unique(item["mask"].numpy()).tolist()) == expect[item["name"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = LoveDA(cfg(tmp_path), "val")
    assert set(np.unique(val[0]["mask"].numpy()).tolist()) == {0, 3, 5, 6}  # raw {1,4,6,7}
