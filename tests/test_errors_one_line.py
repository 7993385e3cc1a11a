"""One line from every layer (issue 20, items 5 and 6 and prepare's part of 1): what goes wrong outside
a tool's own checks -- a full disk, a read-only or misplaced output, broken YAML, a config that is a
folder or not UTF-8, an error inside a DataLoader worker, a classifier weight file of the wrong kind --
is one line on stderr naming the problem and the fix, before the work where it can be known;
config values that would make results silently wrong are refused; `5e-6` is a float; prepare takes any
file name and refuses NaN pixels."""

import errno
import json
import os
import re
import tempfile

import numpy as np
import pytest
import torch
from helpers import cli_args, save_tiny_checkpoint
from PIL import Image

import semiearth.train
from semiearth.cli.evaluate import main as eval_main
from semiearth.cli.predict import main as predict_main
from semiearth.cli.prepare import main as prepare_main
from semiearth.cli.train import main as train_main
from semiearth.config import load_config
from semiearth.data.prepare import prepare
from semiearth.train.checkpoint import load_checkpoint

QUIET = {"progress": False, "log": lambda *a: None}
BAR = re.compile(r"\d+%\|")  # a tqdm progress bar segment


def one_line(capsys, *words) -> str:
    """The one line on stderr (progress bars aside), checked for `words`."""
    err = capsys.readouterr().err
    lines = [s for s in re.split(r"[\r\n]", err) if s.strip() and not BAR.search(s)]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def read_only(monkeypatch, folder):
    """Make `folder` unwritable: chmod 0555 where that binds; as root (which ignores permissions) files
    cannot be created under it, as on a read-only file system (EROFS)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and os.path.abspath(dir).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def never(*a, **k):
    raise AssertionError("the work started before the error")


# ----------------------------------------------------------------------------- config (item 5, 6)
def test_scientific_notation_is_a_float_in_files_and_overrides(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train:\n  lr: 5e-6\n  head_lr_mult: 4E1\n")
    cfg = load_config(str(tmp_path / "c.yaml"), ["train.weight_decay=1e-2", "data.mean=[5e-1, 0.5, 0.5]"])
    assert (cfg.train.lr, cfg.train.head_lr_mult, cfg.train.weight_decay) == (5e-6, 40.0, 0.01)
    assert cfg.data.mean == [0.5, 0.5, 0.5]
    out = tmp_path / "R"
    assert train_main(cli_args(out, "train.lr=5e-6", "train.iters=1")) == 0
    assert load_config(str(out / "config.yaml")).train.lr == 5e-6
    capsys.readouterr()
    assert train_main(cli_args(tmp_path / "x", "train.lr=5e-x")) == 2
    one_line(capsys, "train.lr", "expected float", "5e-x")


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["data.mean=[0.5, 0.5"], ["--set data.mean=[0.5, 0.5", "not valid YAML", "line 1, column", "expected ','"]),
        (["data.ignore_index=0"], ["data.ignore_index", "class 0 would never be trained", "allow_ignore_in_classes"]),
        (["eval.mode=slide", "eval.stride=600"], ["eval.stride", "600 > eval.window 512", "no window covers"]),
        (["data.std=[0.2, 0, 0.2]"], ["data.std", "> 0", "[0.2, 0.0, 0.2]"]),
        (["data.std=[0.2, -1, 0.2]"], ["data.std", "> 0"]),
        (["purify=prototype", "purify.classifier_options={tempreture: 2}"],
         ["unknown key 'purify.classifier_options.tempreture'", "did you mean 'temperature'"]),
        # the op's range (semiearth/bounds.py), refused at load instead of a traceback from inside the op
        (["purify.low_thresh=0"], ["purify.low_thresh", "must be > 0 and <= 1, got 0", "(from --set purify.low_thresh=0)"]),
        (["purify=openclip", "purify.classifier_options={class_names: [a]}"], ["class_names", "data.class_names"]),
    ],
)  # fmt: skip
def test_config_mistakes_are_one_line_errors_before_the_work(tmp_path, capsys, monkeypatch, overrides, words):
    monkeypatch.setattr(semiearth.train, "run", never)
    assert train_main(cli_args(tmp_path / "x", *overrides)) == 2
    one_line(capsys, "config error", *words)
    assert not (tmp_path / "x").exists()


def test_ignore_index_among_the_classes_when_asked_for():
    cfg = load_config(None, ["data.ignore_index=0", "data.allow_ignore_in_classes=true"])
    assert cfg.data.ignore_index == 0
    assert load_config(None, ["eval.stride=600"]).eval.stride == 600  # whole-image mode does not slide


@pytest.mark.parametrize("kind", ["broken", "folder", "latin1", "missing"])
def test_config_files_that_are_not_yaml_configs(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setattr(semiearth.train, "run", never)
    path = tmp_path / "c.yaml"
    words = {
        "broken": [str(path), "invalid YAML", "line 3, column 1", "expected ',' or ']'", "line 2, column 7"],
        "folder": [str(tmp_path), "is a folder", "YAML file"],
        "latin1": [str(path), "not UTF-8", "0xe9", "UTF-8"],
        "missing": [str(path), "not found"],
    }[kind]
    if kind == "broken":
        path.write_text("train:\n  lr: [1, 2\n")
    elif kind == "latin1":
        path.write_bytes("data:\n  name: caf\u00e9\n".encode("latin-1"))
    elif kind == "folder":
        path = tmp_path
    argv = ["--config", str(path), "--out", str(tmp_path / "x")]
    assert train_main(argv) == 2
    one_line(capsys, "config error", *words)
    assert eval_main(["--checkpoint", "nope.pth", "--config", str(path)]) == 2
    one_line(capsys)


# ----------------------------------------------------------------------------- train: disk, --out, workers
@pytest.mark.parametrize("target", ["path", "file"])
def test_disk_full_while_saving_is_one_line_and_the_last_checkpoint_stays(tmp_path, capsys, monkeypatch, target):
    """torch.save into /dev/full: a real ENOSPC from torch's zip writer (`unexpected pos N vs M` when it
    writes to a path, the OSError when it writes to a file object)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full (a device that is always full) is Linux-only")
    real, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 2:
            return real(obj, f, *a, **k)
        if target == "path":
            return real(obj, "/dev/full", *a, **k)
        with open("/dev/full", "wb") as full:
            return real(obj, full, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "R"
    assert train_main(cli_args(out, "train.iters=4", "train.ckpt_every=2")) == 1
    line = one_line(capsys, "semiearth-train: error:", "disk", "full")
    assert "unexpected pos" not in line or "torch.save" in line
    monkeypatch.setattr(torch, "save", real)
    assert load_checkpoint(str(out / "latest.pth"))["iteration"] == 2  # the previous save is intact


@pytest.mark.parametrize("where", ["file", "under_file", "read_only"])
def test_train_out_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, monkeypatch, where):
    monkeypatch.setattr(semiearth.train, "run", never)
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "run", "read_only": tmp_path / "ro" / "run"}[where]
    if where == "read_only":
        read_only(monkeypatch, tmp_path / "ro")
    assert train_main(cli_args(out)) == 2
    words = {"file": ["is a file", "name a folder"], "under_file": ["is a file, not a folder"],
             "read_only": ["cannot write in", str(tmp_path / "ro")]}[where]  # fmt: skip
    one_line(capsys, "--out", str(out), *words)
    assert not (tmp_path / "ro" / "run").exists()


