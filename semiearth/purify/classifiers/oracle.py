"""OracleClassifier: q from the ground truth, the upper bound of a region classifier (ablations, tests)."""

import math
import warnings

import torch

from semiearth.ops import PurifyStats
from semiearth.ops._checks import require
from semiearth.purify.classifiers._base import check_crops
from semiearth.purify.regions import segment_histogram

SCOPES = ("segment", "box")


class OracleClassifier:
    """q[r] = ground-truth class histogram of region r's pixels (uniform when none is labelled).

    The ground truth comes with the batch: pass `gt` [B,H,W] int64 (`ignore_index` for unlabelled
    pixels) at construction, or per batch as `VLMPurifier(...)(images, logits, gt=gt)`, which calls
    `set_gt(gt)` (the trainer passes every unlabelled batch's `gt_w` that way). The pixels of a region:

    - scope "segment" (default): exactly the pixels that purification may change, i.e. the candidate
      pixels of the region's (cell, class) segment. This needs the purifier's `observe` hook, which
      VLMPurifier calls with the stats and seg_table of the batch.
    - scope "box": the pixels inside the region's box whose pseudo-label is the region's class, i.e.
      what the masked crop shows a VLM (needs `observe` for the pseudo-labels too).

    `smoothing` mixes q with the uniform distribution: (1 - s) * hist / n + s / C.
    """

    def __init__(
        self,
        num_classes: int,
        gt: torch.Tensor | None = None,
        ignore_index: int = 255,
        scope: str = "segment",
        smoothing: float = 0.0,
        input_size: int = 16,
        class_names=None,
    ):
        if scope not in SCOPES:
            raise ValueError(f"OracleClassifier: scope must be one of {SCOPES}, got {scope!r}")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"OracleClassifier: smoothing must be in [0, 1], got {smoothing!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.scope = scope
        self.smoothing = float(smoothing)
        self.input_size = int(input_size)  # the oracle ignores the crops: keep them small
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)
        self.class_names = list(class_names) if class_names is not None else None
        self.gt = None
        self._stats = None
        self._seg_table = None
        if gt is not None:
            self.set_gt(gt)

    @classmethod
    def from_config(cls, ctx) -> "OracleClassifier":
        """purify.method: oracle. The trainer hands it each unlabelled batch's ground truth (datasets
        whose unlabelled items carry `gt`, e.g. synthetic): an upper bound for ablations, not a method."""
        msg = (
            "purify.method: oracle reads the ground truth of the unlabelled images: it is an upper bound "
            "for ablations, not a method (no real run has these labels)"
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        ctx.log(f"[semiearth] WARNING {msg}")
        options = {"ignore_index": ctx.data.ignore_index, **ctx.purify.classifier_options}
        return cls(ctx.data.num_classes, class_names=ctx.data.class_names, **options)

    def set_gt(self, gt: torch.Tensor) -> "OracleClassifier":
        if not isinstance(gt, torch.Tensor) or gt.dim() != 3 or gt.dtype != torch.int64:
            raise ValueError("OracleClassifier: gt must be an int64 tensor [B,H,W] (ignore_index for unlabelled)")
        msg = (
            f"{type(self).__name__} reads the ground truth of the unlabelled images, and this batch has none: "
            "use a dataset whose unlabelled items carry it (synthetic scenes do; prepared datasets with "
            "data.options.unlabeled_masks: true)"
        )
        # At once, or deferred to the trainer's logging step (semiearth.ops._checks.deferred_checks).
        require((gt != self.ignore_index).any(), lambda _: ValueError(msg))
        self.gt = gt
        return self

    def observe(self, stats: PurifyStats, regions: torch.Tensor, seg_table: torch.Tensor) -> None:
        self._stats = stats
        self._seg_table = seg_table

    def __call__(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        check_crops("OracleClassifier", crops, regions)
        if self.gt is None:
            raise RuntimeError("OracleClassifier: no ground truth; call set_gt(gt [B,H,W]) before purifying")
        if self._stats is None:
            raise RuntimeError(
                "OracleClassifier needs the batch's pseudo-labels: VLMPurifier calls its observe() hook; "
                "when calling it directly, call observe(stats, regions, seg_table) first"
            )
        stats, n, c = self._stats, regions.shape[0], self.num_classes
        gt = self.gt if self.gt.device == stats.label.device else self.gt.to(stats.label.device)
        if tuple(gt.shape) != tuple(stats.label.shape):
            raise ValueError(f"OracleClassifier: gt is {tuple(gt.shape)} but the batch is {tuple(stats.label.shape)}")
        if self.scope == "segment":
            hist = segment_histogram(stats, self._seg_table, gt, n, c, self.ignore_index)
        else:
            hist = self.box_histogram(stats, regions, gt, n, c)
        total = hist.sum(dim=1, keepdim=True)
        q = torch.where(total > 0, hist / total.clamp(min=1), torch.full_like(hist, 1.0 / c))
        if self.smoothing:
            q = (1 - self.smoothing) * q + self.smoothing / c
        return q if q.device == crops.device else q.to(crops.device)

    def box_histogram(self, stats: PurifyStats, regions: torch.Tensor, gt: torch.Tensor, n: int, c: int):
        """[n,c] float32: ground-truth class counts of the pixels in each region's box whose pseudo-label
        is the region's class (one host-device sync for the boxes, which slice the maps)."""
        valid = (gt != self.ignore_index) & (gt >= 0) & (gt < c)
        hist = torch.zeros(n, c, device=gt.device)
        for i, (b, x1, y1, x2, y2, cls) in enumerate(regions.tolist()):
            b, cls = int(b), int(cls)
            x1, y1, x2, y2 = math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)
            sel = valid[b, y1:y2, x1:x2] & (stats.label[b, y1:y2, x1:x2] == cls)
            box = torch.where(sel, gt[b, y1:y2, x1:x2], c).flatten()
            hist[i] = torch.zeros(c + 1, device=gt.device).index_add_(0, box, torch.ones(box.shape, device=gt.device))[
                :c
            ]
        return hist
