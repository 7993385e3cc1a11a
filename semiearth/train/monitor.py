"""VLM-PP on labelled images, where the ground truth is known: abstention's calibration and the
live break-even monitor (issue 21, items 1 and 2).

Both run the run's own purifier on labelled images under the logits of the method's teacher
(`Method.eval_network()`: the EMA teacher, or CPS's ensemble) at that point of training, and score
the purifier's own regions against the labelled ground truth. A region's true class is the majority
ground-truth class of its candidate pixels (what purification may change), the unit of the noisy
oracle's region accuracy and of the break-even curves in docs/results.md.

- calibration (`purify.abstain`): `AbstainingClassifier.fit` before training and every
  `purify.calibrate_every` iterations (a classifier with `fit`, the prototypes, is cross-fitted over
  two image folds; a VLM is not fitted, so it needs none). Logged as `calibration` rows.
- monitor (`purify.monitor_every`): on `purify.monitor_images` labelled images (in turn through the
  labelled set), the classifier's region accuracy, the teacher's own (the segment's pseudo-label
  class) on the same segments, and the change VLM-PP made to the pseudo-labels' precision, coverage
  (confidence >= train.threshold) and mIoU there. Logged as `monitor` rows; a one-line warning when
  the classifier stayed below the teacher for `PATIENCE` rounds in a row.

Both are periodic and make host-device syncs: they run only on their cadence (off by default).
The labelled images are read from the dataset (not the loader), so the run's batches and random
streams are those of a run without them.
"""

from __future__ import annotations

import copy
import inspect

import torch

from semiearth.eval.inference import predict
from semiearth.purify.classifiers.abstain import AbstainingClassifier, _Recorder
from semiearth.purify.classifiers.oracle import segment_histogram

PATIENCE = 3  # monitor rounds in a row with the classifier below the teacher before the warning


def pixel_metrics(label, conf, gt, c: int, threshold: float, ignore_index: int = 255) -> dict:
    """Pseudo-label precision (admitted pixels, conf >= threshold, that are right), coverage (admitted
    share of the labelled pixels) and mIoU (every labelled pixel, classes present in gt or label)."""
    valid = (gt != ignore_index) & (gt >= 0) & (gt < c)
    admitted = valid & (conf >= threshold)
    correct = label == gt
    n_adm, n_valid = int(admitted.sum()), int(valid.sum())
    inter = torch.bincount(gt[valid & correct], minlength=c)[:c].double()
    pred = torch.bincount(label[valid].clamp(0, c - 1), minlength=c)[:c].double()
    true = torch.bincount(gt[valid], minlength=c)[:c].double()
    union = pred + true - inter
    present = union > 0
    return {
        "precision": float((admitted & correct).sum()) / max(n_adm, 1),
        "coverage": n_adm / max(n_valid, 1),
        "miou": float((inter[present] / union[present]).mean()) if bool(present.any()) else 0.0,
    }


