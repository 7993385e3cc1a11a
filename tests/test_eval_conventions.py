"""Evaluation conventions (issue 22, item 1): classes excluded from a mean reported beside the full
one, ground truth eroded at class boundaries, and tables/JSON that name the convention, including
which labels the ground truth is (ISPRS eroded or full, as semiearth-prepare recorded it)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import cli_args, one_line_error, save_tiny_checkpoint

from semiearth.config import ConfigError, load_config
from semiearth.eval.metrics import SegMetric, erode_boundaries, format_table, metrics_from_confusion

NAMES = ["road", "building", "clutter"]


def test_excluded_mean_equals_a_hand_computation():
    # rows = target, columns = prediction
    conf = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 1, 4]])
    m = metrics_from_confusion(conf, NAMES, exclude=["clutter"])
    iou_road, iou_building, iou_clutter = 5 / (6 + 7 - 5), 3 / (6 + 5 - 3), 4 / (5 + 5 - 4)
    f1_road, f1_building = 2 * 5 / (6 + 7), 2 * 3 / (6 + 5)
    assert math.isclose(m["mIoU"], (iou_road + iou_building + iou_clutter) / 3)  # the full mean stays
    assert math.isclose(m["mIoU_excluded"], (iou_road + iou_building) / 2)
    assert math.isclose(m["mF1_excluded"], (f1_road + f1_building) / 2)
    # a bare confusion matrix cannot tell which labels it counts: it claims neither full nor eroded
    assert m["protocol"]["full"] == "3 classes, labels unknown"
    assert m["protocol"]["excluded"] == "2 classes, clutter excluded, labels unknown"
    assert "mIoU_excluded" not in metrics_from_confusion(conf, NAMES)


def reference_near_boundary(target: torch.Tensor, radius: int, ignore: int) -> torch.Tensor:
    """Pixels within `radius` (square window) of another class: dilate each class's mask with a
    max-pool and count the classes whose dilation reaches the pixel."""
    reach = torch.zeros(target.shape, dtype=torch.int64)
    for c in target.unique().tolist():
        if c == ignore:
            continue
        mask = (target == c).float()[None, None]
        reach += F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)[0, 0].long()
    return (reach > 1) & (target != ignore)


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_erosion_ignores_exactly_the_pixels_near_a_boundary(radius):
    g = torch.Generator().manual_seed(radius)
    target = torch.randint(0, 4, (6, 8), generator=g).repeat_interleave(4, 0).repeat_interleave(4, 1)
    target[3:7, 20:26] = 255  # no-data makes no boundary
    eroded = erode_boundaries(target, radius, 255)
    expected = reference_near_boundary(target, radius, 255) if radius else torch.zeros_like(target, dtype=torch.bool)
    assert torch.equal(eroded == 255, expected | (target == 255))
    assert torch.equal(eroded[eroded != 255], target[eroded != 255])
    metric = SegMetric(4, 255, erosion=radius)
    metric.update(target, target)
    assert int(metric.conf.sum()) == int((eroded != 255).sum())


def test_tables_name_the_convention():
    conf = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 1, 4]])
    metrics = metrics_from_confusion(conf, NAMES, ["clutter"], 3, labels="ISPRS full labels")
    table = format_table({"test": metrics}, NAMES)
    assert "mIoU (3 classes, ISPRS full labels, boundaries eroded 3 px)" in table
    assert "mIoU (2 classes, clutter excluded, ISPRS full labels, boundaries eroded 3 px)" in table
    assert table.splitlines()[0].startswith("evaluation: 3 classes, ISPRS full labels, boundaries eroded 3 px")
    assert "mIoU (3 classes, labels unknown)" in format_table({"t": metrics_from_confusion(conf, NAMES)}, NAMES)


def test_unknown_class_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        load_config("potsdam", ["eval.exclude_classes=[clutter, cars]"])
    text = str(err.value)
    assert "\n" not in text and "'cars'" in text and "impervious_surface" in text and "clutter" in text
    with pytest.raises(ConfigError, match="boundary_erosion"):
        load_config(None, ["eval.boundary_erosion=-1"])
    with pytest.raises(ConfigError, match="select_best"):
        load_config(None, ["eval.select_best=excluded"])


def test_isprs_configs_state_the_default():
    for path in ("potsdam", "potsdam_dinov2", "vaihingen"):
        cfg = load_config(path)
        assert cfg.eval.exclude_classes == ["clutter"] and cfg.eval.boundary_erosion == 0
        assert cfg.eval.select_best == "full"


def test_results_json_and_txt_name_the_convention(tmp_path):
    from semiearth.cli.train import main

    out = tmp_path / "run"
    assert main(cli_args(out, "train.iters=2", "eval.exclude_classes=[clutter]", "eval.boundary_erosion=2")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["excluded"] == "5 classes, clutter excluded, synthetic labels, boundaries eroded 2 px"
    assert "mIoU_excluded" in results["test"] and "mIoU" in results["test"]
    text = (out / "results.txt").read_text()
    assert "mIoU (6 classes, synthetic labels, boundaries eroded 2 px)" in text
    assert "mIoU (5 classes, clutter excluded, synthetic labels, boundaries eroded 2 px)" in text


def test_semiearth_eval_prints_both_means(tmp_path, capsys):
    from semiearth.cli.evaluate import main

    ckpt = tmp_path / "tiny.pth"
    save_tiny_checkpoint(ckpt)
    data = "data.options={size: 40, labeled: 2, unlabeled: 2, val: 2, test: 2}"
    argv = ["--checkpoint", str(ckpt), "--set", data, "--json", str(tmp_path / "m.json")]
    assert main([*argv, "--set", "eval.exclude_classes=[clutter]"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU (6 classes, synthetic labels)" in printed
    assert "mIoU (5 classes, clutter excluded, synthetic labels)" in printed
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["protocol"]["exclude_classes"] == ["clutter"] and "mIoU_excluded" in saved
    assert main([*argv, "--set", "eval.exclude_classes=[nope]"]) == 2
    one_line_error(capsys, "nope", "valid:", "clutter")


def prepared_potsdam(tmp_path, eroded: bool):
    """A folder prepared by semiearth-prepare potsdam from small official-layout scenes with the
    eroded (*_noBoundary) or the full colour labels; returns its path."""
    pytest.importorskip("rasterio")
    from test_data_isprs import QUIET, make_potsdam

    from semiearth.data.prepare import prepare

    src, out = tmp_path / f"src_{eroded}", tmp_path / f"out_{eroded}"
    make_potsdam(src, h=40, w=40, eroded=eroded)
    prepare("potsdam", str(src), str(out), tile=32, stride=32, **QUIET)
    return out


def test_header_names_the_labels_that_prepare_used(tmp_path, capsys):
    from semiearth.cli.evaluate import main
    from semiearth.config import DataConfig
    from semiearth.eval.evaluate import ground_truth_labels

    ckpt = tmp_path / "tiny.pth"
    save_tiny_checkpoint(ckpt)
    for eroded, labels in ((True, "ISPRS eroded labels"), (False, "ISPRS full labels")):
        root = prepared_potsdam(tmp_path, eroded)
        assert ground_truth_labels(DataConfig(name="potsdam", root=str(root))) == labels
        sets = ["data.name=potsdam", "data.options={}", f"data.root={root}", "data.splits.test=splits/test.txt"]
        sets += ["eval.window=32"]
        sets += ["eval.exclude_classes=[clutter]", "eval.boundary_erosion=2"]
        argv = ["--checkpoint", str(ckpt), "--json", str(tmp_path / "m.json")]
        assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
        printed = capsys.readouterr().out
        assert (
            f"evaluation: 6 classes, {labels}, boundaries eroded 2 px; beside it: 5 classes, clutter excluded"
            in printed
        )
        assert f"mIoU (6 classes, {labels}, boundaries eroded 2 px)" in printed
        saved = json.loads((tmp_path / "m.json").read_text())["protocol"]
        assert saved["labels"] == labels and saved["boundary_erosion"] == 2


def test_labels_unknown_or_mixed_are_said_so(tmp_path):
    from semiearth.config import DataConfig
    from semiearth.eval.evaluate import ground_truth_labels

    assert ground_truth_labels(DataConfig(name="potsdam", root=str(tmp_path))) == (
        "labels unknown: no semiearth.json in data.root"
    )
    assert ground_truth_labels(DataConfig(name="potsdam", root="")).startswith("labels unknown")
    assert ground_truth_labels(DataConfig()) == "synthetic labels"

    def meta(root, dataset, labels):
        root.mkdir()
        scenes = {f"s{i}": {"label": label} for i, label in enumerate(labels)}
        (root / "semiearth.json").write_text(json.dumps({"dataset": dataset, "scenes": scenes}))
        return DataConfig(name=dataset, root=str(root))

    mixed = ["/d/top_potsdam_2_10_label_noBoundary.tif", "/d/top_potsdam_2_11_label.tif", "/d/ann_dir/x.png"]
    cases = {
        "mixed": (meta(tmp_path / "mixed", "potsdam", mixed), "ISPRS labels mixed: eroded for 1 scenes, full for 1 "
                  "scenes, eroded or full unknown for 1 scenes"),
        "mmseg": (meta(tmp_path / "mmseg", "vaihingen", ["/d/ann_dir/train/a.png"]), "ISPRS labels, eroded or full unknown"),
        "vaihingen": (meta(tmp_path / "v", "vaihingen", ["/g/top_mosaic_09cm_area1_noBoundary.tif"]), "ISPRS eroded labels"),
        "loveda": (meta(tmp_path / "l", "loveda", ["/L/Train/Urban/masks_png/1.png"]), "loveda labels"),
        "none": (meta(tmp_path / "n", "potsdam", [None]), "labels unknown: semiearth.json lists no label files"),
    }  # fmt: skip
    for name, (cfg, expected) in cases.items():
        assert ground_truth_labels(cfg) == expected, name
