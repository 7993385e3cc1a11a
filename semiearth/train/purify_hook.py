"""The VLM-PP hook: build the purifier from the config and turn teacher logits into targets.

The trainer only needs `pseudo_labels(...)`: without a purifier it is FixMatch's argmax/max
softmax; with one, VLM-PP (semiearth.purify) re-checks the low-confidence regions.
"""

from __future__ import annotations

import time

import torch


def build_purifier(cfg, data_cfg, labelled_dataset, device, log=print):
    """A `semiearth.purify.VLMPurifier` for `cfg` (a PurifyConfig), or None for method none."""
    if cfg.method == "none":
        return None
    try:
        import semiearth.purify as vp
    except ImportError as err:
        raise RuntimeError(f"purify.method={cfg.method} needs semiearth.purify ({err}); use purify: none") from err
    t0 = time.perf_counter()
    if cfg.method == "prototype":
        options = {"device": device, **cfg.classifier_options}
        classifier = vp.PrototypeClassifier(
            encoder=cfg.encoder, num_classes=data_cfg.num_classes, class_names=data_cfg.class_names, **options
        )
    elif cfg.method == "openclip":
        classifier = vp.OpenClipClassifier(class_names=data_cfg.class_names, **cfg.classifier_options)
    elif cfg.method == "vlm":
        options = {"device": device, **cfg.classifier_options}
        classifier = vp.HFVLMClassifier(class_names=data_cfg.class_names, **options)
        log(
            f"[semiearth] VLM classifier {classifier.model_name} loaded in {time.perf_counter() - t0:.1f}s "
            f"({len(classifier.answers)} answer phrasings, view {classifier.view})"
        )
    else:
        raise ValueError(f"purify.method: unknown method {cfg.method!r}")
    purifier = vp.VLMPurifier(
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
        mask_crops=getattr(classifier, "mask_crops", True),
    )
    if cfg.method == "prototype":
        n = len(labelled_dataset) if not cfg.fit_images else min(cfg.fit_images, len(labelled_dataset))
        items = [labelled_dataset[i] for i in range(n)]
        if not _same_size(items):
            raise ValueError("purify: the prototype classifier is fitted on labelled images of one size")
        images = torch.stack([it["image"] for it in items]).to(device)
        masks = torch.stack([it["mask"] for it in items]).to(device)
        mean = torch.tensor(data_cfg.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(data_cfg.std, device=device).view(1, 3, 1, 1)
        classifier.fit((images - mean) / std, masks, purifier=purifier, ignore_index=data_cfg.ignore_index)
        log(
            f"[semiearth] prototype classifier ({cfg.encoder}) fitted on {n} labelled images in "
            f"{time.perf_counter() - t0:.1f}s"
        )
    return purifier


def _same_size(items) -> bool:
    return len({tuple(it["image"].shape) for it in items}) == 1


def _count(out, *names) -> int:
    for name in names:
        value = getattr(out, name, None)
        if value is not None:
            return int(value)
    return 0


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
    info["records"] = list(getattr(out, "records", []) or [])
    info["timings"] = dict(getattr(out, "timings", {}) or {})
    info["relabelled"] = _count(out, "relabelled", "n_relabelled", "pixels_relabelled")
    info["confirmed"] = _count(out, "confirmed", "n_confirmed", "pixels_confirmed")
    info["regions"] = _count(out, "num_regions", "n_regions") or len(info["records"])
    info["output"] = out
    return out.label, out.conf, info
