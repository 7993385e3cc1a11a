"""SemiEarth's teacher-student training with VLM-PP as a torchgeo task (Lightning).

`TeacherStudentTask` is torchgeo's `SemanticSegmentationTask` (same arguments, model, loss, metrics,
optimiser, validation and test steps) whose training step adds the unlabelled images: an EMA
teacher labels each unlabelled batch, `semiearth.purify.VLMPurifier` purifies those pseudo-labels
(when a purifier is given), and the student learns them on a strong view where the purified
confidence reaches `threshold` (FixMatch-EMA with VLM-PP, without CutMix), beside its supervised loss
on the labelled batch. Validation, test and prediction use the teacher (`evaluate_teacher`), as
semiearth-train does. The change to a torchgeo setup is three lines::

    from semiearth.lightning import PrototypeClassifier, TeacherStudentTask, VLMPurifier
    unlabelled = DataLoader(LoveDA(root, split="test"), batch_size=8, shuffle=True)  # images only
    task = TeacherStudentTask(unlabelled, VLMPurifier(PrototypeClassifier(num_classes=8), 8),
                              model="unet", backbone="resnet50", num_classes=8, ignore_index=0)
    # was: task = SemanticSegmentationTask(model="unet", backbone="resnet50", num_classes=8, ignore_index=0)

The unlabelled batches (dicts with `image`, or image tensors) get the datamodule's own device
transfer and augmentation/normalisation (`on_after_batch_transfer`), like the labelled ones. The
purifier must be told how the images are normalised (`VLMPurifier(image_mean=, image_std=)`; torchgeo's
default datamodules divide by 255, which is the purifier's default of mean 0, std 1) and build its
classifier on the training device (`PrototypeClassifier(device="cuda")` on a GPU). A classifier with
a `fit` (PrototypeClassifier) is fitted on up to `fit_images` labelled images when training starts.
"""

from __future__ import annotations

import torch
from torchgeo.trainers import SemanticSegmentationTask

from semiearth.purify import PrototypeClassifier, VLMPurifier
from semiearth.train.augment import strong_photometric
from semiearth.train.ema import create_teacher, ema_momentum, ema_update
from semiearth.train.losses import unsupervised_loss

__all__ = ["PrototypeClassifier", "TeacherStudentTask", "VLMPurifier"]


