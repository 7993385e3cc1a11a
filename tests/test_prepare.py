"""semiearth-prepare: exact round trip, seeded reproducible splits, no overlap, ratios, summary, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semiearth.cli.prepare import main as prepare_main
from semiearth.data.classes import LOVEDA, colourise
from semiearth.data.io import DataError
from semiearth.data.prepare import assemble, check_splits, parse_ratio, prepare, tile_starts

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUIET = {"progress": False, "log": lambda *a: None}


def make_flat(root, n=6, h=50, w=70, seed=0):
    """A flat img/ + ann/ pair with raw LoveDA labels (0 no-data .. 7), sizes not multiples of tiles."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir()
    out = {}
    for i in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lab = rng.integers(0, 8, (h, w), dtype=np.uint8)
        Image.fromarray(img).save(root / "img" / f"s{i}.png")
        Image.fromarray(lab).save(root / "ann" / f"s{i}.png")
        out[f"s{i}"] = (img, lab)
    return out


def lists(out):
    return {p.relative_to(out / "splits").as_posix(): p.read_text() for p in sorted((out / "splits").rglob("*.txt"))}


def test_tile_starts_cover_exactly():
    assert tile_starts(70, 32, 32) == [0, 32, 38]
    assert tile_starts(64, 32, 32) == [0, 32]
    assert tile_starts(20, 32, 16) == [0]
    assert tile_starts(70, 32, 20) == [0, 20, 38]


@pytest.mark.parametrize("tile,stride", [(32, 32), (32, 20), (64, 64)])
def test_round_trip_exact(tmp_path, tile, stride):
    src = make_flat(tmp_path / "src")
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "out"), tile=tile, stride=stride, **QUIET)
    for name, (img, lab) in src.items():
        image, mask = assemble(str(tmp_path / "out"), name)
        assert np.array_equal(image, np.moveaxis(img, -1, 0)), name
        assert np.array_equal(mask, np.where(lab == 0, 255, lab - 1)), name
        # and back to the source encoding
        assert np.array_equal(np.where(mask == 255, 0, mask.astype(np.int64) + 1), lab)


def test_colour_round_trip(tmp_path):
    """Colour-coded source labels survive: colourise(prepared mask) == source colour label."""
    from semiearth.data.classes import ISPRS_PALETTE
    from semiearth.data.io import write_geotiff

    rng = np.random.default_rng(5)
    (tmp_path / "src" / "top").mkdir(parents=True)
    (tmp_path / "src" / "gts_for_participants").mkdir()
    labels = {}
    for a in (1, 2):
        write_geotiff(
            str(tmp_path / "src" / "top" / f"top_mosaic_09cm_area{a}.tif"),
            rng.integers(0, 256, (3, 45, 61), dtype=np.uint8),
        )
        lab = np.array(ISPRS_PALETTE, np.uint8)[rng.integers(0, 6, (45, 61))]
        write_geotiff(
            str(tmp_path / "src" / "gts_for_participants" / f"top_mosaic_09cm_area{a}.tif"), np.moveaxis(lab, -1, 0)
        )
        labels[a] = lab
    prepare("vaihingen", str(tmp_path / "src"), str(tmp_path / "out"), tile=16, stride=16, **QUIET)
    for a, lab in labels.items():
        _, mask = assemble(str(tmp_path / "out"), f"area{a}")
        assert np.array_equal(colourise(mask, ISPRS_PALETTE), lab)