def prepared_folder(root, n=6, size=40, classes=3, names=None):
    rng = np.random.default_rng(0)
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for i in range(n):
        name = names[i] if names else f"s{i}"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(src / "images" / f"{name}.png")
        Image.fromarray(rng.integers(0, classes, (size, size), dtype=np.uint8)).save(src / "masks" / f"{name}.png")
    out = root / "data"
    prepare("folder", str(src), str(out), tile=20, num_classes=classes, **QUIET)
    return out


FOLDER_RUN = [
    "data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null", "data.crop_size=16",
    "data.splits.labeled=splits/10_100/labeled.txt", "data.splits.unlabeled=splits/10_100/unlabeled.txt",
    "data.splits.val=splits/val.txt", "data.splits.test=splits/test.txt", "model.name=tiny",
    "model.pretrained=false", "model.decoder_channels=8", "train.batch_size=2", "train.unlabeled_batch_size=2",
    "purify=none", "train.iters=2", "train.eval_every=0", "train.log_every=1",
]  # fmt: skip


def test_an_error_inside_a_dataloader_worker_is_its_own_one_line(tmp_path, capsys):
    data = prepared_folder(tmp_path)
    for m in (data / "masks").iterdir():  # labels outside the 3 classes: the dataset refuses them in the workers
        Image.fromarray(np.full((20, 20), 7, np.uint8)).save(m)
    sets = [f"data.root={data}", *FOLDER_RUN, "train.num_workers=2"]
    argv = ["--config", "folder", "--out", str(tmp_path / "R")]
    assert train_main(argv + [a for s in sets for a in ("--set", s)]) == 4
    line = one_line(capsys, "data error", str(data / "masks"), "outside the class range", "7: 400 px")
    assert "DataLoader worker" not in line and "Caught" not in line


