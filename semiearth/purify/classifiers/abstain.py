"""AbstainingClassifier: a weak classifier answers only where it is likely right, else says nothing.

Under rule "bayes" a uniform q is an exact no-op (p * (1/C)^trust renormalises to p), so a region
classifier that returns uniform rows where it is unsure cannot hurt there. The wrapper:

1. fit: measures the inner classifier on held-out labelled segments, cut by the same crop
   pipeline as in training: either the purifier's own regions on teacher logits of the labelled
   images (`logits=`, the hard boundary segments VLM-PP really sees) or every (cell, class) segment
   of the ground truth. A classifier with its own `fit` (prototypes) is cross-fitted: fitted on the
   other folds of images, measured on each fold, then refitted on all, so no segment is scored by
   prototypes that saw it.
2. calibrates, per pixel: a segment's target is its ground-truth class histogram (a segment is
   rarely pure), so "right" counts the fraction of its pixels whose class is the top-1.
   a. temperature: q' = softmax(log q / T), T minimising the cross-entropy against the targets
      (a classifier fitted on pure segments is over-confident on mixed ones);
   b. P(right | top-1 of q') by isotonic regression (`accuracy="majority"`: right = the top-1 is the
      segment's majority class, the unit of the noisy oracle's region accuracy and of the
      break-even curves; "pixels", the default: the share of its pixels of the top-1 class) (pool-adjacent-violators); `threshold` = the
      lowest top-1 probability whose calibrated accuracy reaches `min_accuracy` (the break-even
      region accuracy of bench/purify_quality.py's curves).
3. call: q' where its top-1 prob >= threshold, exactly 1/C elsewhere.
"""

import copy
import inspect

import torch
import torch.nn.functional as F

from semiearth.ops import crop_batch
from semiearth.purify.classifiers._base import accepts_classes, check_crops
from semiearth.purify.classifiers._shared import best_temperature
from semiearth.purify.regions import crop_scale_shift, label_regions, segment_histogram


def isotonic(x: torch.Tensor, y: torch.Tensor):
    """Non-decreasing least-squares fit of y on x (pool adjacent violators).

    x, y [N] float -> (x sorted [N], fitted values [N]) so fitted[i] estimates E[y | x = x_sorted[i]].
    """
    order = torch.argsort(x, stable=True)
    xs, ys = x[order].double(), y[order].double()
    sums, counts = [], []
    for v in ys.tolist():
        sums.append(v)
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] > sums[-1] / counts[-1]:
            s, n = sums.pop(), counts.pop()
            sums[-1] += s
            counts[-1] += n
    fitted = torch.cat([torch.full((n,), s / n, dtype=torch.float64) for s, n in zip(sums, counts, strict=True)])
    return xs, fitted


class _Recorder:
    """Passes the purifier's calls to `inner` and keeps the stats, seg_table and q of the last one."""

    def __init__(self, inner):
        self.inner = inner
        for attr in ("input_size", "mean", "std", "num_classes", "class_names"):
            setattr(self, attr, getattr(inner, attr, None))
        if callable(getattr(inner, "set_gt", None)):  # the oracles read the batch's ground truth
            self.set_gt = inner.set_gt
        self.stats = self.seg_table = self.q = None

    def observe(self, stats, regions, seg_table):
        self.stats, self.seg_table = stats, seg_table
        if callable(getattr(self.inner, "observe", None)):
            self.inner.observe(stats, regions, seg_table)

    def __call__(self, crops, regions, classes=None):
        self.q = self.inner(crops, regions) if classes is None else self.inner(crops, regions, classes=classes)
        return self.q