def test_splits_seeded_disjoint_nested(tmp_path):
    make_flat(tmp_path / "src", n=12, h=64, w=64)
    kw = dict(tile=32, ratios=["1/100", "5/100", "10/100", "1/4", "0.5"], **QUIET)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "a"), seed=3, **kw)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "b"), seed=3, **kw)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "c"), seed=4, **kw)
    la, lc = lists(tmp_path / "a"), lists(tmp_path / "c")
    assert la == lists(tmp_path / "b")  # same seed: identical lists
    assert la != lc
    assert {
        "1_100/labeled.txt",
        "5_100/labeled.txt",
        "10_100/labeled.txt",
        "1_4/labeled.txt",
        "1_2/labeled.txt",
    } <= set(la)
    meta = json.loads((tmp_path / "a" / "semiearth.json").read_text())
    assert meta["split_level"] == "scene"
    scene_of = {t["name"]: t["scene"] for t in meta["tiles"]}

    def names(rel):
        return {Path(ln.split()[0]).stem for ln in la[rel].splitlines()}

    train, val, test = names("train.txt"), names("val.txt"), names("test.txt")
    assert not (train & val or train & test or val & test)
    assert not ({scene_of[n] for n in train} & {scene_of[n] for n in val | test})  # whole scenes held out
    assert len({scene_of[n] for n in val}) == 1 and len(train) == 40  # 12 scenes: 1 val, 1 test, 10 x 4 tiles
    prev = set()
    for tag, k in (("1_100", 1), ("5_100", 2), ("10_100", 4), ("1_4", 10), ("1_2", 20)):
        lab, unl = names(f"{tag}/labeled.txt"), names(f"{tag}/unlabeled.txt")
        assert len(lab) == k and not (lab & unl) and lab | unl == train
        assert prev <= lab  # nested
        prev = lab
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    s = summary["splits"]["train"]
    assert s["tiles"] == 40 and abs(sum(s["frequency"].values()) - 1) < 1e-9
    assert set(s["pixels"]) == set(LOVEDA.class_names) and s["ignore_pixels"] > 0
    assert (tmp_path / "a" / "summary.md").read_text().startswith("class frequencies")
    # tampering is caught by the overlap check
    (tmp_path / "a" / "splits" / "val.txt").write_text(la["val.txt"] + la["train.txt"].splitlines()[0] + "\n")
    with pytest.raises(DataError, match="in both train and val"):
        check_splits(str(tmp_path / "a"))
    assert prepare_main(["check", "--out", str(tmp_path / "b")]) == 0


def test_tile_level_holdout_needs_disjoint_tiles(tmp_path):
    make_flat(tmp_path / "src", n=1, h=96, w=96)
    prepare("loveda", str(tmp_path / "src"), str(tmp_path / "o"), tile=32, **QUIET)
    meta = json.loads((tmp_path / "o" / "semiearth.json").read_text())
    assert meta["split_level"] == "tile"
    check_splits(str(tmp_path / "o"))
    with pytest.raises(DataError, match="--stride >= --tile"):
        prepare("loveda", str(tmp_path / "src"), str(tmp_path / "o2"), tile=32, stride=16, **QUIET)


def test_ratio_parsing_and_cli_errors(tmp_path, capsys):
    assert parse_ratio("1/100") == parse_ratio("0.01") == parse_ratio("1%")
    with pytest.raises(ValueError):
        parse_ratio("2")
    assert prepare_main(["loveda", "--src", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "source folder not found" in capsys.readouterr().err
    make_flat(tmp_path / "src", n=3)
    Image.fromarray(np.full((50, 70), 9, np.uint8)).save(tmp_path / "src" / "ann" / "s1.png")
    assert prepare_main(["loveda", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "s1.png: 9: 3500 px" in err and "--on-unknown ignore" in err
    Image.fromarray(np.full((40, 70), 1, np.uint8)).save(tmp_path / "src" / "ann" / "s1.png")
    assert prepare_main(["loveda", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "s1.png is 70x40" in capsys.readouterr().err
    Image.fromarray(np.full((50, 70), 1, np.uint8)).save(tmp_path / "src" / "ann" / "s1.png")
    argv = ["loveda", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--tile", "32", "--no-progress"]
    assert prepare_main(argv) == 0
    assert "semiearth-train --config loveda" in capsys.readouterr().out
    assert prepare_main(argv) == 1 and "not empty" in capsys.readouterr().err
    assert prepare_main([*argv, "--overwrite"]) == 0


def test_real_loveda_round_trip(tmp_path):
    if not (SHARED / "loveda" / "img" / "0.png").exists():
        pytest.skip(f"real LoveDA tiles not found at {SHARED / 'loveda'} (../shared/data is absent outside CI)")
    prepare(
        "loveda", str(SHARED / "loveda"), str(tmp_path / "out"), tile=512, stride=384, val_frac=0, test_frac=0, **QUIET
    )
    for i in range(3):
        image, mask = assemble(str(tmp_path / "out"), str(i))
        assert np.array_equal(image, np.moveaxis(np.array(Image.open(SHARED / "loveda" / "img" / f"{i}.png")), -1, 0))
        raw = np.array(Image.open(SHARED / "loveda" / "ann" / f"{i}.png"))
        assert np.array_equal(mask, np.where(raw == 0, 255, raw - 1))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["splits"]["train"]["tiles"] == 27 and summary["splits"]["train"]["pixels"]["barren"] == 0