# ----------------------------------------------------------------------------- eval --json, predict --out
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "c.pth"
    save_tiny_checkpoint(path)
    return path


@pytest.mark.parametrize("where", ["folder", "under_file", "read_only"])
def test_eval_json_that_cannot_be_written_is_refused_before_the_evaluation(tmp_path, capsys, monkeypatch, ckpt, where):
    import semiearth.eval

    monkeypatch.setattr(semiearth.eval, "evaluate", never)
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    target = {
        "folder": tmp_path / "d",
        "under_file": tmp_path / "f" / "m.json",
        "read_only": tmp_path / "ro" / "m.json",
    }
    if where == "read_only":
        read_only(monkeypatch, tmp_path / "ro")
    assert eval_main(["--checkpoint", str(ckpt), "--json", str(target[where])]) == 2
    words = {"folder": ["is a folder", "name a file"], "under_file": ["is a file, not a folder"],
             "read_only": ["cannot write in", str(tmp_path / "ro")]}[where]  # fmt: skip
    one_line(capsys, "--json", str(target[where]), *words)


def test_eval_json_into_a_new_folder_is_written(tmp_path, capsys, ckpt):
    target = tmp_path / "new" / "m.json"
    assert eval_main(["--checkpoint", str(ckpt), "--split", "val", "--json", str(target)]) == 0
    assert "mIoU" in json.loads(target.read_text())


@pytest.mark.parametrize("where", ["under_file", "read_only"])
def test_predict_out_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, monkeypatch, ckpt, where):
    import semiearth.cli.predict as P

    monkeypatch.setattr(P, "predict_files", never)
    monkeypatch.setattr(P, "load_model", never)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "f").write_text("x")
    out = {"under_file": tmp_path / "f" / "preds", "read_only": tmp_path / "ro" / "preds"}[where]
    if where == "read_only":
        read_only(monkeypatch, tmp_path / "ro")
    argv = ["--no-progress", "--checkpoint", str(ckpt), "--input", str(tmp_path / "a.png"), "--out", str(out)]
    assert predict_main(argv) == 2
    one_line(capsys, "--out", str(out), "is a file, not a folder" if where == "under_file" else "cannot write in")


def test_predict_disk_full_is_one_line(tmp_path, capsys, monkeypatch, ckpt):
    import semiearth.cli.predict as P

    def full(model, cfg, inputs, out_dir, *a, **k):  # the disk fills up while the predictions are written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(out_dir, "a_colour.png"))

    monkeypatch.setattr(P, "predict_files", full)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    argv = [
        "--no-progress",
        "--checkpoint",
        str(ckpt),
        "--input",
        str(tmp_path / "a.png"),
        "--out",
        str(tmp_path / "p"),
    ]
    assert predict_main(argv) == 1
    one_line(capsys, "semiearth-predict: error:", "a_colour.png", "the disk is full", "free space")


