"""The VLM-PP hook: build the purifier from the config and turn teacher logits into targets.

The trainer only needs `pseudo_labels(...)`: without a purifier it is FixMatch's argmax/max
softmax; with one, VLM-PP (semiearth.purify) re-checks the low-confidence regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semiearth.purify.classifiers.registry import ClassifierContext, build_classifier
from semiearth.purify.purifier import PurifyOutput, VLMPurifier


def build_purifier(cfg, data_cfg, labelled_dataset, device, log=print):
    """A `semiearth.purify.VLMPurifier` for `cfg` (a PurifyConfig), or None for method none.

    The classifier is `cfg.method` in the classifier registry, built by its class's `from_config`.
    """
    if cfg.method == "none":
        return None
    ctx = ClassifierContext(purify=cfg, data=data_cfg, device=device, labelled=labelled_dataset, log=log)
    classifier = build_classifier(cfg.method, ctx)
    return VLMPurifier(
        classifier,
        data_cfg.num_classes,
        low_thresh=cfg.low_thresh,
        cell=cfg.cell,
        rule=cfg.rule,
        trust=cfg.trust,
        max_regions=cfg.max_regions,
        context=cfg.context,
        radius=cfg.radius,
        tau=cfg.tau,
        image_mean=tuple(data_cfg.mean),
        image_std=tuple(data_cfg.std),
        backend=cfg.backend,
        mask_crops=getattr(classifier, "mask_crops", True),  # optional protocol attribute (_base.py)
    )


@dataclass
class PseudoLabels:
    """Targets of the unlabelled batch: `label`/`conf` (purified when `output` is set), the teacher's
    own `teacher_label`/`teacher_conf` and the weak-view `images` (for panels), and VLM-PP's
    PurifyOutput (records, timings, pixel counts) or None without a purifier."""

    label: torch.Tensor
    conf: torch.Tensor
    teacher_label: torch.Tensor
    teacher_conf: torch.Tensor
    images: torch.Tensor
    output: PurifyOutput | None = None


@torch.no_grad()
def pseudo_labels(purifier, images_w, logits_w, ignore=None, gt=None) -> PseudoLabels:
    """Pseudo-labels [B,H,W] and confidences from the teacher's weak-view logits: FixMatch's
    argmax / max softmax, re-checked by VLM-PP when a purifier is given. `gt` [B,H,W]: the batch's
    ground truth, handed to a classifier that reads it (the oracle upper bound, `set_gt`)."""
    conf_t, label_t = logits_w.float().softmax(1).max(1)
    if purifier is None:
        return PseudoLabels(label_t, conf_t, label_t, conf_t, images_w)
    if gt is not None and callable(getattr(purifier.classifier, "set_gt", None)):
        purifier.classifier.set_gt(gt)
    out = purifier(images_w, logits_w, ignore=ignore)
    return PseudoLabels(out.label, out.conf, label_t, conf_t, images_w, out)
