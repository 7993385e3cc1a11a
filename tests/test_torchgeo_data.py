"""data.name torchgeo: each supported torchgeo dataset, written in its own on-disk layout
(tests/torchgeo_layouts.py), read through torchgeo into SemiEarth's item contract, split by
semiearth-prepare's seeded scene-level code, and trained 2 iterations; bad input is one line."""

import numpy as np
import pytest
import torch
import torchgeo_layouts as layouts
from helpers import TINY_RUN

pytest.importorskip("torchgeo", reason="the [torchgeo] extra is not installed (pip install -e .[torchgeo])")

from semiearth.config import ConfigError, load_config  # noqa: E402
from semiearth.data import build_dataset  # noqa: E402
from semiearth.data.io import DataError  # noqa: E402
from semiearth.data.prepare import labeled_split  # noqa: E402
from semiearth.data.torchgeo import SOURCES, class_names  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore:.*geotransform.*")
# the classes SemiEarth trains (torchgeo's `classes` less the no-data entry), per dataset
EXPECTED = {
    "LoveDA": ["background", "building", "road", "water", "barren", "forest", "agriculture"],
    "Potsdam2D": ["Clutter/background", "Impervious surfaces", "Building", "Low Vegetation", "Tree", "Car"],
    "Vaihingen2D": ["Clutter/background", "Impervious surfaces", "Building", "Low Vegetation", "Tree", "Car"],
    "DeepGlobeLandCover": ["Urban land", "Agriculture land", "Rangeland", "Forest land", "Water", "Barren land"],
}


def torchgeo_sets(name: str, root, **options) -> list[str]:
    """--set overrides that read torchgeo dataset `name` at `root` with its class table."""
    names = class_names(name)
    opts = ", ".join(f"{k}: {v}" for k, v in {"dataset": name, "ratio": "1/4", **options}.items())
    return [
        "data.name=torchgeo",
        f"data.root={root}",
        f"data.num_classes={len(names)}",
        "data.class_names=[" + ", ".join(f"'{n}'" for n in names) + "]",
        f"data.options={{{opts}}}",
    ]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("torchgeo")
    return {name: build(str(base / name), n_train=5) for name, build in layouts.BUILDERS.items()}


def test_every_supported_dataset_has_a_layout_builder():
    assert set(layouts.BUILDERS) == set(SOURCES)


@pytest.mark.parametrize("name", list(SOURCES))
def test_items_follow_the_contract_and_splits_are_disjoint(roots, name):
    assert class_names(name) == EXPECTED[name]
    cfg = load_config(None, torchgeo_sets(name, roots[name]))
    parts = {s: build_dataset(cfg.data, s) for s in ("labeled", "unlabeled", "val", "test")}
    for split, ds in parts.items():
        item = ds[0]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
        assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == (64, 64)
        values = set(item["mask"].unique().tolist())
        assert values <= set(range(len(EXPECTED[name]))) | {255}, (split, values)
        if split == "unlabeled":
            assert values == {255}
        assert len({ds[i]["name"] for i in range(len(ds))}) == len(ds)
    pool = {n for s in ("labeled", "unlabeled", "val") for n, *_ in parts[s].items}
    assert sum(len(parts[s]) for s in ("labeled", "unlabeled", "val")) >= len(pool)  # scene-level: no overlap
    labelled = {n for n, *_ in parts["labeled"].items}
    assert not labelled & {n for n, *_ in parts["unlabeled"].items}
    assert not (labelled | {n for n, *_ in parts["unlabeled"].items}) & {n for n, *_ in parts["val"].items}


def test_labelled_share_is_prepares_seeded_draw(roots):
    """The labelled samples are what semiearth-prepare's labeled_split draws from the train pool."""
    cfg = load_config(None, torchgeo_sets("Potsdam2D", roots["Potsdam2D"], seed=3))
    lab, unl, val = (build_dataset(cfg.data, s) for s in ("labeled", "unlabeled", "val"))
    pool = sorted(n for d in (lab, unl) for n, *_ in d.items)
    assert [n for n, *_ in lab.items] == labeled_split(pool, 0.25, 3)[0]
    assert len(val) == 1 and val.items[0][0] not in pool  # held out scene-wise (val_frac 0.1 of 5)


