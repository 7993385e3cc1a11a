"""The teacher-student trainer (UniMatch-V2 `fixmatch.py` lineage) with the VLM-PP hook.

One iteration (`train_step`, a screen of small named functions):
  unlabelled batch: EMA teacher on the weak view -> pseudo-labels, purified by VLM-PP every
                    purify.every iterations (`unlabelled_targets`) -> CutMix of strong views and targets
  student on labelled + strong views: CE, and CE masked by confidence >= threshold (`student_loss`)
  loss = (L_s + L_u) / 2; AdamW (backbone / head lr split, poly decay); EMA teacher (`optimiser_step`).
Everything else here is set-up and bookkeeping: data, model, checkpoints, logs, evaluation. The run
folder and the baseline comparison are in runs.py, the panels in log.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from semiearth.config import Config, config_to_dict, save_config
from semiearth.data import build_dataset
from semiearth.eval import evaluate
from semiearth.models import build_model
from semiearth.timing import StageTimer
from semiearth.train import distributed as D
from semiearth.train.augment import TrainView, apply_cutmix
from semiearth.train.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    load_weights,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from semiearth.train.ema import create_teacher, ema_momentum, ema_update
from semiearth.train.log import RunLogger, write_panels
from semiearth.train.losses import supervised_loss, unsupervised_loss
from semiearth.train.purify_hook import PseudoLabels, build_purifier, pseudo_labels
from semiearth.train.sampler import StreamBatchSampler

REDUCED = ("loss", "loss_x", "loss_u", "mask_ratio", "relabelled", "confirmed")  # averaged over ranks


class StopRequest:
    """Signal handler of the training loop. SIGTERM or a first Ctrl-C asks the loop to stop at the end
    of the current step (it then saves latest.pth); a Ctrl-C while a stop is pending exits at once
    (KeyboardInterrupt: the last checkpoint saved stays intact, saves being atomic)."""

    def __init__(self, state: TrainState):
        self.state = state

    def __call__(self, num, frame) -> None:
        if num == signal.SIGINT and self.state.stop_signal:
            raise KeyboardInterrupt
        if not self.state.stop_signal:
            self.state.stop_signal = num
            if num == signal.SIGINT and self.state.rank == 0:
                print("\n[semiearth] Ctrl-C: stopping after this step and saving; Ctrl-C again to exit at once",
                      file=sys.stderr, flush=True)  # fmt: skip


def _ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops the loop cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ----------------------------------------------------------------------------- small pieces
def autocast(cfg: Config, device):
    if device.type != "cuda" or cfg.train.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16)


def param_groups(model, cfg: Config) -> list[dict]:
    """Backbone at lr, everything else (decoder/head) at lr * head_lr_mult."""
    backbone = {id(p) for p in model.backbone.parameters()}
    head = [p for p in model.parameters() if id(p) not in backbone]
    t = cfg.train
    return [
        {"params": list(model.backbone.parameters()), "lr": t.lr},
        {"params": head, "lr": t.lr * t.head_lr_mult},
    ]


def poly_lambda(cfg: Config):
    t = cfg.train

    def factor(it: int) -> float:
        if t.warmup_iters and it < t.warmup_iters:
            return (it + 1) / t.warmup_iters
        return (1 - min(it, t.iters - 1) / t.iters) ** t.poly_power

    return factor


def mix_targets(label, conf, valid, box):
    """CutMix the pseudo-label targets with the same boxes as the strong images."""
    return apply_cutmix(label, box), apply_cutmix(conf, box), apply_cutmix(valid, box)


# ----------------------------------------------------------------------------- state
@dataclass
class TrainState:
    cfg: Config
    out_dir: str
    rank: int
    world: int
    device: torch.device
    student: torch.nn.Module  # DDP-wrapped when distributed
    teacher: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    purifier: object = None
    iteration: int = 0
    best_miou: float = -1.0
    stop_signal: int = 0
    history: dict = field(default_factory=dict)

    @property
    def semi(self) -> bool:
        return self.cfg.train.unlabeled_batch_size > 0

    @property
    def bare_student(self) -> torch.nn.Module:
        return self.student.module if isinstance(self.student, DDP) else self.student


# ----------------------------------------------------------------------------- one iteration
@dataclass
class StepResult:
    """One iteration's losses, and the pseudo-labelled batch on iterations where VLM-PP ran."""

    loss: float
    loss_x: float
    loss_u: float
    mask_ratio: float
    purified: PseudoLabels | None = None


@dataclass
class UnlabelledTargets:
    """The strong views and their targets, CutMixed with the same boxes; `pseudo` when VLM-PP ran."""

    image_s: torch.Tensor
    label: torch.Tensor
    conf: torch.Tensor
    valid: torch.Tensor
    pseudo: PseudoLabels | None


