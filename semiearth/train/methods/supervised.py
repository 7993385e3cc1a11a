"""Supervised only: the labelled images, cross-entropy, AdamW; an EMA teacher of the student is kept
and evaluated, as UniMatch-V2's supervised baseline does, so that every method is judged the same way."""

from __future__ import annotations

from semiearth.train.losses import supervised_loss
from semiearth.train.methods.base import Method, StepContext, StepResult, autocast


class Supervised(Method):
    name = "supervised"
    semi = False

    def train_step(self, batch_x: dict, batch_u: dict | None, ctx: StepContext) -> StepResult:
        cfg, dev = self.cfg, self.device
        img_x, mask_x, _ = self.to_device(batch_x, None)
        with ctx.timer("student"):
            with autocast(cfg, dev):
                loss = supervised_loss(self.ddp["student"](img_x), mask_x, cfg.data.ignore_index)
            self.backward(loss)
        with ctx.timer("optimiser"):
            self.optimiser_step(ctx.iteration)
        value = loss.detach()
        return StepResult(value, value, 0.0, 0.0)
