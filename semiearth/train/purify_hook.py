"""The VLM-PP hook: build the purifier from the config and turn teacher logits into targets.

The trainer only needs `pseudo_labels(...)`: without a purifier it is FixMatch's argmax/max
softmax; with one, VLM-PP (semiearth.purify) re-checks the low-confidence regions.
"""

from __future__ import annotations

import torch

from semiearth.purify.classifiers.registry import ClassifierContext, build_classifier
from semiearth.purify.purifier import VLMPurifier


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


@torch.no_grad()
def pseudo_labels(purifier, images_w, logits_w, ignore=None):
    """(label [B,H,W], conf [B,H,W], info) from the teacher's weak-view logits.

    info: teacher label/conf (for panels), VLM-PP records, per-stage timings and pixel counts.
    """
    probs = logits_w.float().softmax(1)
    conf_t, label_t = probs.max(1)
    info = {"label_t": label_t, "conf_t": conf_t, "records": [], "timings": {}, "relabelled": 0, "confirmed": 0}
    if purifier is None:
        return label_t, conf_t, info
    out = purifier(images_w, logits_w, ignore=ignore)
    info.update(
        records=out.records,
        timings=out.timings,
        relabelled=out.relabelled,
        confirmed=out.confirmed,
        regions=out.num_regions,
        output=out,
    )
    return out.label, out.conf, info