def train_step(s: TrainState, batch_x: dict, batch_u: dict | None, timer: StageTimer) -> StepResult:
    img_x, mask_x = batch_x["image"].to(s.device), batch_x["mask"].to(s.device)
    u = unlabelled_targets(s, batch_u, timer) if batch_u is not None else None
    with timer("student"):
        with autocast(s.cfg, s.device):
            loss, loss_x, loss_u, ratio = student_loss(s, img_x, mask_x, u)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
    with timer("optimiser"):
        optimiser_step(s)
    purified = u.pseudo if u is not None else None
    return StepResult(loss.item(), loss_x.item(), float(loss_u.detach()), float(ratio), purified)


def unlabelled_targets(s: TrainState, batch_u: dict, timer: StageTimer) -> UnlabelledTargets:
    """EMA teacher on the weak view -> pseudo-labels (VLM-PP every purify.every iterations) -> CutMix."""
    cfg, dev = s.cfg, s.device
    img_w, img_s = batch_u["image_w"].to(dev), batch_u["image_s"].to(dev)
    pad, box = batch_u["pad"].to(dev), batch_u["box"].to(dev)
    with timer("teacher"), torch.no_grad(), autocast(cfg, dev):
        logits_w = s.teacher(img_w).float()
    purify_now = s.purifier is not None and s.iteration % cfg.purify.every == 0
    with timer("purify"):
        gt = batch_u["gt_w"].to(dev) if "gt_w" in batch_u else None  # purify.method: oracle only
        pseudo = pseudo_labels(s.purifier if purify_now else None, img_w, logits_w, pad, gt=gt)
    label, conf, valid = mix_targets(pseudo.label, pseudo.conf, ~pad, box)
    return UnlabelledTargets(apply_cutmix(img_s, box), label, conf, valid, pseudo if purify_now else None)


def student_loss(s: TrainState, img_x, mask_x, u: UnlabelledTargets | None):
    """(loss, L_s, L_u, mask ratio): one student forward over the labelled and strong views;
    loss = (L_s + L_u) / 2, or L_s alone without unlabelled data."""
    ignore, threshold = s.cfg.data.ignore_index, s.cfg.train.threshold
    if u is None:
        loss_x = supervised_loss(s.student(img_x), mask_x, ignore)
        return loss_x, loss_x, torch.zeros(()), torch.zeros(())
    pred_x, pred_s = s.student(torch.cat([img_x, u.image_s])).split([img_x.shape[0], u.image_s.shape[0]])
    loss_x = supervised_loss(pred_x, mask_x, ignore)
    loss_u, ratio = unsupervised_loss(pred_s, u.label, u.conf, u.valid, threshold)
    return (loss_x + loss_u) / 2, loss_x, loss_u, ratio


def optimiser_step(s: TrainState) -> None:
    """Optional gradient clipping, the AdamW step, the lr schedule, then the EMA teacher update."""
    if s.cfg.train.grad_clip > 0:
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.student.parameters(), s.cfg.train.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    ema_update(s.teacher, s.bare_student, ema_momentum(s.iteration, s.cfg.train.ema_momentum))


# ----------------------------------------------------------------------------- set-up
def set_determinism(cfg: Config) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def build_state(cfg: Config, out_dir: str, rank: int, world: int, device) -> TrainState:
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, cfg.data.num_classes)
    if world > 1 and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    teacher = create_teacher(model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.train.amp == "fp16")
    student = DDP(model, device_ids=[device] if device.type == "cuda" else None) if world > 1 else model
    torch.manual_seed(cfg.train.seed * 1000 + rank)  # per-rank dropout streams
    return TrainState(cfg, out_dir, rank, world, device, student, teacher, optimizer, scheduler, scaler)


def state_dict(s: TrainState) -> dict:
    return {
        "model_name": s.cfg.model.name,
        "num_classes": s.cfg.data.num_classes,
        "model": s.bare_student.state_dict(),
        "ema": s.teacher.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "scaler": s.scaler.state_dict(),
        "iteration": s.iteration,
        "best_miou": s.best_miou,
        "rng": rng_state(),
        "config": config_to_dict(s.cfg),
    }


def resume_from(s: TrainState, path: str) -> None:
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, s.cfg.model.name, s.cfg.data.num_classes, path)
    load_weights(s.bare_student, ckpt["model"], "student", path)
    load_weights(s.teacher, ckpt["ema"], "EMA teacher", path)
    try:
        s.optimizer.load_state_dict(ckpt["optimizer"])
        s.scheduler.load_state_dict(ckpt["scheduler"])
        s.scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path}: optimiser state does not match this run: {err}") from err
    s.iteration = int(ckpt["iteration"])
    s.best_miou = float(ckpt["best_miou"])
    rng = ckpt["rng"]
    if s.world > 1:  # each rank continues its own stream
        torch.manual_seed(s.cfg.train.seed * 1000 + s.rank + 7919 * s.iteration)
        rng = {**rng, "torch": torch.get_rng_state()}
    set_rng_state(rng)


