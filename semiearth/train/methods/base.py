"""The method seam: what every S4 method owns, and the pieces they share.

A `Method` owns its networks (students trained by the optimiser, EMA teachers), one AdamW over all
students (backbone / head learning-rate split, poly decay), the grad scaler, how it turns a labelled
and an unlabelled batch into a loss (`train_step`), its checkpoint state and which network
evaluation and prediction use (`default_weights`; `--weights` names are the keys of `networks()`).
The loop in semiearth/train/trainer.py knows nothing else about it.

Pseudo-labels come from one call for every method, `StepContext.pseudo_labels`: argmax / max
softmax of the teacher's logits, purified by VLM-PP every purify.every iterations. The result
(`PseudoLabels`) carries label, confidence and class probabilities, so hard-label methods (FixMatch,
CPS, UniMatch V2) and soft-target methods (Mean Teacher) both consume what VLM-PP purified.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from semiearth.models import build_model
from semiearth.models.ensemble import MeanProbabilities
from semiearth.options import NoOptions  # a method without train.method_options
from semiearth.timing import StageTimer
from semiearth.train.augment import apply_cutmix
from semiearth.train.checkpoint import CheckpointError, load_weights
from semiearth.train.ema import create_teacher, ema_momentum, ema_update
from semiearth.train.purify_hook import PseudoLabels, pseudo_labels


@dataclass
class StepResult:
    """One iteration's losses and mask ratio, and the pseudo-labels that VLM-PP purified this step.

    The values are 0-d tensors on the device (detached; floats are accepted too): the trainer reads
    them on the host at its logging steps only, so that a step needs no host-device sync for them."""

    loss: torch.Tensor | float
    loss_x: torch.Tensor | float
    loss_u: torch.Tensor | float
    mask_ratio: torch.Tensor | float
    purified: list[PseudoLabels] = field(default_factory=list)


@dataclass
class StepContext:
    """What the loop hands a method's step: the iteration, the stage timer and the purifier."""

    iteration: int
    timer: StageTimer
    purifier: object = None  # semiearth.purify.VLMPurifier or None
    purify_every: int = 1
    purified: list[PseudoLabels] = field(default_factory=list)

    def pseudo_labels(self, images_w: torch.Tensor, logits_w: torch.Tensor, batch_u: dict) -> PseudoLabels:
        """Targets from teacher logits [B,C,H,W] of the weak view; VLM-PP every purify_every iterations.
        The batch's padding is ignored by VLM-PP and its ground truth `gt_w` reaches the classifiers
        that read one (the oracle upper bound)."""
        now = self.purifier is not None and self.iteration % self.purify_every == 0
        with self.timer("purify"):
            pseudo = pseudo_labels(
                self.purifier if now else None, images_w, logits_w, batch_u["pad"], batch_u.get("gt_w")
            )
        if now:
            self.purified.append(pseudo)
        return pseudo


