"""OpenEarthMap: official GeoTIFF layout with georeference and nodata; bands; prepare keeps georeference."""

import json

import numpy as np
import pytest

from semiearth.config import DataConfig
from semiearth.data.classes import OPENEARTHMAP
from semiearth.data.io import DataError, write_geotiff
from semiearth.data.openearthmap import OpenEarthMap
from semiearth.data.prepare import assemble, prepare

rasterio = pytest.importorskip("rasterio")
QUIET = {"progress": False, "log": lambda *a: None}


def cfg(root, **kw):
    return DataConfig(
        name="openearthmap", root=str(root), num_classes=8, class_names=list(OPENEARTHMAP.class_names), **kw
    )


def make_oem(root, size=48, seed=0):
    rng = np.random.default_rng(seed)
    lists = {"train": [], "val": [], "test": []}
    data = {}
    for r, region in enumerate(("aachen", "kyoto", "lima")):
        (root / region / "images").mkdir(parents=True)
        (root / region / "labels").mkdir(parents=True)
        for i in range(3):
            name = f"{region}_{i}.tif"
            img = rng.integers(1, 256, (4, size, size), dtype=np.uint8)  # 4 bands: R, G, B, NIR
            img[:, :3, :5] = 0  # nodata corner
            tr = rasterio.Affine(0.5, 0, 100 * r + 10 * i, 0, -0.5, 2000)
            write_geotiff(str(root / region / "images" / name), img, "EPSG:3857", tr, nodata=0)
            lab = rng.integers(0, 9, (size, size), dtype=np.uint8)
            write_geotiff(str(root / region / "labels" / name), lab, "EPSG:3857", tr)
            lists[("train", "train", "val")[i] if region != "lima" else "test"].append(name)
            data[name[:-4]] = (img, lab)
    for k, names in lists.items():
        (root / f"{k}.txt").write_text("\n".join(names) + "\n")
    return data


def test_official_layout_geotiff(tmp_path):
    data = make_oem(tmp_path)
    ds = OpenEarthMap(cfg(tmp_path), "labeled")
    assert (
        len(ds) == 4 and len(OpenEarthMap(cfg(tmp_path), "val")) == 2 and len(OpenEarthMap(cfg(tmp_path), "test")) == 3
    )
    item = ds[0]
    img, lab = data[item["name"]]
    mask = item["mask"].numpy()
    expect = np.where(lab == 0, 255, lab.astype(np.int64) - 1)
    expect[:3, :5] = 255  # image nodata -> ignore
    assert np.array_equal(mask, expect)
    assert float(item["image"][:, 0, 0].abs().sum()) == 0
    np.testing.assert_allclose(item["image"][0, 10, 10].item(), img[0, 10, 10] / 255.0, rtol=1e-6)
    nir = OpenEarthMap(cfg(tmp_path, bands=[4, 3, 2]), "labeled")[0]  # false colour by band selection
    np.testing.assert_allclose(nir["image"][0, 10, 10].item(), img[3, 10, 10] / 255.0, rtol=1e-6)
    with pytest.raises(DataError, match="no unlabelled split"):
        OpenEarthMap(cfg(tmp_path), "unlabeled")
    (tmp_path / "val.txt").write_text("\n")
    with pytest.raises(DataError, match=r"split list is empty: .*val\.txt"):
        OpenEarthMap(cfg(tmp_path), "val")


def test_prepare_keeps_georeference_and_nodata(tmp_path):
    data = make_oem(tmp_path / "src")
    prepare("openearthmap", str(tmp_path / "src"), str(tmp_path / "out"), tile=32, stride=16, **QUIET)
    meta = json.loads((tmp_path / "out" / "semiearth.json").read_text())
    assert {s["split"] for n, s in meta["scenes"].items() if n.startswith("lima")} == {"test"}
    for name, (img, lab) in data.items():
        image, mask = assemble(str(tmp_path / "out"), name)
        assert np.array_equal(image, img)  # all 4 bands, raw
        expect = np.where(lab == 0, 255, lab - 1)
        expect[:3, :5] = 255
        assert np.array_equal(mask, expect)
    with rasterio.open(tmp_path / "out" / "images" / "kyoto_1_16_16_48_48.tif") as src:
        assert src.crs.to_epsg() == 3857 and src.nodata == 0 and src.count == 4
        assert (src.transform.c, src.transform.f) == (100 + 10 + 16 * 0.5, 2000 - 16 * 0.5)