def test_encodings_loveda_nodata_and_deepglobe_unknown_become_ignore(tmp_path):
    """LoveDA raw 0 (no-data) and DeepGlobe's Unknown (black) are ignore; the classes shift to 0.."""
    root = layouts.loveda(str(tmp_path / "loveda"), n_train=3, n_test=1)
    cfg = load_config(None, torchgeo_sets("LoveDA", root, val_frac=0, test_frac=0))
    ds = build_dataset(cfg.data, "labeled")
    from PIL import Image

    for i in range(len(ds)):
        name = ds.items[i][0]
        raw = np.asarray(Image.open(next((tmp_path / "loveda" / "Train").glob(f"*/masks_png/{name}.png"))))
        mask = ds[i]["mask"].numpy()
        assert (mask[raw == 0] == 255).all() and (mask[raw > 0] == raw[raw > 0] - 1).all()
    root = layouts.deepglobe(str(tmp_path / "dg"), n_train=3, n_test=1)
    ds = build_dataset(load_config(None, torchgeo_sets("DeepGlobeLandCover", root)).data, "test")
    sample = ds.parts["test"][0][0]
    assert (ds[0]["mask"].numpy()[sample["mask"].numpy() == 6] == 255).all()


@pytest.mark.parametrize("name", list(SOURCES))
def test_trains_two_iterations(tmp_path, roots, name):
    from semiearth.train import train

    quick = [
        *TINY_RUN,
        "train.iters=2",
        "train.eval_every=0",
        "train.ckpt_every=0",
        "train.panel_every=0",
        "train.threads=1",
    ]
    cfg = load_config(None, [*quick, *torchgeo_sets(name, roots[name]), f"out_dir={tmp_path}"])
    result = train(cfg)
    assert not result["interrupted"] and 0 <= result["test"]["mIoU"] <= 1


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_unknown_torchgeo_dataset_names_the_supported_ones(tmp_path):
    """Refused when the config is loaded (semiearth.options.TorchgeoOptions), before any data is read."""
    sets = ["data.name=torchgeo", f"data.root={tmp_path}", "data.num_classes=7", "data.options={dataset: LoVEDA}"]
    with pytest.raises(ConfigError) as err:
        load_config(None, sets)
    assert all(w in one_line(err) for w in ("'LoVEDA'", "LoveDA, Potsdam2D, Vaihingen2D, DeepGlobeLandCover"))
    with pytest.raises(ConfigError) as err:
        load_config(None, [*sets[:3], "data.options={dataset: LoveDA, ratoi: 1/8}"])
    assert all(w in one_line(err) for w in ("data.options.ratoi", "did you mean 'ratio'"))


def test_a_split_without_masks_as_labelled_data_names_the_fix(roots):
    cfg = load_config(None, torchgeo_sets("LoveDA", roots["LoveDA"], splits="{train: train, test: val}"))
    with pytest.raises(DataError) as err:
        build_dataset(cfg.data, "labeled")
    assert "split 'test' has no masks" in one_line(err) and "data.options.splits.test=unlabeled" in one_line(err)


def test_wrong_class_table_and_missing_data_name_the_fix(tmp_path, roots):
    sets = torchgeo_sets("Potsdam2D", roots["Potsdam2D"])
    cfg = load_config(None, [s for s in sets if not s.startswith("data.class_names")])  # Potsdam's default order
    with pytest.raises(DataError) as err:
        build_dataset(cfg.data, "labeled")
    assert "data.class_names=\"['Clutter/background'" in one_line(err)
    cfg = load_config(None, torchgeo_sets("Vaihingen2D", tmp_path))
    with pytest.raises(DataError) as err:
        build_dataset(cfg.data, "labeled")
    assert "set data.root to the folder you pass to torchgeo's Vaihingen2D(root=...)" in one_line(err)


def test_cli_reports_a_torchgeo_data_error_in_one_line(tmp_path, capsys):
    from helpers import cli_args, one_line_error

    from semiearth.cli.train import main

    sets = ("data.name=torchgeo", f"data.root={tmp_path}", "data.num_classes=6", "data.options={dataset: Potsdam}")
    assert main(cli_args(tmp_path / "run", *sets)) == 2  # a config error, before any data is read
    one_line_error(capsys, "data.options.dataset", "'Potsdam'", "Potsdam2D")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ("{dataset: LoveDA, ratio: 2}", ["ratio"]),
        ("{dataset: LoveDA, splits: {train: train, tset: test}}", ["no split 'tset'", "train, val, test"]),
        ("{dataset: LoveDA, kwargs: {scene: [suburban]}}", ["LoveDA(root=", "failed", "check data.options.kwargs"]),
    ],
)
def test_bad_options_name_the_key(roots, options, words):
    sets = [s for s in torchgeo_sets("LoveDA", roots["LoveDA"]) if not s.startswith("data.options")]
    cfg = load_config(None, [*sets, f"data.options={options}"])
    with pytest.raises(DataError) as err:
        build_dataset(cfg.data, "labeled")
    assert all(w in one_line(err) for w in words)
