"""FixMatch with an EMA teacher (UniMatch-V2's `fixmatch.py`): the baseline of SemiEarth.

teacher (EMA) on the weak view -> pseudo-labels (VLM-PP) -> CutMix of the strong view and targets
-> one student forward over labelled + strong images -> (L_s + L_u) / 2, L_u the cross-entropy on
pixels with confidence >= train.threshold -> AdamW -> EMA teacher.
"""

from __future__ import annotations

import torch

from semiearth.train.augment import apply_cutmix
from semiearth.train.losses import supervised_loss, unsupervised_loss
from semiearth.train.methods.base import Method, StepContext, StepResult, autocast, mix_targets


class FixMatch(Method):
    name = "fixmatch"

    def train_step(self, batch_x: dict, batch_u: dict | None, ctx: StepContext) -> StepResult:
        cfg, dev = self.cfg, self.device
        img_x, mask_x, u = self.to_device(batch_x, batch_u)
        pseudo = self.teacher_targets(u, ctx)
        label, conf, valid = mix_targets(pseudo, u["pad"], u["box"])
        img_s = apply_cutmix(u["image_s"], u["box"])
        with ctx.timer("student"):
            with autocast(cfg, dev):
                pred_x, pred_s = self.ddp["student"](torch.cat([img_x, img_s])).split([img_x.shape[0], img_s.shape[0]])
                loss_x = supervised_loss(pred_x, mask_x, cfg.data.ignore_index)
                loss_u, ratio = unsupervised_loss(pred_s, label, conf, valid, cfg.train.threshold)
                loss = (loss_x + loss_u) / 2
            self.backward(loss)
        with ctx.timer("optimiser"):
            self.optimiser_step(ctx.iteration)
        return StepResult(loss.detach(), loss_x.detach(), loss_u.detach(), ratio, ctx.purified)