class TeacherStudentTask(SemanticSegmentationTask):
    """torchgeo's SemanticSegmentationTask trained teacher-student on `unlabeled` images, its
    pseudo-labels purified by `purifier` (a semiearth.purify.VLMPurifier, or None for plain FixMatch-EMA).

    Args beyond torchgeo's (passed on as keywords): `threshold` (confidence admitted into the
    unlabelled loss), `ema_momentum` (the teacher's, min(1 - 1/(t+1), m)), `purify_every` (purify
    every k steps; plain teacher labels in between), `fit_images` (labelled images a classifier with
    `fit` is fitted on at train start), `evaluate_teacher`, `seed` (the strong views)."""

    ignore = ("weights", "unlabeled", "purifier")  # not saved as hyperparameters

    def __init__(
        self,
        unlabeled,
        purifier: VLMPurifier | None = None,
        *,
        threshold: float = 0.95,
        ema_momentum: float = 0.99,
        purify_every: int = 1,
        fit_images: int = 16,
        evaluate_teacher: bool = True,
        seed: int = 0,
        **task_kwargs,
    ) -> None:
        if not 0.0 <= threshold <= 1.0 or purify_every < 1 or not 0.0 <= ema_momentum < 1.0:
            raise ValueError(
                f"TeacherStudentTask: threshold {threshold} must be in [0, 1], purify_every {purify_every} >= 1, "
                f"ema_momentum {ema_momentum} in [0, 1)"
            )
        self.unlabeled, self.purifier, self._unlabelled_iter = unlabeled, purifier, None
        super().__init__(**task_kwargs)
        self.teacher = create_teacher(self.model)

    # -- the teacher -------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Lightning puts the module in train mode: the teacher stays in eval mode (BN statistics are
        EMA'd from the student, never computed on the teacher's own batches)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B,C,H,W]: the student while training, the teacher otherwise (evaluate_teacher)."""
        if not self.training and self.hparams["evaluate_teacher"]:
            return self.teacher(x)
        return super().forward(x)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        ema_update(self.teacher, self.model, ema_momentum(self.global_step, self.hparams["ema_momentum"]))

    # -- data ----------------------------------------------------------------------------------------
    def _transform(self, batch: dict) -> dict:
        """The datamodule's augmentation/normalisation of a batch already on the device."""
        dm = getattr(self.trainer, "datamodule", None)
        return dm.on_after_batch_transfer(batch, 0) if dm is not None else batch

    def _next_unlabelled(self) -> torch.Tensor:
        """The next unlabelled batch [B,3,H,W], passing over `unlabeled` (a DataLoader or any re-iterable)
        again and again, transformed like the labelled batches."""
        if self._unlabelled_iter is None:
            self._unlabelled_iter = iter(self.unlabeled)
        try:
            batch = next(self._unlabelled_iter)
        except StopIteration:  # a new pass (a DataLoader reshuffles)
            self._unlabelled_iter = iter(self.unlabeled)
            batch = next(self._unlabelled_iter)
        image = batch["image"] if isinstance(batch, dict) else batch
        return self._transform({"image": image.to(self.device)})["image"]

    def _labelled_images(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to n labelled (images, masks) from the train loader, transformed as in training."""
        dm = getattr(self.trainer, "datamodule", None)
        loader = dm.train_dataloader() if dm is not None else self.trainer.train_dataloader
        images, masks = [], []
        for batch in loader:
            batch = self._transform({"image": batch["image"].to(self.device), "mask": batch["mask"].to(self.device)})
            images.append(batch["image"])
            masks.append(batch["mask"].long().reshape(batch["image"].shape[0], *batch["image"].shape[-2:]))
            if sum(len(i) for i in images) >= n:
                break
        return torch.cat(images)[:n], torch.cat(masks)[:n]

    def on_train_start(self) -> None:
        """Fit the purifier's classifier (when it has `fit` and is not fitted) on labelled images."""
        clf = getattr(self.purifier, "classifier", None)
        if clf is None or not callable(getattr(clf, "fit", None)) or getattr(clf, "prototypes", None) is not None:
            return
        if self.hparams["fit_images"] < 1:
            return
        images, masks = self._labelled_images(self.hparams["fit_images"])
        ignore = self.hparams["ignore_index"]
        p = self.purifier
        clf.fit(
            images,
            masks,
            image_mean=p.image_mean,
            image_std=p.image_std,
            purifier=p,
            cell=p.cell,
            ignore_index=255 if ignore is None else ignore,
        )

    # -- one step ------------------------------------------------------------------------------------
    def pseudo_labels(self, images: torch.Tensor, logits: torch.Tensor, step: int):
        """(label [B,H,W] int64, conf [B,H,W], regions purified): VLM-PP every purify_every steps, else
        the teacher's argmax and max softmax."""
        if self.purifier is not None and step % self.hparams["purify_every"] == 0:
            out = self.purifier(images, logits)
            return out.label.to(images.device), out.conf.to(images.device), out.num_regions
        conf, label = logits.float().softmax(dim=1).max(dim=1)
        return label, conf, 0

    def strong_view(self, images: torch.Tensor) -> torch.Tensor:
        """UniMatch's photometric strong view of each image (in the [0, 1] range the purifier's
        image_mean/std undo), normalised back."""
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if self.purifier is not None:
            mean, std = self.purifier.image_mean, self.purifier.image_std
        m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
        g = torch.Generator().manual_seed(self.hparams["seed"] * 1_000_003 + self.global_step)
        rgb = (images * s + m).clamp(0, 1)
        strong = torch.stack([strong_photometric(img, g) for img in rgb])
        return (strong - m) / s

    def training_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Supervised loss on the labelled batch + the purified pseudo-labels' loss on an unlabelled one."""
        x, y = batch["image"], batch["mask"]
        u = self._next_unlabelled()
        with torch.no_grad():
            logits_w = self.teacher(u)
        label, conf, regions = self.pseudo_labels(u, logits_w, self.global_step)
        pred_x, pred_s = self.model(x), self.model(self.strong_view(u))
        loss_x = self.criterion(pred_x, y)
        ignore = self.hparams["ignore_index"]
        valid = torch.ones_like(label, dtype=torch.bool) if ignore is None else label != ignore
        loss_u, ratio = unsupervised_loss(pred_s, label, conf, valid, self.hparams["threshold"])
        loss = (loss_x + loss_u) / 2
        n = x.shape[0]
        self.train_metrics(pred_x, y)
        self.log_dict(self.train_metrics, batch_size=n)
        self.log_dict(
            {"train_loss": loss, "train_loss_x": loss_x, "train_loss_u": loss_u, "train_mask_ratio": ratio},
            batch_size=n,
        )
        self.log("train_purified_regions", float(regions), batch_size=n)
        return loss