class AbstainingClassifier:
    """Wraps any classifier; its q where calibrated confidence reaches `min_accuracy`, uniform elsewhere.

    `temperature` and `threshold` (top-1 probability) are set by `fit` (or `calibrate`, or by hand);
    before fitting the wrapper abstains everywhere. `calibration`: the isotonic blocks (confidence
    from, to, segments, accuracy).
    `last_keep` [N] bool: which regions of the latest call kept the inner q; `last_q` [N,C]: the
    inner q of that call, recalibrated (both on the device, no host copy).
    `accuracy`: what "right" means in calibration, "pixels" (share of the segment's pixels of the
    top-1 class) or "majority" (the top-1 is the segment's majority class).
    "Score only what can change": `classes` ([N,C] bool) is passed on to an inner classifier that
    takes it (the VLM), and the wrapper takes it exactly when the inner one does (an instance
    `__signature__`, which `_base.accepts_classes` reads), so the purifier computes no mask for an
    oracle or prototypes; `topk` / `prob_floor` are the inner's (the purifier's defaults).
    """

    def __init__(self, inner, min_accuracy: float = 0.7, folds: int = 2, accuracy: str = "pixels"):
        if not 0.0 < min_accuracy <= 1.0:
            raise ValueError(f"AbstainingClassifier: min_accuracy must be in (0, 1], got {min_accuracy!r}")
        if accuracy not in ("pixels", "majority"):
            raise ValueError(f"AbstainingClassifier: accuracy must be 'pixels' or 'majority', got {accuracy!r}")
        self.inner = inner
        self.min_accuracy = float(min_accuracy)
        self.folds = int(folds)
        self.accuracy = accuracy
        for attr in ("input_size", "mean", "std", "num_classes", "class_names"):
            setattr(self, attr, getattr(inner, attr, None))
        if callable(getattr(inner, "set_gt", None)):  # the purifier hands the batch's ground truth on
            self.set_gt = inner.set_gt
        self.mask_crops = getattr(inner, "mask_crops", True)
        for attr in ("topk", "prob_floor"):  # the purifier's defaults for `classes` (VLMPurifier)
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))
        if not accepts_classes(inner):  # accepts_classes(self) follows the inner classifier
            sig = inspect.signature(type(self).__call__)
            params = [p for name, p in sig.parameters.items() if name not in ("self", "classes")]
            self.__signature__ = sig.replace(parameters=params)
        self.temperature = 1.0
        self.threshold = float("inf")
        self.calibration = []
        self.fit_outcomes = None
        self.last_keep = None
        self.last_q = None

    def observe(self, stats, regions, seg_table):
        if callable(getattr(self.inner, "observe", None)):
            self.inner.observe(stats, regions, seg_table)

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, regions: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        check_crops("AbstainingClassifier", crops, regions)
        q = self.inner(crops, regions) if classes is None else self.inner(crops, regions, classes=classes)
        q = self.recalibrated(q.float())
        keep = q.amax(dim=1) >= self.threshold if q.shape[0] else torch.zeros(0, dtype=torch.bool, device=q.device)
        self.last_keep, self.last_q = keep, q  # on the device: no sync in a training step
        return torch.where(keep[:, None], q, torch.full_like(q, 1.0 / q.shape[1]))

    @torch.no_grad()
    def fit(self, images, masks, purifier, logits=None, fit_inner=None, ignore_index=255, chunk=None, **fit_kwargs):
        """Calibrate on labelled images [B,3,H,W] (normalised like the purifier's input, or uint8)
        and masks [B,H,W] int64; `logits` [B,C,H,W]: teacher logits of these images (optional).

        fit_inner (default: the inner classifier has `fit`): cross-fit it over `folds` image folds
        with `inner.fit(images, masks, purifier=purifier, ignore_index=..., **fit_kwargs)`.
        chunk: images per purifier call when measuring (None: a fold at once).
        """
        fit_inner = callable(getattr(self.inner, "fit", None)) if fit_inner is None else fit_inner
        b = images.shape[0]
        if fit_inner and b < self.folds:
            raise ValueError(f"AbstainingClassifier.fit: cross-fitting needs >= {self.folds} images, got {b}")
        qs, targets = [], []
        folds = torch.arange(b) % self.folds if fit_inner else torch.zeros(b, dtype=torch.long)
        for k in folds.unique().tolist():
            held = (folds == k).nonzero().flatten()
            if fit_inner:
                train = (folds != k).nonzero().flatten()
                self.inner.fit(images[train], masks[train], purifier=purifier, ignore_index=ignore_index, **fit_kwargs)
            step = int(chunk) if chunk else max(1, held.numel())
            for i in range(0, held.numel(), step):
                part = held[i : i + step]
                sub_logits = logits[part] if logits is not None else None
                q, target = self.outcomes(images[part], masks[part], purifier, sub_logits, ignore_index)
                qs.append(q)
                targets.append(target)
        if fit_inner:
            self.inner.fit(images, masks, purifier=purifier, ignore_index=ignore_index, **fit_kwargs)
        return self.calibrate(torch.cat(qs), torch.cat(targets))

    def outcomes(self, images, masks, purifier, logits=None, ignore_index=255):
        """(q [N,C] of the inner classifier, target [N,C]: ground-truth class shares) on labelled segments."""
        c = self.num_classes
        if logits is not None:
            rec = _Recorder(self.inner)
            p = copy.copy(purifier)
            p.classifier = rec
            out = p(images, logits, gt=masks)
            if out.num_regions == 0:
                return torch.zeros(0, c), torch.zeros(0, c)
            hist = segment_histogram(rec.stats, rec.seg_table, masks, out.num_regions, c, ignore_index).cpu()
            labelled = hist.sum(dim=1) > 0
            hist = hist[labelled]
            return rec.q.float().cpu()[labelled], hist / hist.sum(dim=1, keepdim=True)
        else:
            regions = label_regions(masks, c, purifier.cell, purifier.context, 64, ignore_index)
            labels = torch.where(masks == ignore_index, torch.full_like(masks, -1), masks)
            scale, shift = crop_scale_shift(images, purifier.image_mean, purifier.image_std, self.mean, self.std)
            size = int(self.input_size)
            crops = crop_batch(images, regions.to(images.device), size, labels, scale, shift, mask=True)
            q, truth = self.inner(crops, regions).float().cpu(), regions[:, 5].long().cpu()
            return q, F.one_hot(truth, c).float()

    def recalibrated(self, q: torch.Tensor) -> torch.Tensor:
        """q' = softmax(log q / temperature) [N,C]."""
        return torch.softmax(torch.log(q.clamp(min=1e-12)) / self.temperature, dim=1)

    def calibrate(self, q: torch.Tensor, target: torch.Tensor) -> "AbstainingClassifier":
        """Temperature and threshold from held-out q [N,C] and targets [N,C] (class shares per segment)."""
        self.fit_outcomes = (q.clone(), target.clone())
        if q.shape[0] == 0:
            return self.set_threshold(torch.zeros(0), torch.zeros(0))
        self.temperature = best_temperature(torch.log(q.clamp(min=1e-12)), target)
        qc = self.recalibrated(q)
        return self.set_threshold(qc.amax(dim=1), self.right(qc, target))

    def right(self, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[N] in [0, 1]: how right the top-1 of q [N,C] is against class shares target [N,C]
        (the `accuracy` definition: 1/0 for the majority class, else the top-1 class's share)."""
        share = target.gather(1, q.argmax(dim=1, keepdim=True)).flatten()
        if self.accuracy == "majority":
            return (share >= target.amax(dim=1) - 1e-9).float()
        return share

    def summary(self) -> dict:
        """The latest calibration: temperature, threshold, the calibration regions and the share of
        them (and their accuracy) that the threshold keeps, the inner classifier's accuracy there."""
        row = {"temperature": self.temperature, "threshold": self.threshold, "min_accuracy": self.min_accuracy}
        q, target = self.fit_outcomes if self.fit_outcomes is not None else (torch.zeros(0, 1), torch.zeros(0, 1))
        n = q.shape[0]
        row["regions"] = n
        if n == 0:
            return {**row, "kept_share": 0.0, "kept": 0, "accuracy": None, "kept_accuracy": None}
        qc = self.recalibrated(q)
        right = self.right(qc, target)
        keep = qc.amax(dim=1) >= self.threshold
        kept = int(keep.sum())
        row.update(kept=kept, kept_share=kept / n, accuracy=float(right.mean()))
        row["kept_accuracy"] = float(right[keep].mean()) if kept else None
        return row

    def set_threshold(self, conf: torch.Tensor, right: torch.Tensor) -> "AbstainingClassifier":
        """Isotonic P(right | conf) from conf [N] and right [N] in [0, 1]; threshold = the lowest conf
        whose calibrated accuracy >= min_accuracy (inf when none: abstain everywhere; 0 when the lowest
        block reaches it: the isotonic fit is constant below its range, so it keeps everything)."""
        if conf.numel() == 0:
            self.threshold, self.calibration = float("inf"), []
            return self
        xs, fitted = isotonic(conf.float(), right.float())
        ok = fitted >= self.min_accuracy - 1e-12
        self.threshold = float(xs[ok.nonzero()[0, 0]]) if bool(ok.any()) else float("inf")
        if bool(ok[0]):
            self.threshold = 0.0
        self.calibration = []
        for v in fitted.unique_consecutive().tolist():
            sel = fitted == v
            self.calibration.append((float(xs[sel].min()), float(xs[sel].max()), int(sel.sum()), v))
        return self
