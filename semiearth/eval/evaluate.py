"""Evaluate a model on a dataset split (shared by the trainer's validation and semiearth-eval)."""

from __future__ import annotations

import torch

from semiearth.eval.inference import predict
from semiearth.eval.metrics import SegMetric


@torch.no_grad()
def evaluate(model, dataset, data_cfg, eval_cfg, device="cpu", max_images: int = 0, indices=None) -> dict:
    """Metrics of `model` on `dataset` (items as in the data contract).

    `indices` restricts to a subset (the trainer shards validation across processes and sums the
    confusion matrices with all_reduce). The conventions of `eval_cfg` apply: ground truth eroded by
    eval.boundary_erosion px, and the means without eval.exclude_classes beside the full ones.
    """
    was_training = model.training
    model.eval()
    mean = torch.tensor(data_cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg.std, device=device).view(1, 3, 1, 1)
    metric = SegMetric(
        data_cfg.num_classes,
        data_cfg.ignore_index,
        data_cfg.class_names,
        getattr(eval_cfg, "exclude_classes", None),
        getattr(eval_cfg, "boundary_erosion", 0),
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