def make_loader(dataset, cfg: Config, labelled: bool, batch_size: int, s: TrainState) -> DataLoader:
    reads_gt = s.purifier is not None and callable(getattr(s.purifier.classifier, "set_gt", None))  # oracle
    view = TrainView(dataset, cfg.data, cfg.train, labelled, with_gt=reads_gt)
    sampler = StreamBatchSampler(
        len(dataset),
        batch_size,
        cfg.train.seed,
        s.rank,
        s.world,
        s.iteration,
        cfg.train.iters,
        salt=0 if labelled else 1,
    )
    return DataLoader(
        view,
        batch_sampler=sampler,
        num_workers=cfg.train.num_workers,
        pin_memory=s.device.type == "cuda",
        persistent_workers=False,
        worker_init_fn=_ignore_sigint if cfg.train.num_workers else None,
    )


def save(s: TrainState, name: str = "latest.pth") -> None:
    if D.is_main():
        save_checkpoint(os.path.join(s.out_dir, name), state_dict(s))


def validate(s: TrainState, val_set, logger: RunLogger) -> dict:
    indices = range(
        s.rank,
        len(val_set) if not s.cfg.train.eval_max_images else min(len(val_set), s.cfg.train.eval_max_images),
        s.world,
    )
    metrics = evaluate(s.teacher, val_set, s.cfg.data, s.cfg.eval, s.device, indices=indices)
    logger.log(
        s.iteration, {"mIoU": metrics["mIoU"], "OA": metrics["OA"], "mF1": metrics["mF1"], "IoU": metrics["IoU"]}, "val"
    )
    if metrics["mIoU"] > s.best_miou:
        s.best_miou = metrics["mIoU"]
        save(s, "best.pth")
    logger.write(f"[semiearth] iter {s.iteration}: val mIoU {100 * metrics['mIoU']:.2f} (best {100 * s.best_miou:.2f})")
    return metrics


def collect(stats: dict, out: StepResult) -> None:
    """Append one step's values to the logging window's lists."""
    for k in ("loss", "loss_x", "loss_u", "mask_ratio"):
        stats[k].append(getattr(out, k))
    if out.purified is not None:
        res = out.purified.output
        stats["relabelled"].append(res.relabelled)
        stats["confirmed"].append(res.confirmed)
        stats["regions"].append(res.num_regions)
        for k, v in res.timings.items():
            stats[f"purify_{k}"].append(v)


def log_row(stats: dict, timer: StageTimer, n: int, images: int) -> dict:
    row = {k: sum(v) / len(v) for k, v in stats.items() if v}
    total = sum(timer.total.values())
    row["stage_s"] = {k: v / n for k, v in timer.total.items()}  # seconds per iteration
    row["stage_share"] = {k: v / total for k, v in timer.total.items()} if total > 0 else {}
    row["images_per_s"] = images / total if total > 0 else 0.0
    return row


