"""The teacher-student trainer (UniMatch-V2 `fixmatch.py` lineage) with the VLM-PP hook.

One iteration (`train_step`):
  labelled batch  -> student -> supervised CE (ignore index)
  unlabelled batch: EMA teacher on the weak view -> VLM-PP purifies (every k iterations)
                  -> CutMix of strong views and of pseudo-labels
                  -> student on the strong view, CE masked by confidence >= threshold
  loss = (L_s + L_u) / 2; AdamW (backbone / head lr split, poly decay); EMA teacher update.
Everything else here is set-up: data, model, checkpoints, logging, evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
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
from semiearth.eval import evaluate, format_table
from semiearth.models import build_model
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
from semiearth.train.log import RunLogger, save_panel
from semiearth.train.losses import supervised_loss, unsupervised_loss
from semiearth.train.purify_hook import build_purifier, pseudo_labels
from semiearth.train.sampler import StreamBatchSampler

REDUCED = ("loss", "loss_x", "loss_u", "mask_ratio", "relabelled", "confirmed")  # averaged over ranks
RUN_FILES = ("latest.pth", "best.pth", "results.json", "metrics.jsonl", "comparison.txt")  # a run lives here
RUN_ARTEFACTS = (*RUN_FILES, "results.txt", "purify.jsonl", "config.yaml", "tb", "panels", "supervised", "semi")


class RunFolderError(RuntimeError):
    """The output folder already holds a run and neither --resume nor --overwrite was given."""


# ----------------------------------------------------------------------------- run folders
def existing_run(out_dir: str) -> str | None:
    """The first file showing that `out_dir` (or its supervised/ or semi/ sub-run) holds a run, or None."""
    for sub in ("", "supervised", "semi"):
        for name in RUN_FILES:
            path = os.path.join(out_dir, sub, name)
            if os.path.exists(path):
                return path
    return None


def prepare_run_folder(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run unless resuming or overwriting; with overwrite,
    delete that run's artefacts (only them: other files in the folder stay)."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: give one")
    found = existing_run(out_dir)
    if found is None or resume:
        return
    if not overwrite:
        raise RunFolderError(
            f"{out_dir} already holds a run ({found}); continue it with --resume, replace it with --overwrite, "
            "or choose another --out"
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name in RUN_ARTEFACTS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
    print(f"[semiearth] --overwrite: removed the previous run in {out_dir}", file=sys.stderr)


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
class StageTimer:
    """Accumulates wall time per stage (synchronising CUDA so GPU stages are measured)."""

    def __init__(self, device):
        self.sync = device.type == "cuda"
        self.total = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.sync:
            torch.cuda.synchronize()
        self.total[stage] += time.perf_counter() - t0


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
def train_step(s: TrainState, batch_x: dict, batch_u: dict | None, timer: StageTimer) -> dict:
    cfg, dev = s.cfg, s.device
    img_x, mask_x = batch_x["image"].to(dev), batch_x["mask"].to(dev)
    out = {}
    if batch_u is not None:
        img_w, img_s = batch_u["image_w"].to(dev), batch_u["image_s"].to(dev)
        pad, box = batch_u["pad"].to(dev), batch_u["box"].to(dev)
        with timer("teacher"), torch.no_grad(), autocast(cfg, dev):
            logits_w = s.teacher(img_w).float()
        purify_now = s.purifier is not None and s.iteration % cfg.purify.every == 0
        with timer("purify"):
            label_u, conf_u, info = pseudo_labels(s.purifier if purify_now else None, img_w, logits_w, pad)
        out["purify_info"] = info if purify_now else None
        out["pseudo"] = (img_w, info["label_t"], info["conf_t"], label_u, conf_u) if purify_now else None
        label_u, conf_u, valid_u = mix_targets(label_u, conf_u, ~pad, box)
        img_s = apply_cutmix(img_s, box)

    with timer("student"):
        with autocast(cfg, dev):
            if batch_u is None:
                loss_x = supervised_loss(s.student(img_x), mask_x, cfg.data.ignore_index)
                loss, loss_u, ratio = loss_x, torch.zeros(()), torch.zeros(())
            else:
                preds = s.student(torch.cat([img_x, img_s]))
                pred_x, pred_s = preds.split([img_x.shape[0], img_s.shape[0]])
                loss_x = supervised_loss(pred_x, mask_x, cfg.data.ignore_index)
                loss_u, ratio = unsupervised_loss(pred_s, label_u, conf_u, valid_u, cfg.train.threshold)
                loss = (loss_x + loss_u) / 2
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()

    with timer("optimiser"):
        if cfg.train.grad_clip > 0:
            s.scaler.unscale_(s.optimizer)
            torch.nn.utils.clip_grad_norm_(s.student.parameters(), cfg.train.grad_clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        ema_update(s.teacher, s.bare_student, ema_momentum(s.iteration, cfg.train.ema_momentum))

    out.update(loss=loss.item(), loss_x=loss_x.item(), loss_u=float(loss_u.detach()), mask_ratio=float(ratio))
    return out


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
    view = TrainView(dataset, cfg.data, cfg.train, labelled)
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
            for k in ("loss", "loss_x", "loss_u", "mask_ratio"):
                stats[k].append(out[k])
            info = out.get("purify_info")
            if info is not None:
                stats["relabelled"].append(info["relabelled"])
                stats["confirmed"].append(info["confirmed"])
                stats["regions"].append(info.get("regions", 0))
                for k, v in info["timings"].items():
                    stats[f"purify_{k}"].append(v)
                if main and (s.iteration - 1) // cfg.purify.every % cfg.purify.records_every == 0:
                    logger.records(s.iteration, info["records"])
            panel_due = cfg.train.panel_every and s.iteration - last_panel >= cfg.train.panel_every
            if main and out.get("pseudo") is not None and panel_due:  # first purified batch of each period
                write_panel(s, out["pseudo"], out.get("purify_info"))
                last_panel = s.iteration
            logger.step(1, loss=out["loss"], mask=out["mask_ratio"])
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


def write_panel(s: TrainState, pseudo, info: dict | None) -> None:
    """panels/iter_N.png: image | teacher label | purified label | changed (red) / newly admitted (green);
    panels/iter_N_vlmpp.png: VLM-PP's own rendering (region boxes, VLM top-1, candidates)."""
    img_w, label_t, conf_t, label_p, conf_p = pseudo
    if info is not None and info.get("output") is not None:
        from semiearth.purify import render

        vlm_path = os.path.join(s.out_dir, "panels", f"iter_{s.iteration:06d}_vlmpp.png")
        os.makedirs(os.path.dirname(vlm_path), exist_ok=True)
        try:
            render(img_w, info["output"], path=vlm_path, image_mean=s.cfg.data.mean, image_std=s.cfg.data.std,
                   class_names=s.cfg.data.class_names)  # fmt: skip
        except Exception as err:  # a panel must never stop training
            print(f"[semiearth] VLM-PP panel failed: {err}", file=sys.stderr)
    k = min(4, img_w.shape[0])
    mean = torch.tensor(s.cfg.data.mean, device=img_w.device).view(1, 3, 1, 1)
    std = torch.tensor(s.cfg.data.std, device=img_w.device).view(1, 3, 1, 1)
    rgb = img_w[:k] * std + mean
    palette = s.cfg.data.palette or _default_palette(s.cfg.data.num_classes)
    path = os.path.join(s.out_dir, "panels", f"iter_{s.iteration:06d}.png")
    save_panel(
        path,
        rgb,
        label_t[:k],
        label_p[:k],
        conf_t[:k],
        conf_p[:k],
        palette,
        s.cfg.train.threshold,
        s.cfg.data.ignore_index,
    )


