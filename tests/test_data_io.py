"""semiearth.data.io and semiearth.data.classes: reading, encodings, errors that name the file."""

import numpy as np
import pytest
from PIL import Image

from semiearth.data import classes
from semiearth.data.classes import LabelError, check_train_ids, colourise, convert_colour_mask, convert_index_mask
from semiearth.data.io import DataError, read_image, read_label, read_raster, write_geotiff

rasterio = pytest.importorskip("rasterio")
Affine = rasterio.Affine


def test_png_rgb_gray_rgba(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img, valid = read_image(str(tmp_path / "a.png"))
    assert img.shape == (3, 5, 7) and img.dtype == np.float32 and valid is None
    np.testing.assert_allclose(img, np.moveaxis(rgb, -1, 0) / 255.0)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    img, _ = read_image(str(tmp_path / "g.png"))
    assert img.shape == (3, 5, 7) and np.array_equal(img[0], img[2])
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 255, np.uint8)], -1)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a4.png")
    img, valid = read_image(str(tmp_path / "a4.png"))
    assert valid is not None and not valid[0, 0] and valid.sum() == 34 and img[:, 0, 0].sum() == 0


def test_geotiff_uint16_bands_nodata(tmp_path):
    data = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8) * 10
    data[:, 2, 3] = 0  # nodata pixel
    path = str(tmp_path / "m.tif")
    write_geotiff(path, data, crs="EPSG:32632", transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000), nodata=0)
    r = read_raster(path)
    assert r.data.shape == (4, 6, 8) and r.data.dtype == np.uint16 and r.crs.to_epsg() == 32632
    assert r.valid is not None and not r.valid[2, 3] and r.valid.sum() == 47
    img, valid = read_image(path, bands=[3, 2, 1], value_scale=2000.0)
    np.testing.assert_allclose(img[0, 1, 1], data[2, 1, 1] / 2000.0, rtol=1e-6)
    np.testing.assert_allclose(img[2, 5, 7], min(data[0, 5, 7] / 2000.0, 1.0), rtol=1e-6)
    assert img[:, 2, 3].sum() == 0 and not valid[2, 3]
    img4, _ = read_image(path, value_scale=2000.0)  # default: bands 1,2,3
    np.testing.assert_allclose(img4[1, 1, 1], data[1, 1, 1] / 2000.0, rtol=1e-6)
    with pytest.raises(DataError, match=r"m\.tif: 8\d% of the values .*exceed data\.value_scale=255"):
        read_image(path)  # the 8-bit default on 16-bit data: refused, not clipped to white
    with pytest.raises(DataError, match=r"m\.tif.*band\(s\) \[5\]"):
        read_image(path, bands=[1, 2, 5])


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(str(tmp_path / "nope.png"))
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(str(tmp_path / "junk.png"))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "full.png")
    raw = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="trunc.png.*truncated"):
        read_image(str(tmp_path / "trunc.png"))
    with pytest.raises(DataError, match="trunc.png"):
        read_label(str(tmp_path / "trunc.png"))
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="junk.tif"):
        read_image(str(tmp_path / "junk.tif"))


def test_encodings_are_explicit():
    assert classes.LOVEDA.index_encoding[0] == 255 and classes.LOVEDA.index_encoding[7] == 6
    assert classes.POTSDAM.colour_encoding[(255, 255, 255)] == 0 and classes.POTSDAM.colour_encoding[(255, 0, 0)] == 5
    assert classes.POTSDAM.index_encoding == {0: 255, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}
    assert classes.OPENEARTHMAP.num_classes == 8 and classes.OPENEARTHMAP.index_encoding[8] == 7
    for spec in classes.SPECS.values():
        assert len(spec.palette) == spec.num_classes


def test_convert_index_and_colour_report_unknown():
    raw = np.array([[0, 1, 7], [9, 9, 3]], np.uint8)
    with pytest.raises(LabelError, match=r"lbl\.png.*9: 2 px"):
        convert_index_mask(raw, classes.LOVEDA.index_encoding, "lbl.png")
    m, unknown = convert_index_mask(raw, classes.LOVEDA.index_encoding, "lbl.png", on_unknown="ignore")
    assert m.tolist() == [[255, 0, 6], [255, 255, 2]] and unknown == {9: 2}
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 255, 255)
    rgb[0, 1] = (0, 0, 255)
    rgb[0, 2] = (12, 34, 56)
    rgb[1] = (255, 0, 0)
    with pytest.raises(LabelError, match=r"top\.tif.*RGB\(12, 34, 56\): 1 px"):
        convert_colour_mask(rgb, classes.POTSDAM.colour_encoding, "top.tif")
    m, unknown = convert_colour_mask(rgb, classes.POTSDAM.colour_encoding, "top.tif", on_unknown="ignore")
    assert m.tolist() == [[0, 1, 255], [5, 5, 5]] and unknown == {(12, 34, 56): 1}
    back = colourise(m, classes.POTSDAM.palette)
    assert tuple(back[0, 1]) == (0, 0, 255) and tuple(back[0, 2]) == (0, 0, 0)


def test_check_train_ids():
    check_train_ids(np.array([[0, 5, 255]]), 6, 255, "x.png")
    with pytest.raises(LabelError, match=r"x\.png.*0\.\.5.*6: 1 px"):
        check_train_ids(np.array([[0, 6, 255]]), 6, 255, "x.png")
