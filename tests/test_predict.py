"""semiearth-predict: sliding window (any size, strips) equals whole-image averaging; PNG and GeoTIFF
outputs with the input's georeference; checkpoints as written by the trainer."""

import numpy as np
import pytest
import torch
from PIL import Image

from semiearth.cli.predict import load_model, main, sliding_predict
from semiearth.config import config_from_dict, config_to_dict
from semiearth.data.io import write_geotiff
from semiearth.eval.inference import predict_sliding
from semiearth.models import build_model
from semiearth.train.checkpoint import save_checkpoint

rasterio = pytest.importorskip("rasterio")


def make_checkpoint(path, num_classes=4):
    cfg = config_from_dict(
        {
            "data": {
                "name": "folder",
                "num_classes": num_classes,
                "class_names": [f"c{i}" for i in range(num_classes)],
                "mean": [0.4, 0.4, 0.4],
                "std": [0.2, 0.2, 0.2],
                "palette": [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]][:num_classes],
            },
            "model": {"name": "tiny", "pretrained": False, "decoder_channels": 8},
            "eval": {"window": 32},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    # the trainer's layout: student under "model", EMA teacher under "ema", resolved config
    save_checkpoint(str(path), {"model_name": "tiny", "num_classes": num_classes, "model": model.state_dict(),
                                "ema": model.state_dict(), "config": config_to_dict(cfg)})  # fmt: skip
    return model, cfg


@pytest.mark.parametrize("h,w,window,stride", [(70, 45, 32, 24), (20, 13, 32, 16), (64, 96, 32, 32), (101, 37, 16, 5)])
def test_strip_sliding_equals_full_accumulation(tmp_path, h, w, window, stride):
    model, _ = make_checkpoint(tmp_path / "c.pth")
    x = torch.randn(3, h, w)
    ours = sliding_predict(model, x, window, stride, batch_size=3, multiple=4)
    ref = predict_sliding(model, x[None], window, stride, multiple=4)[0].argmax(0).numpy()
    assert ours.shape == (h, w) and np.array_equal(ours, ref)


def test_cli_png_and_geotiff(tmp_path, capsys):
    make_checkpoint(tmp_path / "c.pth")
    model, cfg = load_model(str(tmp_path / "c.pth"))
    rng = np.random.default_rng(0)
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    png = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    Image.fromarray(png).save(inp / "a.png")
    geo = rng.integers(1, 256, (3, 50, 61), dtype=np.uint8)
    geo[:, :4, :6] = 0  # nodata
    tr = rasterio.Affine(0.3, 0, 420000, 0, -0.3, 4500000)
    write_geotiff(str(inp / "sub" / "b.tif"), geo, "EPSG:32631", tr, nodata=0)
    out = tmp_path / "out"
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "c.pth"),
                "--input",
                str(inp),
                "--out",
                str(out),
                "--overlap",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    a = np.array(Image.open(out / "a.png"))
    assert a.shape == (45, 70) and a.dtype == np.uint8 and a.max() < 4
    x = (torch.from_numpy(png).permute(2, 0, 1).float() / 255 - 0.4) / 0.2
    assert np.array_equal(a, sliding_predict(model, x, 32, 16, multiple=4))  # same as the library call
    assert np.array(Image.open(out / "a_colour.png")).shape == (45, 70, 3)
    with rasterio.open(out / "sub" / "b.tif") as src:
        assert src.crs.to_epsg() == 32631 and src.transform == tr and src.nodata == 255
        b = src.read(1)
        assert src.colormap(1)[1][:3] == (0, 255, 0)
    assert b.shape == (50, 61) and (b[:4, :6] == 255).all() and b[4:, 6:].max() < 4
    col = np.array(Image.open(out / "sub" / "b_colour.png"))
    assert (col[:4, :6] == 0).all()
    assert "wrote 2 prediction(s)" in capsys.readouterr().out
    # a single file input, and errors that say what is wrong
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "c.pth"),
                "--input",
                str(inp / "a.png"),
                "--out",
                str(tmp_path / "o2"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "o2" / "a.png").exists()
    assert main(["--checkpoint", str(tmp_path / "nope.pth"), "--input", str(inp), "--out", str(out)]) == 1
    assert "nope.pth does not exist" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "c.pth"), "--input", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "input not found" in capsys.readouterr().err
