"""semiearth-prepare refuses what would otherwise pass silently (issue 11, case 6): another dataset's
colour labels saved as palette PNGs, a grayscale scene among RGB ones, shares outside [0, 1)."""

import numpy as np
import pytest
from PIL import Image

from semiearth.cli.prepare import main
from semiearth.data.classes import ISPRS_PALETTE, LOVEDA
from semiearth.data.prepare import prepare

QUIET = {"progress": False, "log": lambda *a: None}


def flat_source(root, n=4, size=40, seed=0):
    """img/ + ann/ with RGB images and raw LoveDA index labels (0 no-data .. 7)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "img" / f"s{i}.png")
        Image.fromarray(rng.integers(0, 8, (size, size), dtype=np.uint8)).save(root / "ann" / f"s{i}.png")
    return root


def palette_png(path, index, colours):
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette([c for rgb in colours for c in rgb])
    im.save(path)


def test_potsdam_coloured_palette_labels_are_refused_for_loveda(tmp_path, capsys):
    src = flat_source(tmp_path / "src")
    index = np.random.default_rng(1).integers(0, 6, (40, 40))
    palette_png(src / "ann" / "s2.png", index, ISPRS_PALETTE)  # Potsdam colours, indices 0..5
    argv = ["loveda", "--src", str(src), "--out", str(tmp_path / "out"), "--tile", "20", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "s2.png" in err and "not loveda's" in err and "semiearth-prepare potsdam" in err
    cyan = int((index == 2).sum())  # low vegetation, a colour LoveDA's palette does not have
    assert f"RGB(0, 255, 255): {cyan} px" in err
    assert not (tmp_path / "out").exists()


def test_palette_labels_in_the_datasets_own_colours_or_gray_are_indices(tmp_path):
    src = flat_source(tmp_path / "src")
    raw = np.random.default_rng(2).integers(0, 8, (40, 40))
    own = [(0, 0, 0)] + [tuple(c) for c in LOVEDA.palette]  # raw v -> colour of its train id v - 1
    palette_png(src / "ann" / "s1.png", raw, own)
    palette_png(src / "ann" / "s3.png", raw, [(v, v, v) for v in range(256)])
    prepare("loveda", str(src), str(tmp_path / "out"), tile=20, **QUIET)


def test_potsdam_palette_labels_are_read_as_colours(tmp_path):
    from semiearth.data.classes import POTSDAM
    from semiearth.data.io import Scene
    from semiearth.data.prepare import convert_label

    index = np.random.default_rng(3).integers(0, 6, (16, 16))
    palette_png(tmp_path / "l.png", index, ISPRS_PALETTE)
    scene = Scene("l", "", str(tmp_path / "l.png"), "pool", "colour", POTSDAM.colour_encoding)
    mask, unknown = convert_label(scene, "error")
    assert not unknown and np.array_equal(mask, index)


def test_grayscale_scene_among_rgb_is_refused(tmp_path, capsys):
    src = flat_source(tmp_path / "src", n=5)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(src / "img" / "s3.png")  # one grayscale scene
    assert main(["loveda", "--src", str(src), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "1 of 5 scene image(s)" in err and "s3.png (1 band(s))" in err and "3" in err


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--val-frac", "1.5"], "--val-frac must be a share in [0, 1), got 1.5"),
        (["--test-frac", "-0.1"], "--test-frac must be a share in [0, 1), got -0.1"),
        (["--val-frac", "0.6", "--test-frac", "0.5"], "--val-frac + --test-frac must be < 1"),
        (["--stride", "0"], "--tile and --stride must be >= 1"),
    ],
)
def test_bad_shares_and_strides_are_refused(tmp_path, capsys, extra, words):
    src = flat_source(tmp_path / "src", n=2)
    assert main(["loveda", "--src", str(src), "--out", str(tmp_path / "out"), "--no-progress", *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err, err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o002, 0o775)])
def test_prepared_folder_follows_the_umask(tmp_path, umask, mode):
    """The prepared folder is built in a temporary sibling (mkdtemp: 0700) and renamed: it must end
    with the permissions of any folder the user creates."""
    import os

    src = flat_source(tmp_path / "src", n=5)
    old = os.umask(umask)
    try:
        assert main(["loveda", "--src", str(src), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "out").st_mode & 0o777 == mode
