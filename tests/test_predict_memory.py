"""semiearth-predict on large images (issue 20, items 4 and 6): memory bounded whatever the image's
size (peak RSS of a subprocess), streamed results identical to the whole-image path, output names
that never collide, non-finite pixels as no-data (and refused by the datasets), PNGs past Pillow's
decompression-bomb limit read with the memory stated (predict and prepare) or refused in one line."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import semiearth.cli.predict as P
from semiearth.cli.predict import load_model, main
from semiearth.data.io import DataError, read_image, read_raster, to_rgb_float, write_geotiff
from semiearth.eval.inference import predict_sliding

rasterio = pytest.importorskip("rasterio")
sys.path.insert(0, os.path.dirname(__file__))
from test_predict import make_checkpoint  # noqa: E402

TRANSFORM = rasterio.Affine(0.3, 0, 420000, 0, -0.3, 4500000)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "c.pth"
    make_checkpoint(path)  # the tiny model, 4 classes, eval.window 32, mean 0.4, std 0.2
    return str(path)


def predict(capsys, ckpt, inp, out, *extra):
    rc = main(["--checkpoint", ckpt, "--input", str(inp), "--out", str(out), "--no-progress", *extra])
    cap = capsys.readouterr()
    return rc, cap.out.strip(), cap.err.strip()


def reference(ckpt, path, window, stride, value_scale=255.0):
    """Today's whole-image path: the file read whole, normalised whole, softmax sums over the whole
    image (semiearth.eval.predict_sliding), argmax; no-data 255."""
    model, cfg = load_model(ckpt)
    r = read_raster(str(path))
    x = (torch.from_numpy(to_rgb_float(r.data, value_scale)) - 0.4) / 0.2
    label = predict_sliding(model, x[None], window, stride, multiple=model.size_multiple)[0].argmax(0).numpy()
    label = label.astype(np.uint8)
    if r.valid is not None:
        label[~r.valid] = 255
    return label


# -- bounded memory ------------------------------------------------------------------------------
WRAPPER = """
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], capture_output=True).returncode
print(json.dumps({"rc": rc, "maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def scene(path, size):
    """A size x size uint8 RGB GeoTIFF, tiled, with a CRS, written a block of rows at a time."""
    from rasterio.windows import Window

    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", crs="EPSG:32631", transform=TRANSFORM)  # fmt: skip
    xx = np.arange(size, dtype=np.float32)[None]
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, 512):
            n = min(512, size - r0)
            a = (np.sin(xx / 37.0) + np.cos(np.arange(r0, r0 + n, dtype=np.float32)[:, None] / 53.0)) * 60 + 128
            a = a.astype(np.uint8)
            dst.write(np.stack([a, a // 2 + 40, 255 - a]), window=Window(0, r0, size, n))


def peak_rss(ckpt, image, out):
    cmd = [sys.executable, "-P", "-m", "semiearth.cli.predict", "--checkpoint", ckpt, "--input", str(image),
           "--out", str(out), "--window", "256", "--no-progress", "--device", "cpu"]  # fmt: skip
    res = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["rc"] == 0, cmd
    return r["maxrss"]


def test_peak_memory_does_not_grow_with_the_image(tmp_path, ckpt):
    """4096 x 4096 (16x the pixels) peaks within 120 MiB of 1024 x 1024; the whole-image path read
    the raster whole and made float copies of it: about 500 MiB more at 4096 x 4096."""
    scene(tmp_path / "small.tif", 1024)
    scene(tmp_path / "large.tif", 4096)
    small = peak_rss(ckpt, tmp_path / "small.tif", tmp_path / "o_small")
    large = peak_rss(ckpt, tmp_path / "large.tif", tmp_path / "o_large")
    assert large - small < 120 * 2**20, f"peak RSS 1024^2: {small / 2**20:.0f} MiB, 4096^2: {large / 2**20:.0f} MiB"
    with rasterio.open(tmp_path / "o_large" / "large.tif") as src:
        assert src.shape == (4096, 4096) and src.crs.to_epsg() == 32631 and src.transform == TRANSFORM
        assert src.read(1, window=rasterio.windows.Window(4000, 4000, 96, 96)).max() < 4


# -- streamed = whole-image results ----------------------------------------------------------------
def test_streamed_prediction_equals_the_whole_image_path(tmp_path, capsys, ckpt, monkeypatch):
    """Images read a batch of windows at a time (never whole) and written in strips give the labels
    of the whole-image path: windows overlapping across strips, a last row and column of windows at
    a smaller step, no-data, RGBA PNG, float GeoTIFF, an image smaller than the window."""
    monkeypatch.setattr(P, "WHOLE_IMAGE_PIXELS", 0)
    largest = []
    read = P.ImageReader.read

    def spy(self, y0, y1, x0, x1):
        if self.path.endswith("g.tif"):
            largest.append((y1 - y0) * (x1 - x0))
        return read(self, y0, y1, x0, x1)

    monkeypatch.setattr(P.ImageReader, "read", spy)
    rng = np.random.default_rng(0)
    inp = tmp_path / "in"
    inp.mkdir()
    geo = rng.integers(1, 256, (3, 150, 170), dtype=np.uint8)
    geo[:, 40:47, 100:130] = 0  # no-data
    write_geotiff(str(inp / "g.tif"), geo, "EPSG:32631", TRANSFORM, nodata=0)
    rgba = rng.integers(0, 256, (97, 161, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[10:20, 5:9, 3] = 0
    Image.fromarray(rgba).save(inp / "p.png")
    flt = rng.uniform(0, 2000, (3, 77, 45)).astype(np.float32)
    write_geotiff(str(inp / "f.tif"), flt, "EPSG:32631", TRANSFORM)
    Image.fromarray(rng.integers(0, 256, (20, 13, 3), dtype=np.uint8)).save(inp / "s.png")
    for overlap, batch in (("0.25", "3"), ("0.5", "1"), ("0.0", "4")):
        out = tmp_path / f"out{overlap}"
        largest.clear()
        rc, msg, _ = predict(capsys, ckpt, inp, out, "--overlap", overlap, "--batch-size", batch,
                             "--value-scale", "2000")  # fmt: skip
        assert rc == 0 and msg.endswith("wrote 4 prediction(s) to " + str(out))
        assert 0 < max(largest) <= 32 * 170  # g.tif: a row of windows at most, never the whole image
        stride = max(1, int(round(32 * (1 - float(overlap)))))
        with rasterio.open(out / "g.tif") as src:
            assert src.crs.to_epsg() == 32631 and src.transform == TRANSFORM and src.nodata == 255
            got = src.read(1)
        assert np.array_equal(got, reference(ckpt, inp / "g.tif", 32, stride)) and (got[40:47, 100:130] == 255).all()
        with rasterio.open(out / "f.tif") as src:
            assert np.array_equal(src.read(1), reference(ckpt, inp / "f.tif", 32, stride, value_scale=2000.0))
        for name in ("p", "s"):
            got = np.array(Image.open(out / f"{name}.png"))
            assert got.dtype == np.uint8 and np.array_equal(got, reference(ckpt, inp / f"{name}.png", 32, stride))
        colour = np.array(Image.open(out / "g_colour.png"))
        assert colour.shape == (150, 170, 3) and (colour[40:47, 100:130] == 0).all()
        assert not [f for f in os.listdir(out) if f.startswith(".")]  # no partial files left


# -- output names ----------------------------------------------------------------------------------
def test_inputs_with_the_same_stem_get_names_apart(tmp_path, capsys, ckpt):
    rng = np.random.default_rng(1)
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    images = {
        "a.jpg": rng.integers(0, 256, (40, 41, 3), dtype=np.uint8),
        "a.png": rng.integers(0, 256, (42, 43, 3), dtype=np.uint8),
        "b.png": rng.integers(0, 256, (44, 45, 3), dtype=np.uint8),
        "b_colour.png": rng.integers(0, 256, (46, 47, 3), dtype=np.uint8),  # b.png's preview name
        "sub/a.png": rng.integers(0, 256, (48, 49, 3), dtype=np.uint8),
    }
    for name, arr in images.items():
        Image.fromarray(arr).save(inp / name, quality=95)
    write_geotiff(str(inp / "a.tif"), rng.integers(0, 256, (3, 50, 51), dtype=np.uint8), "EPSG:32631", TRANSFORM)
    rc, msg, _ = predict(capsys, ckpt, inp, tmp_path / "out")
    assert rc == 0 and "wrote 6 prediction(s)" in msg
    expect = {"a_jpg.png": "a.jpg", "a_png.png": "a.png", "a_tif.tif": "a.tif", "b_png.png": "b.png",
              "b_colour_png.png": "b_colour.png", "sub/a.png": "sub/a.png"}  # fmt: skip
    written = sorted(
        os.path.relpath(os.path.join(d, f), tmp_path / "out") for d, _, fs in os.walk(tmp_path / "out") for f in fs
    )
    previews = [n.rsplit(".", 1)[0] + "_colour.png" for n in expect]
    assert written == sorted([*expect, *previews])
    for out_name, in_name in expect.items():  # each file holds its own input's prediction
        alone = tmp_path / ("alone_" + in_name.replace("/", "_"))
        assert predict(capsys, ckpt, inp / in_name, alone)[0] == 0
        stem = os.path.splitext(os.path.basename(in_name))[0]
        if out_name.endswith(".tif"):
            with rasterio.open(tmp_path / "out" / out_name) as a, rasterio.open(alone / f"{stem}.tif") as b:
                assert np.array_equal(a.read(), b.read())
        else:
            a = np.array(Image.open(tmp_path / "out" / out_name))
            assert a.shape == images[in_name].shape[:2] and np.array_equal(
                a, np.array(Image.open(alone / f"{stem}.png"))
            )


def test_an_output_folder_that_would_overwrite_inputs_is_refused(tmp_path, capsys, ckpt):
    arr = np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    rc, _, err = predict(capsys, ckpt, tmp_path, tmp_path)
    assert rc == 1 and "would overwrite the input" in err and "a.png" in err and "\n" not in err
    assert np.array_equal(np.array(Image.open(tmp_path / "a.png")), arr)


# -- non-finite pixels -----------------------------------------------------------------------------
def float_scene(path, nodata=None):
    data = np.random.default_rng(3).uniform(0, 1, (3, 40, 50)).astype(np.float32)
    data[0, 3, 4] = np.nan
    data[1, 10, 20] = np.inf
    data[:, 30, 33] = -np.inf
    if nodata is not None:
        data[:, 0, :5] = nodata
    write_geotiff(str(path), data, "EPSG:32631", TRANSFORM, nodata=nodata)
    return data


@pytest.mark.parametrize("whole", [True, False])
def test_predict_maps_non_finite_pixels_to_nodata_and_says_how_many(tmp_path, capsys, ckpt, monkeypatch, whole):
    if not whole:
        monkeypatch.setattr(P, "WHOLE_IMAGE_PIXELS", 0, raising=False)
    float_scene(tmp_path / "nan.tif")
    (tmp_path / "in2").mkdir()
    float_scene(tmp_path / "in2" / "nod.tif", nodata=-9999.0)
    rc, _, err = predict(capsys, ckpt, tmp_path / "nan.tif", tmp_path / "out", "--value-scale", "1")
    assert rc == 0 and err.count("\n") == 0
    assert "nan.tif: 3 pixel(s) hold NaN or inf values" in err and "no-data (255)" in err
    with rasterio.open(tmp_path / "out" / "nan.tif") as src:
        label = src.read(1)
    assert label[3, 4] == label[10, 20] == label[30, 33] == 255 and (label == 255).sum() == 3
    rc, _, err = predict(capsys, ckpt, tmp_path / "in2", tmp_path / "out2", "--value-scale", "1")
    assert rc == 0 and "nod.tif: 3 pixel(s)" in err  # the file's own no-data is not counted
    with rasterio.open(tmp_path / "out2" / "nod.tif") as src:
        label = src.read(1)
    assert (label[0, :5] == 255).all() and label[3, 4] == label[10, 20] == label[30, 33] == 255
    assert (label == 255).sum() == 8


def test_datasets_refuse_non_finite_values_or_map_them_to_ignore_where_the_file_declares_nodata(tmp_path):
    from semiearth.config import DataConfig
    from semiearth.data.folder import FolderDataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    float_scene(tmp_path / "images" / "a.tif")
    float_scene(tmp_path / "images" / "b.tif", nodata=-9999.0)
    for n in "ab":
        Image.fromarray(np.ones((40, 50), np.uint8)).save(tmp_path / "masks" / f"{n}.png")
    (tmp_path / "labeled.txt").write_text("images/a.tif masks/a.png\nimages/b.tif masks/b.png\n")
    cfg = DataConfig(
        name="folder", root=str(tmp_path), num_classes=6, splits={"labeled": "labeled.txt"}, value_scale=1.0
    )
    ds = FolderDataset(cfg, "labeled")
    with pytest.raises(DataError, match=r"a\.tif: 3 pixel\(s\) .*NaN or inf.*declares no nodata value") as e:
        ds[0]
    assert "\n" not in str(e.value)
    item = ds[1]
    mask, image = item["mask"].numpy(), item["image"].numpy()
    assert mask[3, 4] == mask[10, 20] == mask[30, 33] == 255 and (mask[0, :5] == 255).all()
    assert (mask == 255).sum() == 8 and np.isfinite(image).all()
    # the shared reader: refuse (default), or map to no-data always
    with pytest.raises(DataError, match=r"a\.tif"):
        read_image(str(tmp_path / "images" / "a.tif"), value_scale=1.0)
    _, valid = read_image(str(tmp_path / "images" / "a.tif"), value_scale=1.0, nonfinite="nodata")
    assert (~valid).sum() == 3 and not valid[30, 33]


# -- past Pillow's decompression-bomb limit -------------------------------------------------------
@pytest.fixture
def low_bomb_limit(monkeypatch):
    """Pillow's limit lowered to 1000 px, so that small test images are "bombs" (> 2x the limit is
    a DecompressionBombError in Image.open, as a 13500 x 13500 PNG is at the default limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


def test_predict_reads_a_png_past_the_bomb_limit_and_states_the_memory(tmp_path, capsys, ckpt, low_bomb_limit):
    arr = np.random.default_rng(4).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.png")
    rc, msg, err = predict(capsys, ckpt, tmp_path / "big.png", tmp_path / "out")
    assert rc == 0 and "wrote 1 prediction(s)" in msg
    assert "big.png: 50x60 px is past Pillow's decompression-bomb limit" in err and "takes about 21 KB" in err
    assert "gdal_translate -co TILED=YES" in err and err.count("\n") == 0
    with warnings.catch_warnings():  # (Pillow would refuse it here; a PNG has no georeference)
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "out" / "big.png") as src:
            assert src.shape == (60, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the limit is lifted only for the files given


def test_a_png_that_would_not_fit_in_memory_is_refused_in_one_line(tmp_path, capsys, ckpt, low_bomb_limit, monkeypatch):
    import semiearth.data.io as io

    monkeypatch.setattr(io, "available_memory", lambda: 10_000, raising=False)
    Image.fromarray(np.zeros((60, 50, 3), np.uint8)).save(tmp_path / "big.png")
    rc, _, err = predict(capsys, ckpt, tmp_path / "big.png", tmp_path / "out")
    assert rc == 1 and "\n" not in err
    assert "big.png: 50x60 px needs about 21 KB of memory to decode, more than the 10 KB available" in err
    assert "convert it to a tiled GeoTIFF" in err and "gdal_translate -co TILED=YES" in err
    assert not (tmp_path / "out" / "big.png").exists()


def test_prepare_reads_pngs_past_the_bomb_limit(tmp_path, capsys, low_bomb_limit):
    from semiearth.cli.prepare import main as prepare_main

    rng = np.random.default_rng(5)
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    (src / "ann").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(src / "img" / f"s{i}.png")
        Image.fromarray(rng.integers(1, 8, (60, 60), dtype=np.uint8)).save(src / "ann" / f"s{i}.png")
    argv = ["loveda", "--src", str(src), "--out", str(tmp_path / "out"), "--tile", "30", "--no-progress"]
    assert prepare_main(argv) == 0
    err = capsys.readouterr().err
    assert "s0.png: 60x60 px is past Pillow's decompression-bomb limit" in err
    assert len(os.listdir(tmp_path / "out" / "images")) == 16