# ----------------------------------------------------------------------------- prepare
def prepare_argv(src, out, *extra):
    return [
        "folder",
        "--src",
        str(src),
        "--out",
        str(out),
        "--num-classes",
        "3",
        "--tile",
        "20",
        "--no-progress",
        *extra,
    ]


def source(root, names, size=40, suffix=".png"):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in names:
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, (size, size), dtype=np.uint8)
        if suffix == ".tif":  # rasterio writes UTF-8 names only: write, then rename
            from semiearth.data.io import write_geotiff

            write_geotiff(str(root / "images" / "tmp.tif"), np.moveaxis(img, -1, 0), None, None, None)
            os.rename(root / "images" / "tmp.tif", os.path.join(root / "images", name + suffix))
        else:
            Image.fromarray(img).save(os.path.join(root / "images", name + suffix))
        Image.fromarray(mask).save(os.path.join(root / "masks", name + ".png"))
    return root


@pytest.mark.parametrize("kind", ["spaces", "not_utf8_png", "not_utf8_tif"])
def test_prepare_takes_any_file_name(tmp_path, capsys, monkeypatch, kind):
    raw = os.fsdecode(b"caf\xe9")  # a Latin-1 name: not UTF-8 (os.listdir gives a surrogate escape)
    names = {"spaces": ["scene one", "scene  two", "scene%20one", "s 3"], "not_utf8_png": [raw, "b", "c", raw + " 2"],
             "not_utf8_tif": [raw, "b", "c", "d"]}[kind]  # fmt: skip
    if kind == "not_utf8_tif":  # GDAL takes UTF-8 names only: prepare reads such files through a link
        pytest.importorskip("rasterio")
    try:
        src = source(tmp_path / "src", names, suffix=".tif" if kind == "not_utf8_tif" else ".png")
    except (UnicodeEncodeError, OSError) as err:
        pytest.skip(f"this file system does not take the name: {err}")
    out = tmp_path / "out"
    assert prepare_main(prepare_argv(src, out)) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert prepare_main(["check", "--out", str(out)]) == 0
    meta = json.loads((out / "semiearth.json").read_text())
    assert sorted(meta["scenes"]) == sorted(names) and len(meta["tiles"]) == 16
    for t in meta["tiles"]:  # tile files are safe names, and split lists name them
        assert (out / t["image"]).is_file() and " " not in t["image"] and t["image"].isascii()
    from semiearth.data.prepare import safe_name

    assert len({safe_name(n) for n in names}) == len(names)
    from semiearth.data import build_dataset

    cfg = load_config(None, [f"data.root={out}", "data.name=folder", "data.num_classes=3", "data.class_names=[a,b,c]",
                             "data.splits.labeled=splits/train.txt"])  # fmt: skip
    item = build_dataset(cfg.data, "labeled")[0]
    assert item["image"].shape == (3, 20, 20)


def nan_geotiff(path, nodata=None):
    from semiearth.data.io import write_geotiff

    data = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    data[:, 5, 7] = np.nan
    data[1, 30, 2] = np.inf
    write_geotiff(str(path), data, None, None, nodata)


@pytest.mark.parametrize("nodata", [None, -9999.0])
def test_prepare_refuses_nan_pixels_or_maps_them_to_the_declared_nodata(tmp_path, capsys, nodata):
    pytest.importorskip("rasterio")
    src = source(tmp_path / "src", ["a", "b", "c", "d"])
    for name in ("a", "b", "c", "d"):
        os.remove(src / "images" / f"{name}.png")
        nan_geotiff(src / "images" / f"{name}.tif", nodata)
    out = tmp_path / "out"
    rc = prepare_main(prepare_argv(src, out, "--value-scale", "1"))
    if nodata is None:
        assert rc == 1
        one_line(capsys, "a.tif", "2 pixel(s)", "NaN or inf", "row 5, column 7", "nodata")
        assert not out.exists()
        return
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert all(np.isfinite(s["mean"]).all() and np.isfinite(s["std"]).all() for s in summary["splits"].values())
    mask = np.asarray(Image.open(out / "masks" / "a_0_0_20_20.png"))
    assert mask[5, 7] == 255 and np.asarray(Image.open(out / "masks" / "a_0_20_20_40.png"))[10, 2] == 255