# ----------------------------------------------------------------------------- the run
def train(cfg: Config, resume: bool = False, keep_state: bool = False) -> dict:
    """Train one run into cfg.out_dir; returns {'val': metrics, 'test': metrics, 'paths': ..., 'interrupted'}."""
    rank, world, device = D.init_distributed()
    set_determinism(cfg)
    out_dir = cfg.out_dir
    main = rank == 0
    if main:
        os.makedirs(out_dir, exist_ok=True)
        for path in remove_stale_temporaries(out_dir):
            print(f"[semiearth] removed {path}, left by an interrupted save", file=sys.stderr)
        save_config(cfg, os.path.join(out_dir, "config.yaml"))
    s = build_state(cfg, out_dir, rank, world, device)
    latest = os.path.join(out_dir, "latest.pth")
    if resume:
        if not os.path.exists(latest):
            raise CheckpointError(f"--resume: no checkpoint {latest} to resume from")
        resume_from(s, latest)
    log = print if main else (lambda *a, **k: None)
    if resume:
        log(f"[semiearth] resumed {latest} at iteration {s.iteration}")

    labelled = build_dataset(cfg.data, "labeled")
    val_set = build_dataset(cfg.data, "val")
    semi = s.semi
    if semi and cfg.purify.method != "none":
        s.purifier = build_purifier(cfg.purify, cfg.data, labelled, device, log)
    loader_x = make_loader(labelled, cfg, True, cfg.train.batch_size, s)
    loader_u = (
        make_loader(build_dataset(cfg.data, "unlabeled"), cfg, False, cfg.train.unlabeled_batch_size, s)
        if semi
        else None
    )

    logger = RunLogger(out_dir, cfg.train.iters, s.iteration, enabled=main, desc="semi" if semi else "supervised")
    previous = {sig: signal.signal(sig, StopRequest(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    timer, stats, window = StageTimer(device), defaultdict(list), 0
    last_panel = s.iteration
    images_per_iter = (cfg.train.batch_size + cfg.train.unlabeled_batch_size) * world
    s.student.train()
    try:
        batches = zip(loader_x, loader_u, strict=True) if semi else ((b, None) for b in loader_x)
        t_data = time.perf_counter()
        for batch_x, batch_u in batches:
            timer.total["data"] += time.perf_counter() - t_data
            out = train_step(s, batch_x, batch_u, timer)
            s.iteration += 1
            window += 1
            collect(stats, out)
            if main and out.purified is not None:
                if (s.iteration - 1) // cfg.purify.every % cfg.purify.records_every == 0:
                    logger.records(s.iteration, out.purified.output.records)
                if cfg.train.panel_every and s.iteration - last_panel >= cfg.train.panel_every:
                    write_panels(s.out_dir, s.iteration, out.purified, cfg)  # first purified batch of a period
                    last_panel = s.iteration
            logger.step(1, loss=out.loss, mask=out.mask_ratio)
            if s.iteration % cfg.train.log_every == 0 or s.iteration == cfg.train.iters:
                row = log_row(stats, timer, window, images_per_iter * window)
                row.update(D.all_reduce_mean({k: row[k] for k in REDUCED if k in row}, device))
                row["lr"] = s.optimizer.param_groups[0]["lr"]
                logger.log(s.iteration, row)
                timer, stats, window = StageTimer(device), defaultdict(list), 0
            if cfg.train.ckpt_every and s.iteration % cfg.train.ckpt_every == 0:
                save(s)
            if cfg.train.eval_every and s.iteration % cfg.train.eval_every == 0 and s.iteration < cfg.train.iters:
                validate(s, val_set, logger)
            if D.any_rank(bool(s.stop_signal), device):
                save(s)
                if main:
                    msg = f"[semiearth] stopped by signal at iteration {s.iteration}; saved {latest}; continue with --resume"
                    print("\n" + msg, file=sys.stderr, flush=True)
                num = s.stop_signal or signal.SIGTERM  # a rank stopped by another rank's signal
                return {"interrupted": True, "signal": int(num), "iteration": s.iteration, "paths": {"latest": latest}}
            t_data = time.perf_counter()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.close()

    save(s)
    result = finish(s, val_set, logger)
    D.barrier()
    if keep_state:
        result["state"] = s
    return result


def finish(s: TrainState, val_set, logger) -> dict:
    """Final validation (best.pth), then test with best.pth; results.json."""
    cfg = s.cfg
    val = evaluate(s.teacher, val_set, cfg.data, cfg.eval, s.device, indices=range(s.rank, len(val_set), s.world))
    if val["mIoU"] > s.best_miou or not os.path.exists(os.path.join(s.out_dir, "best.pth")):
        s.best_miou = max(val["mIoU"], s.best_miou)
        save(s, "best.pth")
    D.barrier()
    best = os.path.join(s.out_dir, "best.pth")
    result = {"interrupted": False, "iteration": s.iteration, "val": val, "best_val_mIoU": s.best_miou}
    test_set = _optional_split(cfg, "test")
    if test_set is not None and len(test_set):
        model = copy.deepcopy(s.teacher)
        load_weights(model, load_checkpoint(best)["ema"], "EMA teacher", best)
        result["test"] = evaluate(
            model, test_set, cfg.data, cfg.eval, s.device, indices=range(s.rank, len(test_set), s.world)
        )
    result["paths"] = {
        "out_dir": s.out_dir,
        "best": best,
        "latest": os.path.join(s.out_dir, "latest.pth"),
        "metrics": os.path.join(s.out_dir, "metrics.jsonl"),
        "purify": os.path.join(s.out_dir, "purify.jsonl"),
        "tensorboard": os.path.join(s.out_dir, "tb"),
        "panels": os.path.join(s.out_dir, "panels"),
    }
    if D.is_main():
        with open(os.path.join(s.out_dir, "results.json"), "w") as f:
            json.dump(result, f, indent=1)
    return result


def _optional_split(cfg: Config, split: str):
    """The split's dataset, or None (with a note) when the dataset has no such split."""
    try:
        return build_dataset(cfg.data, split)
    except (FileNotFoundError, ValueError) as err:
        if D.is_main():
            print(f"[semiearth] no {split} split ({err}); reporting val only", file=sys.stderr)
        return None