def autocast(cfg, device):
    """Mixed precision per train.amp: bf16 on CUDA and the CPU, fp16 on CUDA (with the grad scaler)."""
    amp = cfg.train.amp
    if amp == "none" or (amp == "fp16" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def param_groups(model, cfg) -> list[dict]:
    """Backbone at lr, everything else (decoder/head) at lr * head_lr_mult."""
    backbone = {id(p) for p in model.backbone.parameters()}
    head = [p for p in model.parameters() if id(p) not in backbone]
    t = cfg.train
    return [
        {"params": list(model.backbone.parameters()), "lr": t.lr},
        {"params": head, "lr": t.lr * t.head_lr_mult},
    ]


def poly_lambda(cfg):
    """Linear warm-up over train.warmup_iters, then (1 - it / iters) ** poly_power."""
    t = cfg.train

    def factor(it: int) -> float:
        if t.warmup_iters and it < t.warmup_iters:
            return (it + 1) / t.warmup_iters
        return (1 - min(it, t.iters - 1) / t.iters) ** t.poly_power

    return factor


def grad_norm(modules) -> torch.Tensor | None:
    """The norm of all gradients of `modules` (a 0-d device tensor; NaN/inf when any is), no sync."""
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def scaler_overflow(scaler, optimizer) -> torch.Tensor | None:
    """1 (a device tensor) when the grad scaler found inf/NaN gradients and skipped this step; read
    between `scaler.step` and `scaler.update`, which forgets it."""
    state = getattr(scaler, "_per_optimizer_states", {}).get(id(optimizer), {})
    found = list(state.get("found_inf_per_device", {}).values())
    if not found:
        return None
    return found[0].reshape(()) if len(found) == 1 else torch.stack([f.reshape(()) for f in found]).sum()


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on `device` (names and other values unchanged), copied asynchronously:
    the trainer's loader pins its batches in memory when training on CUDA."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mix_targets(pseudo: PseudoLabels, pad: torch.Tensor, box: torch.Tensor):
    """(label, conf, valid) CutMixed with the boxes of the strong images (valid = not padding)."""
    return apply_cutmix(pseudo.label, box), apply_cutmix(pseudo.conf, box), apply_cutmix(~pad, box)


class Method:
    """Base of the S4 methods. A subclass sets the class attributes and writes `train_step`.

    STUDENTS: names of the networks the optimiser trains (each built from cfg.model; the first gets
    the seed's initial weights, the next ones continue the same random stream, so they differ).
    TEACHERS: {name: student} EMA teachers, theta_t <- m theta_t + (1 - m) theta_s after every step.
    ENSEMBLES: {name: (network, ...)}: named averages that eval/predict can use as one model.
    semi: whether the method reads unlabelled batches; strong_views: strong views per unlabelled image.
    Options: the pydantic model of `train.method_options` (semiearth/options.py; the config checks the
    options against it when loaded, through METHOD_OPTIONS in semiearth/registry.py).
    """

    name = ""  # the registry name (METHODS in semiearth/train/methods/__init__.py)
    STUDENTS: tuple[str, ...] = ("student",)
    TEACHERS: dict[str, str] = {"teacher": "student"}
    ENSEMBLES: dict[str, tuple[str, ...]] = {}
    semi = True
    strong_views = 1
    Options = NoOptions

    def __init__(self, cfg, device, rank: int = 0, world: int = 1):
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.options = self.Options(**cfg.train.method_options)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.students = {name: self._new_network() for name in self.STUDENTS}
        self.teachers = {name: create_teacher(self.students[src]) for name, src in self.TEACHERS.items()}
        groups = [g for m in self.students.values() for g in param_groups(m, cfg)]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, poly_lambda(cfg))
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.train.amp == "fp16")
        self.ddp = {name: self._wrap(m) for name, m in self.students.items()}
        self.step_health: dict[str, torch.Tensor] = {}  # the last optimiser step's signs of divergence
        if cfg.train.amp == "fp16" and device.type != "cuda" and rank == 0:
            print("[semiearth] WARNING train.amp fp16 needs CUDA (its gradient scaler): this CPU run is float32; "
                  "use train.amp: bf16 for mixed precision on the CPU", file=sys.stderr)  # fmt: skip
        torch.manual_seed(cfg.train.seed * 1000 + rank)  # per-rank dropout streams

    @property
    def default_weights(self) -> str:
        """The network that validation, test, semiearth-eval and semiearth-predict use by default."""
        return next(iter(self.TEACHERS), self.STUDENTS[0])

    def _new_network(self) -> torch.nn.Module:
        model = build_model(self.cfg.model, self.cfg.data.num_classes)
        if self.world > 1 and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.device)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        return DDP(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def networks(self) -> dict[str, torch.nn.Module]:
        """Every network by its `--weights` name (bare modules, not DDP wrappers)."""
        return {**self.students, **self.teachers}

    def eval_network(self) -> torch.nn.Module:
        """The network (or named ensemble) `default_weights`, which validation evaluates."""
        name, nets = self.default_weights, self.networks()
        if name in self.ENSEMBLES:
            return MeanProbabilities([nets[n] for n in self.ENSEMBLES[name]])
        return nets[name]

    def train(self) -> None:
        """Students in training mode (teachers stay in eval mode)."""
        for m in self.students.values():
            m.train()

    # ------------------------------------------------------------------------- one iteration
    def train_step(self, batch_x: dict, batch_u: dict | None, ctx: StepContext) -> StepResult:
        raise NotImplementedError

    def to_device(self, batch_x: dict, batch_u: dict | None):
        """(labelled images, labelled masks, the unlabelled batch) on the method's device."""
        u = to_device(batch_u, self.device) if batch_u is not None else None
        x = to_device({"image": batch_x["image"], "mask": batch_x["mask"]}, self.device)
        return x["image"], x["mask"], u

    def teacher_targets(self, u: dict, ctx: StepContext, teacher: str = "teacher") -> PseudoLabels:
        """The EMA teacher's pseudo-labels of the weak view (purified by VLM-PP where it runs)."""
        with ctx.timer("teacher"), torch.no_grad(), autocast(self.cfg, self.device):
            logits_w = self.teachers[teacher](u["image_w"]).float()
        return ctx.pseudo_labels(u["image_w"], logits_w, u)

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def optimiser_step(self, iteration: int) -> None:
        """Optional gradient clipping (per student), the AdamW step, the lr schedule, the EMA teachers.

        Leaves the step's signs of divergence in `step_health` (device tensors, read by the trainer
        at its logging steps): `grad_norm` (the clipping norm, else the norm of all gradients) and,
        under fp16's grad scaler, `overflow` (1 when the scaler skipped this step)."""
        health = {}
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norms = [
                torch.nn.utils.clip_grad_norm_(m.parameters(), self.cfg.train.grad_clip) for m in self.ddp.values()
            ]
            health["grad_norm"] = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
        elif not self.scaler.is_enabled():
            health["grad_norm"] = grad_norm(self.students.values())
        self.scaler.step(self.optimizer)
        if self.scaler.is_enabled():
            health["overflow"] = scaler_overflow(self.scaler, self.optimizer)
        self.scaler.update()
        self.step_health = {k: v for k, v in health.items() if v is not None}
        self.scheduler.step()
        momentum = ema_momentum(iteration, self.cfg.train.ema_momentum)
        for name, src in self.TEACHERS.items():
            ema_update(self.teachers[name], self.students[src], momentum)

    # ------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The method's part of a checkpoint: its name, every network's weights, optimiser state."""
        return {
            "method": self.name,
            "weights": {name: m.state_dict() for name, m in self.networks().items()},
            "default_weights": self.default_weights,
            "ensembles": {name: list(members) for name, members in self.ENSEMBLES.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict, path: str) -> None:
        """Restore from a checkpoint of the same method (the caller checked the method's name)."""
        for name, module in self.networks().items():
            if name not in state["weights"]:
                raise CheckpointError(f"checkpoint {path} holds no {name} weights for method {self.name}")
            load_weights(module, state["weights"][name], name, path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:  # empty when written without fp16 (train.amp changed): a fresh scaler
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {path}: optimiser state does not match this run: {err}") from err

    def apply_schedule(self) -> None:
        """After loading a checkpoint written under another lr schedule (train.lr, head_lr_mult,
        weight_decay, poly_power, warmup_iters, iters): this config's base learning rates and weight
        decay in every parameter group and the scheduler, and the lr of the current iteration under
        this config's schedule, so that the rest of the run follows the schedule config.yaml records."""
        fresh = [g for m in self.students.values() for g in param_groups(m, self.cfg)]
        factor = poly_lambda(self.cfg)(self.scheduler.last_epoch)
        for group, new in zip(self.optimizer.param_groups, fresh, strict=True):
            group["initial_lr"] = new["lr"]
            group["lr"] = new["lr"] * factor
            group["weight_decay"] = self.cfg.train.weight_decay
        self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
