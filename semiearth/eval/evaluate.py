"""Evaluate a model on a dataset split (shared by the trainer's validation and semiearth-eval), and
say which ground truth the numbers are on (`ground_truth_labels`)."""

from __future__ import annotations

import functools
import os
import re

import torch

from semiearth.data.folder import PREPARED_META, read_prepared_meta
from semiearth.eval.inference import predict
from semiearth.eval.metrics import UNKNOWN_LABELS, SegMetric

# ISPRS label files as semiearth-prepare reads them (semiearth/data/isprs.py): the eroded-boundary
# variants end in _noBoundary; the full ones are the official names without it.
_ISPRS = ("potsdam", "vaihingen")
_ERODED = re.compile(r"_noBoundary\.tiff?$", re.I)
_FULL = re.compile(r"^top_(potsdam_\d+_\d+_label|mosaic_09cm_area\d+)\.tiff?$", re.I)


def ground_truth_labels(data_cfg) -> str:
    """Which labels the ground truth of `data_cfg` is, for the results header: "ISPRS eroded labels"
    or "ISPRS full labels" (from the label files that semiearth-prepare converted, as its
    semiearth.json in data.root lists them), "<dataset> labels" for other prepared datasets,
    "synthetic labels", or "labels unknown: <why>" when nothing records it."""
    if data_cfg.name == "synthetic":
        return "synthetic labels"
    root = os.path.expanduser(data_cfg.root or "")
    meta = os.path.join(root, PREPARED_META)
    if not root or not os.path.isfile(meta):
        return f"{UNKNOWN_LABELS}: no {PREPARED_META} in data.root"
    return _prepared_labels(os.path.abspath(root), os.path.getmtime(meta))


@functools.lru_cache(maxsize=8)
def _prepared_labels(root: str, _mtime: float) -> str:
    """ground_truth_labels of a prepared folder (cached per folder and semiearth.json version)."""
    try:
        meta = read_prepared_meta(root)
    except (OSError, ValueError) as err:
        return f"{UNKNOWN_LABELS}: {PREPARED_META} unreadable ({type(err).__name__})"
    dataset = meta.get("dataset", "")
    labels = [s["label"] for s in meta.get("scenes", {}).values() if s.get("label")]
    if not labels:
        return f"{UNKNOWN_LABELS}: {PREPARED_META} lists no label files"
    if dataset not in _ISPRS:
        return f"{dataset or 'prepared'} labels"
    names = [os.path.basename(p) for p in labels]
    counts = {
        "eroded": sum(bool(_ERODED.search(n)) for n in names),
        "full": sum(bool(_FULL.match(n)) for n in names),
    }
    counts["eroded or full unknown"] = len(names) - sum(counts.values())  # e.g. mmseg-converted PNGs
    kinds = [k for k, n in counts.items() if n]
    if len(kinds) == 1:
        return f"ISPRS {kinds[0]} labels" if kinds[0] in ("eroded", "full") else f"ISPRS labels, {kinds[0]}"
    return "ISPRS labels mixed: " + ", ".join(f"{k} for {counts[k]} scenes" for k in kinds)


@torch.no_grad()
def evaluate(model, dataset, data_cfg, eval_cfg, device="cpu", max_images: int = 0, indices=None) -> dict:
    """Metrics of `model` on `dataset` (items as in the data contract).

    `indices` restricts to a subset (the trainer shards validation across processes and sums the
    confusion matrices with all_reduce). The conventions of `eval_cfg` apply: ground truth eroded by
    eval.boundary_erosion px, and the means without eval.exclude_classes beside the full ones; the
    result's "protocol" names them and the labels used (`ground_truth_labels`).
    """
    was_training = model.training
    model.eval()
    mean = torch.tensor(data_cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg.std, device=device).view(1, 3, 1, 1)
    metric = SegMetric(
        data_cfg.num_classes,
        data_cfg.ignore_index,
        data_cfg.class_names,
        eval_cfg.exclude_classes,
        eval_cfg.boundary_erosion,
        ground_truth_labels(data_cfg),
    )
    multiple = getattr(model, "size_multiple", 1)
    if indices is None:
        indices = range(len(dataset) if not max_images else min(max_images, len(dataset)))
    for i in indices:
        item = dataset[i]
        image = (item["image"].to(device)[None] - mean) / std
        probs = predict(model, image, eval_cfg.mode, eval_cfg.window, eval_cfg.stride, multiple)
        metric.update(probs.argmax(1)[0].cpu(), item["mask"])
    metric.all_reduce()
    model.train(was_training)
    return metric.compute()
