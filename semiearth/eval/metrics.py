"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU, OA, per-class and mean F1.

Pixels whose target is `ignore_index` (or outside 0..C-1) are skipped. A class that appears in
neither prediction nor target has no IoU/F1 (NaN) and is left out of the means.

Evaluation conventions (eval.exclude_classes, eval.boundary_erosion): classes excluded from a second
mean reported beside the full one ("mIoU_excluded", "mF1_excluded"), and ground truth eroded at class
boundaries (`erode_boundaries`). Every metrics dict names its convention in "protocol" -- the class
count, the excluded classes, the ground truth the numbers are on (which labels: e.g. "ISPRS eroded
labels", read from the prepared folder by `semiearth.eval.evaluate.ground_truth_labels`) and any
erosion applied here -- and tables print it in the header and mean rows, so a number is never without
its protocol.
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


def erode_boundaries(target: torch.Tensor, radius: int, ignore_index: int = 255) -> torch.Tensor:
    """`target` ([H, W] or [N, H, W]) with every pixel within `radius` px (Chebyshev distance: the
    (2R+1)^2 square around it) of a pixel of another class set to `ignore_index`: the ISPRS "eroded"
    convention. Ignore pixels make no boundary; radius 0 returns `target` unchanged."""
    if radius <= 0:
        return target
    t = target.long()
    flat = t.reshape(-1, 1, *t.shape[-2:]).float()
    valid = flat != ignore_index
    big = float(torch.iinfo(torch.int32).max)
    pool = lambda x: torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)  # noqa: E731
    high = pool(torch.where(valid, flat, torch.full_like(flat, -1.0)))
    low = -pool(-torch.where(valid, flat, torch.full_like(flat, big)))
    near_boundary = (high != low) & valid
    out = t.clone()
    out[near_boundary.reshape(t.shape)] = ignore_index
    return out.to(target.dtype)


# What a metrics dict says of its ground truth when the caller does not state it: a bare confusion
# matrix cannot tell full from eroded labels, so it claims neither.
UNKNOWN_LABELS = "labels unknown"


def convention(
    num_classes: int, exclude: list[str] | None = None, erosion: int = 0, labels: str = UNKNOWN_LABELS
) -> dict:
    """The protocol of a metrics dict: {'full': label, 'excluded': label or None, 'exclude_classes',
    'boundary_erosion', 'labels'}. `labels` names the ground truth used (e.g. "ISPRS eroded labels");
    erosion applied at evaluation is added to it, e.g. "6 classes, ISPRS full labels" and
    "5 classes, clutter excluded, ISPRS full labels, boundaries eroded 3 px"."""
    exclude = list(exclude or [])
    truth = labels + (f", boundaries eroded {erosion} px" if erosion > 0 else "")
    excluded = None
    if exclude:
        excluded = f"{num_classes - len(exclude)} classes, {', '.join(exclude)} excluded, {truth}"
    return {
        "full": f"{num_classes} classes, {truth}",
        "excluded": excluded,
        "exclude_classes": exclude,
        "boundary_erosion": max(0, erosion),
        "labels": labels,
    }


def metrics_from_confusion(
    conf: torch.Tensor,
    class_names: list[str] | None = None,
    exclude: list[str] | None = None,
    erosion: int = 0,
    labels: str = UNKNOWN_LABELS,
) -> dict:
    """{'mIoU', 'OA', 'mF1', 'IoU': {name: v}, 'F1': {name: v}, 'protocol'} (fractions in [0, 1]); with
    `exclude` (class names) also 'mIoU_excluded' and 'mF1_excluded', the means without those classes
    (beside the full means, never instead of them). `erosion` and `labels` only name the convention:
    the caller erodes the ground truth (`erode_boundaries`) and knows which labels it read."""
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    pr = conf.sum(0)
    union = gt + pr - tp
    iou = [float(t / u) if u > 0 else float("nan") for t, u in zip(tp, union, strict=True)]
    f1 = [float(2 * t / (g + p)) if g + p > 0 else float("nan") for t, g, p in zip(tp, gt, pr, strict=True)]
    total = conf.sum()
    names = class_names or [str(i) for i in range(conf.shape[0])]
    exclude = list(exclude or [])
    unknown = [n for n in exclude if n not in names]
    if unknown:
        raise ValueError(f"exclude_classes: unknown class {unknown[0]!r}; valid: {', '.join(names)}")
    out = {
        "mIoU": _nanmean(iou),
        "OA": float(tp.sum() / total) if total > 0 else float("nan"),
        "mF1": _nanmean(f1),
        "IoU": dict(zip(names, iou, strict=True)),
        "F1": dict(zip(names, f1, strict=True)),
    }
    if exclude:
        kept = [i for i, n in enumerate(names) if n not in exclude]
        out["mIoU_excluded"] = _nanmean([iou[i] for i in kept])
        out["mF1_excluded"] = _nanmean([f1[i] for i in kept])
    out["protocol"] = convention(conf.shape[0], exclude, erosion, labels)
    return out


class SegMetric:
    """Accumulates a confusion matrix over batches; `all_reduce()` sums it across processes."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: list[str] | None = None,
        exclude: list[str] | None = None,
        erosion: int = 0,
        labels: str = UNKNOWN_LABELS,
    ):
        self.num_classes = num_classes
        self.labels = labels
        self.ignore_index = ignore_index
        self.class_names = class_names
        self.exclude = list(exclude or [])
        self.erosion = erosion
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        target = erode_boundaries(target, self.erosion, self.ignore_index)
        self.conf += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            t = self.conf.to(device)
            dist.all_reduce(t)
            self.conf = t.cpu()

    def compute(self) -> dict:
        return metrics_from_confusion(self.conf, self.class_names, self.exclude, self.erosion, self.labels)


def format_table(results: dict[str, dict], class_names: list[str]) -> str:
    """A text table of per-class IoU and mIoU/OA/mF1 (in %) for one or more named results. Its header
    line and mean rows name the evaluation convention ("mIoU (6 classes, ISPRS eroded labels)"), and with
    excluded classes the means without them follow as their own rows, beside the full ones."""
    heads = list(results)
    first = results[heads[0]]
    proto = first.get("protocol") or convention(len(class_names))
    rows = [(name, [results[h]["IoU"][name] for h in heads]) for name in class_names]
    rows.append((f"mIoU ({proto['full']})", [results[h]["mIoU"] for h in heads]))
    rows.append((f"OA ({proto['full']})", [results[h]["OA"] for h in heads]))
    rows.append((f"mF1 ({proto['full']})", [results[h]["mF1"] for h in heads]))
    if proto.get("excluded"):
        nan = float("nan")
        rows.append((f"mIoU ({proto['excluded']})", [results[h].get("mIoU_excluded", nan) for h in heads]))
        rows.append((f"mF1 ({proto['excluded']})", [results[h].get("mF1_excluded", nan) for h in heads]))
    width = max(len(n) for n in [*(r[0] for r in rows), "class"]) + 2
    col = max(10, *(len(h) + 2 for h in heads))
    header = f"evaluation: {proto['full']}" + (f"; beside it: {proto['excluded']}" if proto.get("excluded") else "")
    lines = [header, "class".ljust(width) + "".join(h.rjust(col) for h in heads)]
    for label, values in rows:
        lines.append(label.ljust(width) + "".join(f"{100 * v:{col}.2f}" for v in values))
    return "\n".join(lines)
