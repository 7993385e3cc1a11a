"""semiearth-prepare --protocol semiearth: the SemiEarth authors' split (all labelled patches of all
scenes shuffled 60/20/20, then int(p x train) labelled), seeded, with its warning; the default
scene-level split unchanged; every preparable dataset."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_deepglobe import make_deepglobe
from test_prepare import lists, make_flat

from semiearth.cli.prepare import main as prepare_main
from semiearth.data.classes import ISPRS_PALETTE
from semiearth.data.io import DataError
from semiearth.data.prepare import PATCH_WARNING, check_splits, patch_split, prepare
from semiearth.data.registry import preparable_datasets

QUIET = {"progress": False, "log": lambda *a: None}


def names(out: Path, rel: str) -> set[str]:
    text = (out / "splits" / rel).read_text() if (out / "splits" / rel).is_file() else ""
    return {Path(ln.split()[0]).stem for ln in text.splitlines()}


def scene_of(out: Path) -> dict[str, str]:
    return {t["name"]: t["scene"] for t in json.loads((out / "semiearth.json").read_text())["tiles"]}


def test_patch_split_counts_and_seed():
    pool = [f"p{i:03d}" for i in range(96)]
    tr, va, te = patch_split(pool, 0.2, 0.2, seed=0)
    assert (len(tr), len(va), len(te)) == (57, 19, 20)  # int(0.6 n), int(0.2 n), the rest (the authors' rule)
    assert sorted(tr + va + te) == pool
    assert patch_split(pool, 0.2, 0.2, seed=0) == (tr, va, te) and patch_split(pool, 0.2, 0.2, seed=1)[0] != tr
    assert patch_split(pool[::-1], 0.2, 0.2, seed=0) == (tr, va, te)  # the input order does not matter
    assert [len(s) for s in patch_split(pool[:5], 0.2, 0.2, 0)] == [3, 1, 1]
    with pytest.raises(DataError, match="only 2 labelled patch"):
        patch_split(pool[:2], 0.2, 0.2, 0)


def test_semiearth_protocol_split(tmp_path, capsys):
    make_flat(tmp_path / "src", n=6, h=64, w=64)  # 6 scenes x 16 tiles of 16 px = 96 patches
    kw = dict(tile=16, protocol="semiearth", **QUIET)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "a"), seed=3, **kw)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "b"), seed=3, **kw)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "c"), seed=4, **kw)
    a = tmp_path / "a"
    assert lists(a) == lists(tmp_path / "b") and lists(a) != lists(tmp_path / "c")  # seeded, reproducible
    train, val, test = names(a, "train.txt"), names(a, "val.txt"), names(a, "test.txt")
    assert (len(train), len(val), len(test)) == (57, 19, 20) and not (train & val or train & test or val & test)
    scene = scene_of(a)
    by_split = [{scene[n] for n in s} for s in (train, val, test)]
    assert by_split[0] & by_split[2] and by_split[0] & by_split[1]  # patches of one scene in several splits
    prev = set()
    for tag, k in (("1_100", 1), ("5_100", 2), ("10_100", 5)):  # int(p * 57), at least 1
        lab, unl = names(a, f"{tag}/labeled.txt"), names(a, f"{tag}/unlabeled.txt")
        assert len(lab) == k and lab | unl == train and not lab & unl and prev <= lab
        prev = lab
    meta = json.loads((a / "semiearth.json").read_text())
    assert meta["protocol"] == "semiearth" and meta["split_level"] == "patch" and meta["warning"] == PATCH_WARNING
    check_splits(str(a))  # disjoint tiles, scenes may straddle at patch level
    md = (a / "summary.md").read_text()
    assert md.startswith("**WARNING (protocol semiearth)**") and "straddle" in md and "6 scene(s)" in md
    summary = json.loads((a / "summary.json").read_text())
    assert summary["protocol"] == "semiearth" and summary["warning"] == PATCH_WARNING
    argv = ["loveda", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "d"), "--tile", "16", "--no-progress"]
    capsys.readouterr()
    assert prepare_main([*argv, "--protocol", "semiearth", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("semiearth-prepare: warning: --protocol semiearth") and "straddle" in captured.err
    assert "**WARNING (protocol semiearth)**" in captured.out  # summary.md, printed at the end
    assert lists(tmp_path / "d") == lists(a)


def test_default_protocol_unchanged(tmp_path):
    make_flat(tmp_path / "src", n=6, h=64, w=64)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "a"), tile=16, seed=3, **QUIET)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "b"), tile=16, seed=3, protocol="scene", **QUIET)
    a = tmp_path / "a"
    assert lists(a) == lists(tmp_path / "b")
    scene = scene_of(a)
    groups = [{scene[n] for n in names(a, f"{s}.txt")} for s in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert [len(g) for g in groups] == [4, 1, 1]
    assert len(names(a, "1_100/labeled.txt")) == 1 and len(names(a, "10_100/labeled.txt")) == 6  # round(0.1 * 64)
    assert (a / "summary.md").read_text().startswith("class frequencies")
    meta = json.loads((a / "semiearth.json").read_text())
    assert meta["protocol"] == "scene" and "warning" not in meta
    with pytest.raises(ValueError, match="unknown --protocol 'patch'"):
        prepare("loveda", str(tmp_path / "src"), str(tmp_path / "x"), protocol="patch", **QUIET)


def test_official_roles_are_pooled(tmp_path):
    """The authors pool every labelled tile (Potsdam's official test tiles too); images without public
    masks (DeepGlobe valid/, test/) stay unlabeled_only and out of the ratio lists, as in their splits."""
    make_deepglobe(tmp_path / "src", n=4, size=64, valid=2, test=1)
    out = tmp_path / "o"
    prepare("deepglobe", str(tmp_path / "src"), str(out), tile=16, protocol="semiearth", **QUIET)
    assert len(names(out, "train.txt") | names(out, "val.txt") | names(out, "test.txt")) == 64
    extra = names(out, "unlabeled_only.txt")
    assert len(extra) == 48 and not extra & names(out, "10_100/unlabeled.txt")


# ---------------------------------------------------------------------------- every preparable dataset
def _rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _loveda(root, rng):
    make_flat(root, n=3, h=32, w=32)


def _deepglobe(root, rng):
    make_deepglobe(root, n=3, size=32, valid=0, test=0)


def _folder(root, rng):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        Image.fromarray(_rgb(rng, 32, 32)).save(root / "images" / f"f{i}.png")
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / "masks" / f"f{i}.png")


def _isprs_label(rng, h, w):
    return np.moveaxis(np.array(ISPRS_PALETTE, np.uint8)[rng.integers(0, 6, (h, w))], -1, 0)


def _vaihingen(root, rng):
    from semiearth.data.io import write_geotiff

    (root / "top").mkdir(parents=True)
    (root / "gts_for_participants").mkdir()
    for a in (1, 2, 3):
        write_geotiff(str(root / "top" / f"top_mosaic_09cm_area{a}.tif"), np.moveaxis(_rgb(rng, 32, 32), -1, 0))
        write_geotiff(str(root / "gts_for_participants" / f"top_mosaic_09cm_area{a}.tif"), _isprs_label(rng, 32, 32))


def _potsdam(root, rng):
    from semiearth.data.io import write_geotiff

    (root / "2_Ortho_RGB").mkdir(parents=True)
    (root / "5_Labels_all").mkdir()
    for key in ("2_10", "2_13", "3_10"):  # official train and test tiles
        write_geotiff(str(root / "2_Ortho_RGB" / f"top_potsdam_{key}_RGB.tif"), np.moveaxis(_rgb(rng, 32, 32), -1, 0))
        write_geotiff(str(root / "5_Labels_all" / f"top_potsdam_{key}_label.tif"), _isprs_label(rng, 32, 32))


def _openearthmap(root, rng):
    from semiearth.data.io import write_geotiff

    (root / "kyoto" / "images").mkdir(parents=True)
    (root / "kyoto" / "labels").mkdir()
    for i in range(3):
        write_geotiff(str(root / "kyoto" / "images" / f"kyoto_{i}.tif"), np.moveaxis(_rgb(rng, 32, 32), -1, 0))
        write_geotiff(str(root / "kyoto" / "labels" / f"kyoto_{i}.tif"), rng.integers(1, 9, (32, 32), dtype=np.uint8))
    (root / "train.txt").write_text("kyoto_0.tif\nkyoto_1.tif\n")
    (root / "test.txt").write_text("kyoto_2.tif\n")


BUILDERS = {
    "loveda": _loveda,
    "potsdam": _potsdam,
    "vaihingen": _vaihingen,
    "openearthmap": _openearthmap,
    "deepglobe": _deepglobe,
    "folder": _folder,
}


@pytest.mark.parametrize("dataset", [d for d in BUILDERS if d in preparable_datasets()])
def test_every_preparable_dataset(tmp_path, dataset):
    BUILDERS[dataset](tmp_path / "src", np.random.default_rng(0))
    out = tmp_path / "o"
    extra = {"num_classes": 3} if dataset == "folder" else {}
    prepare(dataset, str(tmp_path / "src"), str(out), tile=8, protocol="semiearth", **extra, **QUIET)
    train, val, test = (names(out, f"{s}.txt") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (28, 9, 11)  # 3 scenes x 16 patches: int(0.6 * 48), int(0.2 * 48)
    assert json.loads((out / "semiearth.json").read_text())["split_level"] == "patch"
    assert (out / "summary.md").read_text().startswith("**WARNING")