def _default_palette(n: int) -> list[list[int]]:
    from semiearth.config import POTSDAM_PALETTE

    if n <= len(POTSDAM_PALETTE):
        return POTSDAM_PALETTE[:n]
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3), generator=g).tolist()


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


# ----------------------------------------------------------------------------- baseline comparison
def run(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """Train cfg and print its final metrics; with compare_baseline, first a supervised-only baseline,
    then print both. A folder that already holds a run needs resume or overwrite (RunFolderError)."""
    prepare_run_folder(cfg.out_dir, resume, overwrite)
    if not cfg.compare_baseline:
        result = train(cfg, resume)
        if D.is_main() and not result.get("interrupted"):
            print_comparison(cfg, {_run_name(cfg): result}, "results.txt")
        return result
    root = cfg.out_dir
    sup = copy.deepcopy(cfg)
    sup.compare_baseline = False
    sup.out_dir = os.path.join(root, "supervised")
    sup.train.unlabeled_batch_size = 0
    sup.purify.method = "none"
    semi = copy.deepcopy(cfg)
    semi.compare_baseline = False
    semi.out_dir = os.path.join(root, "semi")
    results = {}
    for name, c in (("supervised", sup), (f"semi+{_method_name(cfg)}", semi)):
        done = os.path.join(c.out_dir, "results.json")
        if resume and os.path.exists(done):
            with open(done) as f:
                results[name] = json.load(f)
            continue
        t0 = time.perf_counter()
        results[name] = train(c, resume=resume and os.path.exists(os.path.join(c.out_dir, "latest.pth")))
        if results[name].get("interrupted"):
            return results[name]
        results[name]["seconds"] = time.perf_counter() - t0
    if D.is_main():
        print_comparison(cfg, results)
    return {"runs": results}


def _method_name(cfg: Config) -> str:
    return "VLM-PP" if cfg.purify.method != "none" else "FixMatch"


def _run_name(cfg: Config) -> str:
    return f"semi+{_method_name(cfg)}" if cfg.train.unlabeled_batch_size > 0 else "supervised"


def print_comparison(cfg: Config, results: dict, table_name: str = "comparison.txt") -> None:
    """Print the metrics table of one or more finished runs and where their outputs are; save the table."""
    split = "test" if all("test" in r for r in results.values()) else "val"
    table = format_table({name: r[split] for name, r in results.items()}, cfg.data.class_names)
    print(f"\n[semiearth] {split} split ({cfg.data.name}), IoU per class and means in %:\n{table}\n")
    for name, r in results.items():
        p = r["paths"]
        secs = f" in {r['seconds']:.0f}s" if "seconds" in r else ""
        print(f"[semiearth] {name}{secs}: checkpoint {p['best']}, logs {p['metrics']} (TensorBoard {p['tensorboard']})")
        if os.path.isdir(p["panels"]):
            print(f"[semiearth] {name}: purification records {p['purify']}, panels {p['panels']}")
    with open(os.path.join(cfg.out_dir, table_name), "w") as f:
        f.write(table + "\n")
    print(f"[semiearth] this table: {os.path.join(cfg.out_dir, table_name)}")
