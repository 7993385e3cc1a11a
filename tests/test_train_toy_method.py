"""Adding an S4 method is one module plus one registry line: this file is the module (a toy
self-training method, the student labelling its own weak views) and `register_method` the line."""

import json

import pytest
import torch
from helpers import TINY_RUN

from semiearth.config import load_config
from semiearth.train.losses import supervised_loss, unsupervised_loss
from semiearth.train.methods import register_method
from semiearth.train.methods.base import Method, StepResult, autocast, mix_targets, to_device

pytestmark = pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound).*")


class SelfTraining(Method):
    """The student's own confident (VLM-PP-purified) pseudo-labels on the weak view; no teacher."""

    name = "self_training"
    TEACHERS = {}

    def train_step(self, batch_x, batch_u, ctx):
        dev, student = self.device, self.students["student"]
        img_x, mask_x = batch_x["image"].to(dev), batch_x["mask"].to(dev)
        u = to_device(batch_u, dev)
        with torch.no_grad():
            logits_w = student(u["image_w"]).float()
        label, conf, valid = mix_targets(
            ctx.pseudo_labels(u["image_w"], logits_w, u), u["pad"], torch.zeros_like(u["box"])
        )
        with autocast(self.cfg, dev):
            loss_x = supervised_loss(self.ddp["student"](img_x), mask_x)
            loss_u, ratio = unsupervised_loss(self.ddp["student"](u["image_w"]), label, conf, valid, 0.5)
            loss = loss_x + loss_u
        self.backward(loss)
        self.optimiser_step(ctx.iteration)
        return StepResult(loss.item(), loss_x.item(), loss_u.item(), float(ratio), ctx.purified)


register_method("self_training", SelfTraining)


def test_a_method_from_one_file_trains_with_vlmpp(tmp_path):
    from semiearth.train import train

    overrides = [*TINY_RUN, "train.iters=2", "train.method=self_training", "purify.method=oracle", "purify.every=1"]
    result = train(load_config(None, [*overrides, f"out_dir={tmp_path}"]))
    assert not result["interrupted"] and 0 <= result["test"]["mIoU"] <= 1
    records = [json.loads(line) for line in open(tmp_path / "purify.jsonl")]
    assert records, "VLM-PP purified the toy method's pseudo-labels"
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["method"] == "self_training"
