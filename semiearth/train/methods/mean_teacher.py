"""Mean Teacher (Tarvainen & Valpola, 2017) for segmentation: soft consistency of the student's
strong view to the EMA teacher's class probabilities (purified by VLM-PP), weighted by the usual
sigmoid ramp-up w(t) = consistency * exp(-5 (1 - t / rampup_iters)^2).

teacher (EMA) on the weak view -> probabilities p (VLM-PP purifies p where it runs) -> CutMix of the
strong view and of p -> student on labelled + strong images -> L_s + w(t) * L_c with L_c the
squared error between the student's softmax and p (summed over classes, averaged over valid pixels)
or their KL divergence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from semiearth.options import MeanTeacherOptions  # train.method_options (checked at load)
from semiearth.train.augment import apply_cutmix
from semiearth.train.losses import supervised_loss
from semiearth.train.methods.base import Method, StepContext, StepResult, autocast


def rampup(iteration: int, length: int) -> float:
    """exp(-5 (1 - t/length)^2) for t < length, then 1 (Laine & Aila's sigmoid ramp-up)."""
    if length == 0 or iteration >= length:
        return 1.0
    phase = 1.0 - iteration / length
    return math.exp(-5.0 * phase * phase)


def consistency_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
    """Soft consistency of logits [B,C,H,W] to target probabilities [B,C,H,W] over valid [B,H,W] pixels."""
    logp = logits.float().log_softmax(1)
    if kind == "mse":
        per_pixel = ((logp.exp() - target) ** 2).sum(1)
    else:
        per_pixel = F.kl_div(logp, target, reduction="none").sum(1)
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


class MeanTeacher(Method):
    name = "mean_teacher"
    Options = MeanTeacherOptions

    def train_step(self, batch_x: dict, batch_u: dict | None, ctx: StepContext) -> StepResult:
        cfg, dev, opt = self.cfg, self.device, self.options
        img_x, mask_x, u = self.to_device(batch_x, batch_u)
        pseudo = self.teacher_targets(u, ctx)
        target, valid = apply_cutmix(pseudo.prob, u["box"]), apply_cutmix(~u["pad"], u["box"])
        img_s = apply_cutmix(u["image_s"], u["box"])
        weight = opt.consistency * rampup(ctx.iteration, opt.rampup_iters)
        with ctx.timer("student"):
            with autocast(cfg, dev):
                pred_x, pred_s = self.ddp["student"](torch.cat([img_x, img_s])).split([img_x.shape[0], img_s.shape[0]])
                loss_x = supervised_loss(pred_x, mask_x, cfg.data.ignore_index)
                loss_u = consistency_loss(pred_s, target, valid, opt.loss)
                loss = loss_x + weight * loss_u
            self.backward(loss)
        with ctx.timer("optimiser"):
            self.optimiser_step(ctx.iteration)
        ratio = valid.float().mean()  # every valid pixel contributes to the consistency loss
        return StepResult(loss.detach(), loss_x.detach(), loss_u.detach(), ratio, ctx.purified)