@pytest.mark.parametrize("where", ["file", "under_file", "read_only"])
def test_prepare_out_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, monkeypatch, where):
    import semiearth.cli.prepare as P

    monkeypatch.setattr(P, "prepare", never)
    src = source(tmp_path / "src", ["a", "b"])
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "out", "read_only": tmp_path / "ro" / "out"}[where]
    if where == "read_only":
        read_only(monkeypatch, tmp_path / "ro")
    assert prepare_main(prepare_argv(src, out)) == 1
    words = {"file": ["is a file"], "under_file": ["is a file, not a folder"], "read_only": ["cannot write in"]}
    one_line(capsys, "--out", str(out), *words[where])


def test_ctrl_c_in_prepare_is_one_line(tmp_path, capsys, monkeypatch):
    import semiearth.cli.prepare as P

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "prepare", interrupted)
    assert prepare_main(prepare_argv(source(tmp_path / "src", ["a"]), tmp_path / "out")) == 130
    one_line(capsys, "semiearth-prepare: interrupted (Ctrl-C)")


def test_prepare_disk_full_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import semiearth.data.prepare as P

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(P, "write_index_png", full)
    src = source(tmp_path / "src", ["a", "b", "c"])
    assert prepare_main(prepare_argv(src, tmp_path / "out")) == 1
    one_line(capsys, "semiearth-prepare: error:", "masks/a_0_0_20_20.png", "the disk is full")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


# ----------------------------------------------------------------------------- classifier weight files
TINY_CLIP = "SemiEarthTinyCLIPErrors"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    d = tmp_path_factory.mktemp("clipcfg")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (d / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    cfg["vision_cfg"]["width"] = 96
    (d / f"{TINY_CLIP}Wide.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / f"{TINY_CLIP}.json")
    open_clip.add_model_config(d / f"{TINY_CLIP}Wide.json")
    wide = open_clip.create_model(f"{TINY_CLIP}Wide", pretrained=None)
    torch.save(wide.state_dict(), d / "wide.pt")
    return d


class Foreign:  # a class the safe loader does not know
    pass


@pytest.mark.parametrize("kind", ["text", "empty", "other_architecture", "refused_pickle"])
def test_openclip_weight_files_of_the_wrong_kind_are_one_line(tmp_path, capsys, tiny_clip, kind):
    path = tmp_path / "w.pt"
    if kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 351\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other_architecture":
        path = tiny_clip / "wide.pt"
    else:
        torch.save({"state_dict": {"w": Foreign()}}, path)
    options = f"purify.classifier_options={{model: {TINY_CLIP}, pretrained: '{path}'}}"
    assert train_main(cli_args(tmp_path / "R", "purify=openclip", "purify.every=1", options)) == 2
    words = {
        "text": ["not a PyTorch or safetensors weight file", "a text file", "version https"],
        "empty": ["empty (0 bytes)"],
        "other_architecture": ["another architecture", "[64]", "[96]", "model"],
        "refused_pickle": ["Python objects", "Foreign", "safe loader (weights_only=True) refuses"],
    }[kind]
    line = one_line(capsys, "OpenClipClassifier", f"weight file {path}", f"open_clip state dict of {TINY_CLIP}", *words)
    assert "weights_only=False" not in line


def test_a_vlm_folder_with_junk_files_is_one_line(tmp_path, capsys):
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (folder / "model-00001-of-00002.safetensors").write_text("<html>404 Not Found</html>\n" * 4)
    options = f"purify.classifier_options={{model: '{folder}'}}"
    assert train_main(cli_args(tmp_path / "R", "purify=vlm", options)) == 2
    one_line(capsys, "HFVLMClassifier", "model-00001-of-00002.safetensors", "not a safetensors file", "expected")
    (folder / "config.json").write_text("{not json")
    assert train_main(cli_args(tmp_path / "R2", "purify=vlm", options)) == 2
    one_line(capsys, "HFVLMClassifier", "config.json", "not JSON")
