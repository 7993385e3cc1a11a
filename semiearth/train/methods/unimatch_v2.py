"""UniMatch V2 (Yang et al., TPAMI 2025): FixMatch-EMA with two strong views of each weak view and
complementary channel dropout between them.

teacher (EMA) on the weak view -> pseudo-labels (VLM-PP) -> two strong views, each CutMixed with its
own box (and its own copy of the targets) -> one student forward over labelled + both strong views,
where the encoder features of the two strong views of an image see complementary channel halves
(x2 to keep their scale; a random half of the images keep every channel) -> (L_s + (L_u1 + L_u2) / 2) / 2.

The feature dropout acts on what the model's `decoder` receives (every model in semiearth.models
passes its encoder features to `decoder`), so it works for any of them. Unlike the authors' two
student forwards, one forward covers the labelled and strong images (as our FixMatch does).
"""

from __future__ import annotations

import contextlib

import torch

from semiearth.options import UniMatchV2Options  # train.method_options (checked at load)
from semiearth.train.augment import apply_cutmix
from semiearth.train.losses import supervised_loss, unsupervised_loss
from semiearth.train.methods.base import Method, StepContext, StepResult, autocast, mix_targets


def complementary_masks(n: int, channels: int, drop_images: float, device) -> torch.Tensor:
    """[2n, channels] channel masks for the two strong views of n images: rows i and n+i are
    complementary (each channel 2 in one and 0 in the other) for a random drop_images share of the
    images, and all ones for the others."""
    first = torch.bernoulli(torch.full((n, channels), 0.5, device=device)) * 2
    second = 2 - first
    kept = torch.randperm(n, device=device)[: n - int(n * drop_images)]
    first[kept] = 1.0
    second[kept] = 1.0
    return torch.cat([first, second])


@contextlib.contextmanager
def channel_dropout(model: torch.nn.Module, start: int, n: int, drop_images: float):
    """While active, the features that `model.decoder` receives (a tensor or list of [B,C,...]
    tensors) are multiplied, in rows start .. start + 2n, by complementary channel masks."""

    def hook(_module, args):
        feats, *rest = args

        def drop(f):
            mask = torch.ones(f.shape[:2], dtype=f.dtype, device=f.device)
            mask[start : start + 2 * n] = complementary_masks(n, f.shape[1], drop_images, f.device).to(f.dtype)
            return f * mask.view(*mask.shape, *([1] * (f.dim() - 2)))

        feats = drop(feats) if isinstance(feats, torch.Tensor) else type(feats)(drop(f) for f in feats)
        return (feats, *rest)

    handle = model.decoder.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class UniMatchV2(Method):
    name = "unimatch_v2"
    strong_views = 2
    Options = UniMatchV2Options

    def train_step(self, batch_x: dict, batch_u: dict | None, ctx: StepContext) -> StepResult:
        cfg, dev = self.cfg, self.device
        img_x, mask_x, u = self.to_device(batch_x, batch_u)
        pseudo = self.teacher_targets(u, ctx)
        views = []
        for img, box in ((u["image_s"], u["box"]), (u["image_s2"], u["box2"])):
            views.append((apply_cutmix(img, box), *mix_targets(pseudo, u["pad"], box)))
        nx, nu = img_x.shape[0], views[0][0].shape[0]
        with ctx.timer("student"):
            with autocast(cfg, dev), channel_dropout(self.students["student"], nx, nu, self.options.drop_images):
                pred = self.ddp["student"](torch.cat([img_x, views[0][0], views[1][0]]))
                pred_x, pred_s1, pred_s2 = pred.split([nx, nu, nu])
                loss_x = supervised_loss(pred_x, mask_x, cfg.data.ignore_index)
                losses = [
                    unsupervised_loss(p, *v[1:], cfg.train.threshold)
                    for p, v in zip((pred_s1, pred_s2), views, strict=True)
                ]
                loss_u = (losses[0][0] + losses[1][0]) / 2
                loss = (loss_x + loss_u) / 2
            self.backward(loss)
        with ctx.timer("optimiser"):
            self.optimiser_step(ctx.iteration)
        ratio = (losses[0][1] + losses[1][1]) / 2
        return StepResult(loss.detach(), loss_x.detach(), loss_u.detach(), ratio.detach(), ctx.purified)
