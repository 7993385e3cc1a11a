"""The VLM-PP hook: build the purifier from the config and turn teacher logits into targets.

Every method gets its targets through `pseudo_labels(...)` (via StepContext in methods/base.py):
without a purifier it is FixMatch's argmax/max softmax; with one, VLM-PP (semiearth.purify)
re-checks the low-confidence regions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from semiearth.purify.classifiers.registry import ClassifierContext, build_classifier
from semiearth.purify.purifier import PurifyOutput, VLMPurifier


def build_purifier(cfg, data_cfg, labelled_dataset, device, log=print):
    """A `semiearth.purify.VLMPurifier` for `cfg` (a PurifyConfig), or None for method none.

    The classifier is `cfg.method` in the classifier registry, built by its class's `from_config`.
    `cfg.topk` / `cfg.prob_floor` ("score only what can change") go to the purifier itself, which
    computes the candidate-class mask only for classifiers that take `classes` (the VLM, also under
    AbstainingClassifier); the oracle, noisy oracle, prototypes and CLIP score every class as before.
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
        topk=cfg.topk,
        prob_floor=cfg.prob_floor,
    )


@dataclass
class PseudoLabels:
    """Targets of the unlabelled batch from the teacher's weak-view logits.

    label [B,H,W] int64, conf [B,H,W] float32 and `prob` [B,C,H,W] float32 (class probabilities,
    computed on first use): purified by VLM-PP when `output` is set, else the teacher's own.
    teacher_label / teacher_conf: the teacher's argmax and max softmax (with VLM-PP, purify_stats'
    label and conf, which it computed in its one pass over the logits); teacher_prob: its softmax
    (computed on first use where VLM-PP ran).
    images: the weak view (for panels). output: VLM-PP's PurifyOutput (records, timings, counts) or None.
    """

    label: torch.Tensor
    conf: torch.Tensor
    teacher_label: torch.Tensor
    teacher_conf: torch.Tensor
    images: torch.Tensor
    output: PurifyOutput | None = None
    logits: torch.Tensor | None = field(default=None, repr=False)
    purifier: VLMPurifier | None = field(default=None, repr=False)
    _teacher_prob: torch.Tensor | None = field(default=None, repr=False)

    @property
    def teacher_prob(self) -> torch.Tensor:
        if self._teacher_prob is None:
            with torch.no_grad():
                self._teacher_prob = self.logits.float().softmax(1)
        return self._teacher_prob

    @functools.cached_property
    def prob(self) -> torch.Tensor:
        if self.output is None:
            return self.teacher_prob
        with torch.no_grad():
            return self.purifier.purified_probs(self.logits, self.output)


@torch.no_grad()
def pseudo_labels(purifier, images_w, logits_w, ignore=None, gt=None) -> PseudoLabels:
    """Pseudo-labels from the teacher's weak-view logits [B,C,H,W]: FixMatch's argmax / max softmax,
    re-checked by VLM-PP when a purifier is given. `ignore` [B,H,W] bool: padding. `gt` [B,H,W]:
    the batch's ground truth, which the purifier hands to classifiers that read it (the oracle).
    With VLM-PP the teacher's label and confidence are purify_stats' (no second pass over the logits)."""
    if purifier is None:
        prob_t = logits_w.float().softmax(1)
        conf_t, label_t = prob_t.max(1)
        return PseudoLabels(label_t, conf_t, label_t, conf_t, images_w, logits=logits_w, _teacher_prob=prob_t)
    out = purifier(images_w, logits_w, ignore=ignore, gt=gt)
    return PseudoLabels(out.label, out.conf, out.stats.label, out.stats.conf, images_w, out, logits_w, purifier)