def majority_right(q: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """[N] bool: the top-1 of q [N,C] is a majority class of the ground-truth counts hist [N,C]."""
    share = hist.gather(1, q.argmax(dim=1, keepdim=True)).flatten()
    return share >= hist.amax(dim=1)


class LabelledPurify:
    """Calibration and monitor rounds of one run (rank 0 logs; every rank calibrates its purifier)."""

    def __init__(self, cfg, method, purifier, labelled, device, logger):
        self.cfg, self.method, self.purifier, self.labelled = cfg, method, purifier, labelled
        self.device, self.logger = device, logger
        self.abstain = isinstance(purifier.classifier, AbstainingClassifier)
        self.calibration: dict | None = None
        self.rounds = 0
        self.streak = 0  # monitor rounds in a row with the classifier below the teacher
        self.longest = 0
        self.warnings = 0
        self.history: list[dict] = []
        self._calibration_set = None

    # ------------------------------------------------------------------------- cadences
    def calibrate_due(self, iteration: int) -> bool:
        k = self.cfg.purify.calibrate_every
        return self.abstain and bool(k) and iteration % k == 0 and iteration < self.cfg.train.iters

    def monitor_due(self, iteration: int) -> bool:
        k = self.cfg.purify.monitor_every
        return bool(k) and (iteration % k == 0 or iteration == self.cfg.train.iters)

    # ------------------------------------------------------------------------- data
    def images(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images [B,3,H,W] and masks [B,H,W] of labelled items `indices` (those of the
        first one's size: the purifier takes one batch)."""
        items = [self.labelled[i] for i in indices]
        shape = tuple(items[0]["image"].shape)
        items = [it for it in items if tuple(it["image"].shape) == shape]
        data = self.cfg.data
        mean = torch.tensor(data.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(data.std, device=self.device).view(1, 3, 1, 1)
        images = torch.stack([it["image"] for it in items]).to(self.device).float()
        masks = torch.stack([torch.as_tensor(it["mask"]) for it in items]).to(self.device).long()
        return (images - mean) / std, masks

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [B,C,H,W] of the method's teacher (eval mode, as validation predicts)."""
        net = self.method.eval_network()
        was = net.training
        net.eval()
        e = self.cfg.eval
        multiple = getattr(net, "size_multiple", 1)
        try:
            probs = torch.cat([predict(net, images[i : i + 1], e.mode, e.window, e.stride, multiple)
                               for i in range(images.shape[0])])  # fmt: skip
        finally:
            net.train(was)
        return probs.clamp_min(1e-12).log()

    # ------------------------------------------------------------------------- calibration
    @torch.no_grad()
    def calibrate(self, iteration: int) -> dict:
        """Calibrate the AbstainingClassifier on the labelled set under the current teacher."""
        clf = self.purifier.classifier
        if self._calibration_set is None:
            p = self.cfg.purify
            n = p.abstain.images or p.fit_images or len(self.labelled)
            self._calibration_set = self.images(range(min(n, len(self.labelled))))
        images, masks = self._calibration_set
        logits = self.teacher_logits(images)
        fit = getattr(clf.inner, "fit", None)
        fit_inner = callable(fit) and images.shape[0] >= clf.folds
        kwargs = {}
        if fit_inner:
            data, p = self.cfg.data, self.cfg.purify
            offered = {"image_mean": tuple(data.mean), "image_std": tuple(data.std), "cell": p.cell,
                       "context": p.context}  # fmt: skip
            params = inspect.signature(fit).parameters
            kwargs = {k: v for k, v in offered.items() if k in params}
        clf.fit(images, masks, self.purifier, logits=logits, fit_inner=fit_inner,
                ignore_index=self.cfg.data.ignore_index, chunk=max(1, self.cfg.train.batch_size), **kwargs)  # fmt: skip
        row = {**clf.summary(), "images": int(images.shape[0]), "cross_fitted": bool(fit_inner)}
        self.calibration = row
        self.logger.log(iteration, row, "calibration")
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        self.logger.write(
            f"[semiearth] abstention calibrated at iter {iteration} on {row['regions']} regions of "
            f"{row['images']} labelled images: temperature {row['temperature']:.3g}, threshold "
            f"{row['threshold']:.3g}, keeps {100 * row['kept_share']:.1f}% of regions (classifier region "
            f"accuracy {acc}, min_accuracy {row['min_accuracy']:g})"
        )
        return row

    # ------------------------------------------------------------------------- monitor
    @torch.no_grad()
    def monitor(self, iteration: int) -> dict:
        """One break-even round on the next `purify.monitor_images` labelled images."""
        n_lab, k = len(self.labelled), min(self.cfg.purify.monitor_images, len(self.labelled))
        start = self.rounds * k % n_lab
        images, masks = self.images([(start + i) % n_lab for i in range(k)])
        logits = self.teacher_logits(images)
        clf = self.purifier.classifier
        rec = _Recorder(clf)
        purifier = copy.copy(self.purifier)
        purifier.classifier = rec
        out = purifier(images, logits, gt=masks)
        c, ignore = self.cfg.data.num_classes, self.cfg.data.ignore_index
        thr = self.cfg.train.threshold
        teacher = pixel_metrics(out.stats.label, out.stats.conf, masks, c, thr, ignore)
        purified = pixel_metrics(out.label, out.conf, masks, c, thr, ignore)
        row = {"images": int(images.shape[0]), "regions": 0, "classifier_accuracy": None, "teacher_accuracy": None}
        if out.num_regions:
            hist = segment_histogram(out.stats, out.seg_table, masks, out.num_regions, c, ignore)
            labelled = hist.sum(dim=1) > 0
            q = clf.last_q if self.abstain else rec.q
            keep = clf.last_keep if self.abstain else torch.ones_like(labelled)
            right = majority_right(q.float().to(hist.device), hist)
            teacher_class = out.regions[:, 5].long().to(hist.device)
            teacher_right = hist.gather(1, teacher_class[:, None]).flatten() >= hist.amax(dim=1)
            n = int(labelled.sum())
            row["regions"] = n
            if n:
                row["classifier_accuracy"] = float(right[labelled].float().mean())
                row["teacher_accuracy"] = float(teacher_right[labelled].float().mean())
                kept = labelled & keep.to(hist.device)
                row["kept_share"] = float(kept.sum()) / n
                if bool(kept.any()):
                    row["kept_accuracy"] = float(right[kept].float().mean())
                    row["teacher_kept_accuracy"] = float(teacher_right[kept].float().mean())
        row["relabelled"] = out.relabelled
        for key in ("precision", "coverage", "miou"):
            row[f"teacher_{key}"] = teacher[key]
            row[f"purified_{key}"] = purified[key]
            row[f"{key}_change"] = purified[key] - teacher[key]
        self.rounds += 1
        below = row["classifier_accuracy"] is not None and row["classifier_accuracy"] < row["teacher_accuracy"]
        self.streak = self.streak + 1 if below else 0
        self.longest = max(self.longest, self.streak)
        row["below_teacher_streak"] = self.streak
        self.history.append({"iter": iteration, **row})
        self.logger.log(iteration, row, "monitor")
        if self.streak == PATIENCE:
            self.warnings += 1
            self.logger.write(
                f"[semiearth] WARNING VLM-PP monitor: the classifier's region accuracy stayed below the teacher's "
                f"for {PATIENCE} rounds in a row (iter {iteration}: {row['classifier_accuracy']:.3f} < "
                f"{row['teacher_accuracy']:.3f} on {row['regions']} labelled regions); it likely does not pay off "
                "on this data (consider purify.abstain, rule bayes with trust 0.5, or purify.method: none)"
            )
        return row

    def summary(self) -> dict:
        """For results.json: the last calibration and the monitor's rounds."""
        out = {}
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.history:
            acc = [(h["classifier_accuracy"], h["teacher_accuracy"]) for h in self.history
                   if h["classifier_accuracy"] is not None]  # fmt: skip
            out["monitor"] = {
                "rounds": self.rounds,
                "last": self.history[-1],
                "mean_classifier_accuracy": sum(a for a, _ in acc) / len(acc) if acc else None,
                "mean_teacher_accuracy": sum(t for _, t in acc) / len(acc) if acc else None,
                "mean_miou_change": sum(h["miou_change"] for h in self.history) / len(self.history),
                "below_teacher_streak": self.streak,
                "longest_below_teacher_streak": self.longest,
                "warnings": self.warnings,
            }
        return out
