"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, OA, per-class and mean F1.

Pixels whose target is `ignore_index` (or outside 0..C-1) are skipped. A class that appears in
neither prediction nor target has no IoU/F1 (NaN) and is left out of the means.
"""

from __future__ import annotations

import math

import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[C, C] int64 counts, rows = target class, columns = predicted class."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[valid] * num_classes + pred[valid].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def metrics_from_confusion(conf: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """{'mIoU', 'OA', 'mF1', 'IoU': {name: v}, 'F1': {name: v}} (fractions in [0, 1])."""
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    pr = conf.sum(0)
    union = gt + pr - tp
    iou = [float(t / u) if u > 0 else float("nan") for t, u in zip(tp, union, strict=True)]
    f1 = [float(2 * t / (g + p)) if g + p > 0 else float("nan") for t, g, p in zip(tp, gt, pr, strict=True)]
    total = conf.sum()
    names = class_names or [str(i) for i in range(conf.shape[0])]
    return {
        "mIoU": _nanmean(iou),
        "OA": float(tp.sum() / total) if total > 0 else float("nan"),
        "mF1": _nanmean(f1),
        "IoU": dict(zip(names, iou, strict=True)),
        "F1": dict(zip(names, f1, strict=True)),
    }


class SegMetric:
    """Accumulates a confusion matrix over batches; `all_reduce()` sums it across processes."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.conf += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            t = self.conf.to(device)
            dist.all_reduce(t)
            self.conf = t.cpu()

    def compute(self) -> dict:
        return metrics_from_confusion(self.conf, self.class_names)


def format_table(results: dict[str, dict], class_names: list[str]) -> str:
    """A text table of per-class IoU and mIoU/OA/mF1 (in %) for one or more named results."""
    width = max(len(n) for n in [*class_names, "mIoU", "class"]) + 2
    heads = list(results)
    col = max(10, *(len(h) + 2 for h in heads))
    lines = ["class".ljust(width) + "".join(h.rjust(col) for h in heads)]
    for name in class_names:
        lines.append(name.ljust(width) + "".join(f"{100 * results[h]['IoU'][name]:{col}.2f}" for h in heads))
    for key in ("mIoU", "OA", "mF1"):
        lines.append(key.ljust(width) + "".join(f"{100 * results[h][key]:{col}.2f}" for h in heads))
    return "\n".join(lines)
