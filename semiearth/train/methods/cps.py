"""Cross pseudo supervision (Chen et al., CVPR 2021), CutMix variant: two students of different
initialisation, each trained on the other's hard pseudo-labels (purified by VLM-PP).

each student, in eval mode and without gradients, on the weak view -> its pseudo-labels (VLM-PP
purifies them) -> CutMix of the strong view and both sets of targets -> both students on labelled
+ strong images -> L_s of each + cps_weight * (CE of a on b's labels + CE of b on a's labels), the
CE over pixels with confidence >= threshold (0, the paper's choice, keeps every pixel).
No EMA teacher; evaluation uses `eval_weights`: student_a, student_b or mean (their average).
"""

from __future__ import annotations

import torch

from semiearth.options import CPSOptions  # train.method_options (a pydantic model, checked at load)
from semiearth.train.augment import apply_cutmix
from semiearth.train.losses import supervised_loss, unsupervised_loss
from semiearth.train.methods.base import Method, StepContext, StepResult, autocast, mix_targets


class CPS(Method):
    name = "cps"
    STUDENTS = ("student_a", "student_b")
    TEACHERS = {}
    ENSEMBLES = {"mean": ("student_a", "student_b")}
    Options = CPSOptions

    @property
    def default_weights(self) -> str:
        return self.options.eval_weights

    @torch.no_grad()
    def _predict(self, name: str, images: torch.Tensor) -> torch.Tensor:
        net = self.students[name]
        net.eval()
        try:
            with autocast(self.cfg, self.device):
                return net(images).float()
        finally:
            net.train()

    def train_step(self, batch_x: dict, batch_u: dict | None, ctx: StepContext) -> StepResult:
        cfg, dev, opt = self.cfg, self.device, self.options
        img_x, mask_x, u = self.to_device(batch_x, batch_u)
        targets = {}
        for name in self.STUDENTS:
            with ctx.timer("teacher"):
                logits_w = self._predict(name, u["image_w"])
            targets[name] = mix_targets(ctx.pseudo_labels(u["image_w"], logits_w, u), u["pad"], u["box"])
        img_s = apply_cutmix(u["image_s"], u["box"])
        nx = img_x.shape[0]
        with ctx.timer("student"):
            loss_x, loss_u, ratio = 0.0, 0.0, 0.0
            with autocast(cfg, dev):
                for name, other in zip(self.STUDENTS, reversed(self.STUDENTS), strict=True):
                    pred_x, pred_s = self.ddp[name](torch.cat([img_x, img_s])).split([nx, img_s.shape[0]])
                    lu, r = unsupervised_loss(pred_s, *targets[other], opt.threshold)
                    loss_x = loss_x + supervised_loss(pred_x, mask_x, cfg.data.ignore_index)
                    loss_u, ratio = loss_u + lu, ratio + r / 2
                loss = loss_x + opt.cps_weight * loss_u
            self.backward(loss)
        with ctx.timer("optimiser"):
            self.optimiser_step(ctx.iteration)
        return StepResult(loss.detach(), loss_x.detach() / 2, loss_u.detach() / 2, ratio.detach(), ctx.purified)
