"""semiearth-predict --format loveda-submission (issue 22, item 4): on a fake LoveDA Test folder the
zip holds one single-channel uint8 1024x1024 PNG per Test image, named <id>.png, at the top of the
zip, in the server's class encoding (raw label - 1: 0 background .. 6 agriculture); inputs that are
no Test image, resized images and checkpoints of other datasets are one-line errors."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from semiearth.cli.predict import load_model, main, sliding_predict
from semiearth.config import config_from_dict, config_to_dict
from semiearth.models import build_model
from semiearth.train.checkpoint import save_checkpoint

# The server's order, as the official LoveDA code states it (Semantic_Segmentation/data/loveda.py LABEL_MAP,
# masks read as raw - 1): written out here, independently of semiearth's tables.
SERVER_IDS = {"background": 0, "building": 1, "road": 2, "water": 3, "barren": 4, "forest": 5, "agriculture": 6}


def loveda_checkpoint(path, class_names=tuple(SERVER_IDS)):
    """A tiny 7-class network saved as the trainer saves it, with a LoveDA-like config."""
    cfg = config_from_dict(
        {
            "data": {"name": "folder", "num_classes": len(class_names), "class_names": list(class_names)},
            "model": {"name": "tiny", "pretrained": False, "decoder_channels": 8},
            "eval": {"window": 512},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, len(class_names)).eval()
    with torch.no_grad():  # every class predicted somewhere: a bias that varies with the input colour
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    state = {"model_name": "tiny", "num_classes": len(class_names), "model": model.state_dict()}
    save_checkpoint(str(path), {**state, "ema": model.state_dict(), "config": config_to_dict(cfg)})
    return path


def fake_test_folder(root, ids=((4191, "Urban"), (5986, "Rural")), size=1024):
    rng = np.random.default_rng(0)
    for i, scene in ids:
        folder = root / "Test" / scene / "images_png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root / "Test"


def run(capsys, ckpt, inp, out, *extra):
    rc = main(["--no-progress", "--checkpoint", str(ckpt), "--input", str(inp), "--out", str(out), *extra])
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return loveda_checkpoint(tmp_path_factory.mktemp("ckpt") / "loveda.pth")


def test_zip_layout_names_dtype_shape_and_encoding(tmp_path, capsys, ckpt):
    test = fake_test_folder(tmp_path / "LoveDA")
    rc, cap = run(capsys, ckpt, test, tmp_path / "sub.zip", "--format", "loveda-submission")
    assert rc == 0, cap.err
    summary = cap.out.strip()
    assert "\n" not in summary and "2 of 1796" in summary and "4191.png .. 5986.png" in summary, summary
    assert not list(tmp_path.glob(".*partial"))
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert z.namelist() == ["4191.png", "5986.png"]  # flat: no folder inside the zip
        model, cfg = load_model(str(ckpt))
        mean = torch.tensor(cfg.data.mean).view(3, 1, 1)
        std = torch.tensor(cfg.data.std).view(3, 1, 1)
        seen = set()
        for name, scene in (("4191.png", "Urban"), ("5986.png", "Rural")):
            im = Image.open(io.BytesIO(z.read(name)))
            assert im.mode == "L" and im.size == (1024, 1024)
            pred = np.asarray(im)
            assert pred.dtype == np.uint8 and pred.shape == (1024, 1024) and pred.max() <= 6
            rgb = np.asarray(Image.open(test / scene / "images_png" / name), dtype=np.float32) / 255.0
            x = (torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std
            ours = sliding_predict(model, x, 512, 384, multiple=int(getattr(model, "size_multiple", 1)))
            lut = np.array([SERVER_IDS[c] for c in cfg.data.class_names], dtype=np.uint8)
            assert np.array_equal(pred, lut[ours])
            seen |= set(np.unique(pred).tolist())
        assert len(seen) > 1  # the encoding was exercised on more than one class


def test_the_server_encoding_comes_from_the_spec_by_class_name():
    from semiearth.data.classes import LOVEDA
    from semiearth.data.loveda import submission_lut

    lut = submission_lut()
    assert [int(lut[t]) for t in range(7)] == [SERVER_IDS[c] for c in LOVEDA.class_names]
    assert lut[255] == 255 and lut[7] == 255


@pytest.mark.parametrize(
    "ids, size, words",
    [
        (((2522, "Urban"),), 1024, ["2522.png is not a loveda test image (ids 4191..5986)", "Test/{Urban,Rural}"]),
        (((4191, "Urban"),), 512, ["4191.png is 512x512 px", "1024x1024"]),
    ],
)
def test_inputs_that_are_no_test_image_are_one_line_errors(tmp_path, capsys, ckpt, ids, size, words):
    test = fake_test_folder(tmp_path / "LoveDA", ids, size)
    rc, cap = run(capsys, ckpt, test, tmp_path / "sub.zip", "--format", "loveda-submission")
    err = cap.err.strip()
    assert rc == 1 and "\n" not in err and "Traceback" not in err, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "sub.zip").exists() and not list(tmp_path.glob(".*partial"))


def test_other_datasets_checkpoint_and_a_folder_out_are_refused(tmp_path, capsys):
    other = loveda_checkpoint(tmp_path / "other.pth", class_names=[f"c{i}" for i in range(7)])
    test = fake_test_folder(tmp_path / "LoveDA", ((4191, "Urban"),), 64)
    rc, cap = run(capsys, other, test, tmp_path / "sub.zip", "--format", "loveda-submission")
    assert rc == 1 and "a loveda submission needs a model trained on loveda" in cap.err, cap.err
    rc, cap = run(capsys, other, test, tmp_path / "folder", "--format", "loveda-submission")
    assert rc == 2 and "--out must name the .zip to write" in cap.err, cap.err
