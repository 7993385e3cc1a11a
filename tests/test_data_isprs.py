"""ISPRS Potsdam / Vaihingen: colour-coded official tiles -> prepare, mmseg layout, real Potsdam tile."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiearth.config import DataConfig
from semiearth.data.classes import ISPRS_PALETTE, LabelError
from semiearth.data.io import DataError, write_geotiff
from semiearth.data.isprs import Potsdam, Vaihingen
from semiearth.data.prepare import assemble, prepare

rasterio = pytest.importorskip("rasterio")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUIET = {"progress": False, "log": lambda *a: None}


def cfg(root, name="potsdam", **kw):
    return DataConfig(name=name, root=str(root), num_classes=6, **kw)


def colour_label(ids: np.ndarray) -> np.ndarray:
    lut = np.array(list(ISPRS_PALETTE) + [(0, 0, 0)], np.uint8)  # id 6 -> black boundary
    return lut[ids]


def make_potsdam(root: Path, tiles=("2_10", "2_11", "2_12", "3_10", "2_13"), h=70, w=90, eroded=True, seed=0):
    rng = np.random.default_rng(seed)
    (root / "2_Ortho_RGB").mkdir(parents=True)
    lab_dir = root / ("5_Labels_all_noBoundary" if eroded else "5_Labels_all")
    lab_dir.mkdir()
    ids = {}
    for k, t in enumerate(tiles):
        img = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        tr = rasterio.Affine(0.05, 0, 366000 + 300 * k, 0, -0.05, 5808000)
        write_geotiff(str(root / "2_Ortho_RGB" / f"top_potsdam_{t}_RGB.tif"), img, "EPSG:32633", tr)
        lab = rng.integers(0, 7 if eroded else 6, (h, w))
        suffix = "_noBoundary" if eroded else ""
        write_geotiff(
            str(lab_dir / f"top_potsdam_{t}_label{suffix}.tif"), np.moveaxis(colour_label(lab), -1, 0), "EPSG:32633", tr
        )
        ids[t] = (img, lab)
    return ids


def test_potsdam_prepare_colour_labels(tmp_path):
    ids = make_potsdam(tmp_path / "src")
    prepare("potsdam", str(tmp_path / "src"), str(tmp_path / "out"), tile=32, stride=32, **QUIET)
    meta = json.loads((tmp_path / "out" / "semiearth.json").read_text())
    assert meta["scenes"]["2_13"]["split"] == "test"  # official test tile
    assert sorted(s["split"] for s in meta["scenes"].values()) == ["test", "train", "train", "train", "val"]
    for t, (img, lab) in ids.items():
        image, mask = assemble(str(tmp_path / "out"), t)
        assert np.array_equal(image, img)
        assert np.array_equal(mask, np.where(lab == 6, 255, lab))  # black boundary -> ignore
    splits = {"labeled": "splits/10_100/labeled.txt", "val": "splits/val.txt", "test": "splits/test.txt"}
    ds = Potsdam(cfg(tmp_path / "out", splits=splits), "test")
    item = ds[0]
    assert tuple(item["image"].shape) == (3, 32, 32)
    assert set(np.unique(item["mask"].numpy()).tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    tif = next((tmp_path / "out" / "images").glob("2_13_32_0_64_32.tif"))
    with rasterio.open(tif) as src:  # each tile keeps its own georeference
        assert src.crs.to_epsg() == 32633 and src.transform.c == pytest.approx(366000 + 300 * 4 + 32 * 0.05)
    with pytest.raises(DataError, match="semiearth-prepare potsdam"):
        Potsdam(cfg(tmp_path / "src"), "labeled")


def test_unknown_colour_is_reported_not_mapped(tmp_path):
    make_potsdam(tmp_path / "src", tiles=("2_10", "2_13"), eroded=False)
    lbl = tmp_path / "src" / "5_Labels_all" / "top_potsdam_2_10_label.tif"
    with rasterio.open(lbl) as src:
        data, tr = src.read(), src.transform
    data[:, :2, :3] = np.array([254, 0, 1], np.uint8)[:, None, None]  # 6 px of a near-white noise colour
    write_geotiff(str(lbl), data, "EPSG:32633", tr)
    with pytest.raises(LabelError, match=r"top_potsdam_2_10_label\.tif.*\(254, 0, 1\): 6 px"):
        prepare("potsdam", str(tmp_path / "src"), str(tmp_path / "out"), tile=32, val_frac=0, **QUIET)
    assert not (tmp_path / "out" / "semiearth.json").exists()
    prepare("potsdam", str(tmp_path / "src"), str(tmp_path / "out2"), tile=32, val_frac=0, on_unknown="ignore", **QUIET)
    meta = json.loads((tmp_path / "out2" / "semiearth.json").read_text())
    assert list(meta["unknown_labels"].values()) == [{"(254, 0, 1)": 6}]
    _, mask = assemble(str(tmp_path / "out2"), "2_10")
    assert (mask[:2, :3] == 255).all()
    # full (non-eroded) labels: black is not a class colour there, so it is unknown too
    data[:, 5, 5] = 0
    write_geotiff(str(lbl), data, "EPSG:32633", tr)
    with pytest.raises(LabelError, match=r"\(0, 0, 0\): 1 px"):
        prepare("potsdam", str(tmp_path / "src"), str(tmp_path / "out3"), tile=32, val_frac=0, **QUIET)


def test_vaihingen_official(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    for d in ("top", "gts_for_participants", "gts_eroded"):
        (src / d).mkdir(parents=True)
    labs = {}
    for a in (1, 3, 5, 2):
        img = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)  # IRRG
        write_geotiff(str(src / "top" / f"top_mosaic_09cm_area{a}.tif"), img)
        lab = rng.integers(0, 6, (40, 50))
        er = lab.copy()
        er[::7] = 6
        write_geotiff(
            str(src / "gts_for_participants" / f"top_mosaic_09cm_area{a}.tif"), np.moveaxis(colour_label(lab), -1, 0)
        )
        write_geotiff(
            str(src / "gts_eroded" / f"top_mosaic_09cm_area{a}_noBoundary.tif"), np.moveaxis(colour_label(er), -1, 0)
        )
        labs[a] = (lab, er)
    for variant, k in (("full", 0), ("eroded", 1)):
        out = tmp_path / variant
        prepare("vaihingen", str(src), str(out), tile=64, label_variant=variant, **QUIET)
        meta = json.loads((out / "semiearth.json").read_text())
        assert meta["scenes"]["area2"]["split"] == "test"
        for a in (1, 3, 5, 2):
            _, mask = assemble(str(out), f"area{a}")
            assert np.array_equal(mask, np.where(labs[a][k] == 6, 255, labs[a][k]))
    ds = Vaihingen(cfg(tmp_path / "eroded", "vaihingen", splits={"test": "splits/test.txt"}), "test")
    assert len(ds) == 1 and tuple(ds[0]["mask"].shape) == (40, 50)


def test_real_potsdam_tile_mmseg_layout(tmp_path):
    img = SHARED / "potsdam" / "img" / "2_10_0_0_512_512.png"
    if not img.exists():
        pytest.skip(f"real Potsdam tile not found at {img} (../shared/data is absent outside CI)")
    for sub, d in (("img_dir", "img"), ("ann_dir", "ann")):
        for split in ("train", "val"):
            (tmp_path / sub / split).mkdir(parents=True)
            os.symlink(SHARED / "potsdam" / d / img.name, tmp_path / sub / split / img.name)
    ds = Potsdam(cfg(tmp_path), "labeled")
    item = ds[0]
    raw = np.array(Image.open(SHARED / "potsdam" / "ann" / img.name))
    assert tuple(item["image"].shape) == (3, 512, 512)
    # mmseg's encoding: 0 boundary -> ignore, 1 impervious .. 5 car -> 0..4 (no clutter in this tile)
    assert set(np.unique(item["mask"].numpy()).tolist()) == {0, 1, 2, 3, 4, 255}
    assert np.array_equal(item["mask"].numpy(), np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    with pytest.raises(DataError, match="no unlabelled split"):
        Potsdam(cfg(tmp_path), "unlabeled")
    # prepare reads the flat img/ + ann/ pair (mmseg encoding) straight from ../shared/data
    prepare("potsdam", str(SHARED / "potsdam"), str(tmp_path / "out"), tile=256, val_frac=0.25, test_frac=0.25, **QUIET)
    image, mask = assemble(str(tmp_path / "out"), "2_10_0_0_512_512")
    assert np.array_equal(image, np.moveaxis(np.array(Image.open(img)), -1, 0))
    assert np.array_equal(mask, np.where(raw == 0, 255, raw - 1))
