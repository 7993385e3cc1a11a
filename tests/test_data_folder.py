"""Generic folder format (images/ + masks/ + lists, and the SemiEarth authors' JPEGImages/ +
SegmentationClass/ layout), via the registry; bad input."""

import numpy as np
import pytest
from PIL import Image

from semiearth.config import DataConfig
from semiearth.data import build_dataset
from semiearth.data.folder import FolderDataset
from semiearth.data.io import DataError


def cfg(root, splits, **kw):
    return DataConfig(name="folder", root=str(root), num_classes=6, splits=splits, **kw)


def make_authors(root, n=4, size=24):
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"t{i}.jpg")
        m = rng.integers(0, 6, (size, size), dtype=np.uint8)
        m[0, 0] = 255
        Image.fromarray(m).save(root / "SegmentationClass" / f"t{i}.png")
    (root / "splits").mkdir()
    (root / "splits" / "labeled.txt").write_text(
        "".join(f"JPEGImages/t{i}.jpg SegmentationClass/t{i}.png\n" for i in range(2))
    )
    (root / "splits" / "unlabeled.txt").write_text("JPEGImages/t2.jpg\nt3\n")  # a path and a bare name
    (root / "splits" / "val.txt").write_text("# comment\nt3\n")


def test_authors_layout_via_registry(tmp_path):
    make_authors(tmp_path)
    splits = {"labeled": "splits/labeled.txt", "unlabeled": "splits/unlabeled.txt", "val": "splits/val.txt"}
    lab = build_dataset(cfg(tmp_path, splits), "labeled")
    assert isinstance(lab, FolderDataset) and len(lab) == 2
    item = lab[1]
    expect = np.array(Image.open(tmp_path / "SegmentationClass" / "t1.png")).astype(np.int64)
    assert item["name"] == "t1" and np.array_equal(item["mask"].numpy(), expect)
    assert tuple(item["image"].shape) == (3, 24, 24)
    unl = build_dataset(cfg(tmp_path, splits), "unlabeled")
    assert [it.name for it in unl.items] == ["t2", "t3"] and bool((unl[0]["mask"] == 255).all())
    val = build_dataset(cfg(tmp_path, splits), "val")
    assert val.items[0].mask.endswith("SegmentationClass/t3.png")


def test_bad_input(tmp_path):
    make_authors(tmp_path)
    bad = np.zeros((24, 24), np.uint8)
    bad[3, 3] = 7  # outside 0..5
    Image.fromarray(bad).save(tmp_path / "SegmentationClass" / "t0.png")
    ds = FolderDataset(cfg(tmp_path, {"labeled": "splits/labeled.txt"}), "labeled")
    with pytest.raises(ValueError, match=r"t0\.png: label values outside the class range 0\.\.5.*7: 1 px"):
        ds[0]
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "SegmentationClass" / "t1.png")
    with pytest.raises(DataError, match=r"mask .*t1\.png is 24x20"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"split list not found: .*val2\.txt"):
        FolderDataset(cfg(tmp_path, {"val": "splits/val2.txt"}), "val")
    with pytest.raises(FileNotFoundError, match="no split list for 'test'"):
        FolderDataset(cfg(tmp_path, {}), "test")
    with pytest.raises(FileNotFoundError, match=r"dataset root not found: .*nowhere"):
        FolderDataset(cfg(tmp_path / "nowhere", {}), "labeled")
    (tmp_path / "splits" / "e.txt").write_text("")
    with pytest.raises(DataError, match=r"split list is empty: .*e\.txt"):
        FolderDataset(cfg(tmp_path, {"labeled": "splits/e.txt"}), "labeled")
    (tmp_path / "splits" / "nomask.txt").write_text("JPEGImages/t2.jpg\n")
    with pytest.raises(DataError, match=r"t2\.jpg: split 'labeled' needs a mask"):
        FolderDataset(cfg(tmp_path, {"labeled": "splits/nomask.txt"}), "labeled")[0]
    (tmp_path / "splits" / "missing_img.txt").write_text("JPEGImages/zz.jpg SegmentationClass/t0.png\n")
    with pytest.raises(FileNotFoundError, match=r"zz\.jpg"):
        FolderDataset(cfg(tmp_path, {"labeled": "splits/missing_img.txt"}), "labeled")[0]


def test_auto_split(tmp_path):
    make_authors(tmp_path)
    ds = FolderDataset(cfg(tmp_path, {}, options={"auto_split": True}), "labeled")
    assert len(ds) == 4
