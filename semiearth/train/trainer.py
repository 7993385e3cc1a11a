"""The training loop: set-up, one method step per iteration, and the loop's cadences.

The S4 method (semiearth/train/methods/: supervised, fixmatch, mean_teacher, unimatch_v2, cps) owns
its networks, targets, loss and optimiser step; VLM-PP reaches every method through the one
pseudo-label call of its StepContext. This module keeps the data, the loop and its cadences (log,
records, panels, checkpoints, evaluation, signals); the run folder and the baseline comparison are
in runs.py, the panels in log.py, the signs of divergence in divergence.py, what a resumed run may
change in resume.py.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import yaml
from torch.utils.data import DataLoader

from semiearth.config import Config, config_to_dict
from semiearth.data import build_dataset
from semiearth.eval import evaluate
from semiearth.ops._checks import DeferredChecks, deferred_checks
from semiearth.purify.purifier import records_from_rows
from semiearth.timing import StageTimer
from semiearth.train import distributed as D
from semiearth.train.augment import TrainView
from semiearth.train.checkpoint import (
    CheckpointError,
    atomic_write,
    check_compatible,
    inference_model,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from semiearth.train.divergence import DivergenceGuard, TrainingDiverged
from semiearth.train.folder import lock_run_folder
from semiearth.train.log import RunLogger, write_panels
from semiearth.train.methods import build_method
from semiearth.train.methods.base import Method, StepContext, StepResult
from semiearth.train.monitor import LabelledPurify
from semiearth.train.purify_hook import build_purifier
from semiearth.train.resume import SCHEDULE, check_resume_config, describe_changes
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


# ----------------------------------------------------------------------------- state
@dataclass
class TrainState:
    """The loop's state: the config, where it runs, the S4 method (networks, optimiser), the purifier
    and the counters that a checkpoint keeps."""

    cfg: Config
    out_dir: str
    rank: int
    world: int
    device: torch.device
    method: Method
    purifier: object = None
    iteration: int = 0
    best_miou: float = -1.0
    stop_signal: int = 0
    history: dict = field(default_factory=dict)
    guard: DivergenceGuard | None = None  # checks the state before every save
    saves: int = 0  # latest.pth written by this process
    labelled_purify: LabelledPurify | None = None  # abstention's calibration and the break-even monitor

    @property
    def semi(self) -> bool:
        return self.method.semi


def train_step(s: TrainState, batch_x: dict, batch_u: dict | None, timer: StageTimer) -> StepResult:
    """One iteration of the run's method (semiearth/train/methods/)."""
    ctx = StepContext(s.iteration, timer, s.purifier, s.cfg.purify.every)
    return s.method.train_step(batch_x, batch_u, ctx)


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
    return TrainState(cfg, out_dir, rank, world, device, build_method(cfg, device, rank, world))


def state_dict(s: TrainState) -> dict:
    return {
        "model_name": s.cfg.model.name,
        "num_classes": s.cfg.data.num_classes,
        **s.method.state_dict(),
        "iteration": s.iteration,
        "best_miou": s.best_miou,
        "rng": rng_state(),
        "config": config_to_dict(s.cfg),
    }


def resume_from(s: TrainState, ckpt: dict, path: str, changed: dict) -> None:
    """Restore the loop and the method from a loaded checkpoint that `check_resume_config` accepted;
    a changed lr schedule is applied (`changed`: the config keys that differ from the checkpoint's)."""
    check_compatible(ckpt, s.cfg.model.name, s.cfg.data.num_classes, path, s.method.name)
    s.method.load_state_dict(ckpt, path)
    if SCHEDULE & set(changed):
        s.method.apply_schedule()
    s.iteration = int(ckpt["iteration"])
    s.best_miou = float(ckpt["best_miou"])
    rng = ckpt["rng"]
    if s.world > 1:  # each rank continues its own stream
        torch.manual_seed(s.cfg.train.seed * 1000 + s.rank + 7919 * s.iteration)
        rng = {**rng, "torch": torch.get_rng_state()}
    set_rng_state(rng)


def make_loader(dataset, cfg: Config, labelled: bool, batch_size: int, s: TrainState) -> DataLoader:
    view = TrainView(dataset, cfg.data, cfg.train, labelled, strong_views=s.method.strong_views)
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
        generator=torch.Generator(),  # its iterator's seed draw must not shift the global RNG (exact resume)
    )


def save(s: TrainState, name: str = "latest.pth") -> None:
    """Write a checkpoint (rank 0), never of a diverged state: NaN/inf anywhere in it stops the run."""
    if D.is_main():
        state = state_dict(s)
        if s.guard is not None:
            s.guard.check_state(state, s.iteration)
        save_checkpoint(os.path.join(s.out_dir, name), state)
        if name == "latest.pth":
            s.saves += 1
            if s.guard is not None:
                s.guard.saved_at = s.iteration


def save_config(cfg: Config, path: str) -> None:
    """config.yaml, written atomically (what runs, once a run or a --resume is accepted)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()), suffix=".yaml")


def validate(s: TrainState, val_set, logger: RunLogger) -> dict:
    indices = range(
        s.rank,
        len(val_set) if not s.cfg.train.eval_max_images else min(len(val_set), s.cfg.train.eval_max_images),
        s.world,
    )
    metrics = evaluate(s.method.eval_network(), val_set, s.cfg.data, s.cfg.eval, s.device, indices=indices)
    logger.log(
        s.iteration, {"mIoU": metrics["mIoU"], "OA": metrics["OA"], "mF1": metrics["mF1"], "IoU": metrics["IoU"]}, "val"
    )
    if selection_miou(metrics, s.cfg) > s.best_miou:
        s.best_miou = selection_miou(metrics, s.cfg)
        save(s, "best.pth")
    logger.write(f"[semiearth] iter {s.iteration}: val mIoU {100 * metrics['mIoU']:.2f} (best {100 * s.best_miou:.2f})")
    return metrics


class Window:
    """What the loop gathers between two logging steps, kept on the device: every step's losses,
    mask ratio and VLM-PP tallies (0-d tensors), the stage times (StageTimer: CUDA events on a GPU)
    and the purify records to write. `row()` reads all of it on the host with one copy."""

    def __init__(self, device):
        self.device = device
        self.steps: list[dict] = []  # per step: iter, loss and the optimiser's signs of divergence
        self.values: defaultdict[str, list] = defaultdict(list)  # key -> per-step tensors or floats
        self.timer = StageTimer(device)  # the loop's stages
        self.purify = StageTimer(device)  # VLM-PP's stages, summed over the purified steps
        self.purified_steps = 0
        self.records: list[tuple[int, list]] = []  # (iteration, [(record table, class names, C)])

    def collect(self, out: StepResult, iteration: int, health: dict) -> None:
        """Keep one step's values and its signs of divergence (`Method.step_health`; no host-device sync)."""
        self.steps.append({"iter": iteration, "loss": out.loss, **health})
        for k in ("loss", "loss_x", "loss_u", "mask_ratio"):
            self.values[k].append(getattr(out, k))
        if out.purified:  # summed over the step's purifier calls (CPS makes one per student)
            results = [p.output for p in out.purified]
            tallies = results[0].tallies if len(results) == 1 else torch.stack([r.tallies for r in results]).sum(0)
            self.values["relabelled"].append(tallies[0])
            self.values["confirmed"].append(tallies[1])
            self.values["regions"].append(sum(r.num_regions for r in results))
            for r in results:
                if r.timer is not None:
                    self.purify.merge(r.timer)
            self.purified_steps += 1

    def keep_records(self, iteration: int, out: StepResult) -> None:
        """The step's purify records, as per-region tables on the device, to be written by `flush_records`."""
        tables = [(p.output.record_table(), p.output.class_names, p.output.q.shape[1]) for p in out.purified]
        self.records.append((iteration, tables))

    def flush_records(self, logger: RunLogger) -> None:
        """Write the kept records to purify.jsonl (one device-to-host copy for all)."""
        if not self.records:
            return
        tables = [t for _, entries in self.records for t, _, _ in entries]
        rows = torch.cat(tables).tolist() if tables else []
        start = 0
        for iteration, entries in self.records:
            records = []
            for table, names, c in entries:
                records += records_from_rows(rows[start : start + table.shape[0]], names, c)
                start += table.shape[0]
            logger.records(iteration, records)
        self.records = []

    def read(self) -> None:
        """Replace the kept step values (and the signs of divergence) by floats: one device-to-host
        copy for all that were not read yet."""
        slots = [(vs, i) for vs in self.values.values() for i, v in enumerate(vs) if isinstance(v, torch.Tensor)]
        slots += [(rec, k) for rec in self.steps for k, v in rec.items() if isinstance(v, torch.Tensor)]
        if not slots:
            return
        host = torch.stack([c[k].detach().reshape(()).double() for c, k in slots]).tolist()
        for (c, k), v in zip(slots, host, strict=True):
            c[k] = v

    def row(self, images: int) -> dict:
        """The logging row: means over the window's steps (one device-to-host copy for the step values,
        one wait for the stage times on CUDA)."""
        self.read()
        row = {k: sum(vs) / len(vs) for k, vs in self.values.items() if vs}
        if self.purified_steps:
            row.update({f"purify_{k}": v / self.purified_steps for k, v in self.purify.total.items()})
        totals = self.timer.total
        total = sum(totals.values())
        row["stage_s"] = {k: v / len(self.steps) for k, v in totals.items()}  # seconds per iteration
        row["stage_share"] = {k: v / total for k, v in totals.items()} if total > 0 else {}
        row["images_per_s"] = images / total if total > 0 else 0.0
        return row


# ----------------------------------------------------------------------------- the run
def train(cfg: Config, resume: bool = False, keep_state: bool = False, lock: bool = True) -> dict:
    """Train one run into cfg.out_dir; returns {'val': metrics, 'test': metrics, 'paths': ..., 'interrupted'}.

    Rank 0 holds the folder's lock (folder.py) for the run, unless the caller holds it (lock=False).
    With resume, nothing in the folder changes before the checkpoint and the config are accepted."""
    rank, world, device = D.init_distributed()
    set_determinism(cfg)
    latest = os.path.join(cfg.out_dir, "latest.pth")
    if resume and not os.path.exists(latest):
        raise CheckpointError(f"--resume: no checkpoint {latest} to resume from")
    held = lock_run_folder(cfg.out_dir) if lock and rank == 0 else None
    try:
        s, changed, previous_config = _start(cfg, resume, rank, world, device)
        try:
            return _train(s, resume, changed, keep_state)
        except BaseException as err:
            if rank == 0:
                _after_failure(s, err, previous_config)
            raise
    finally:
        if held is not None:
            held.release()


def _after_failure(s: TrainState, err: BaseException, previous_config: bytes | None) -> None:
    """After a run that failed (a divergence, nothing of it saved; or any error): a `diverged` row in
    metrics.jsonl for a divergence, and, when this process saved no latest.pth, config.yaml back to
    the config of the latest.pth in the folder (a resume with a changed config had rewritten it)."""
    try:
        if isinstance(err, TrainingDiverged):
            row = {"iter": s.iteration, "time": time.time(), "split": "diverged", "error": str(err)}
            with open(os.path.join(s.out_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
        if previous_config is not None and not s.saves:
            atomic_write(os.path.join(s.out_dir, "config.yaml"), lambda f: f.write(previous_config), suffix=".yaml")
    except OSError:  # the error being raised says more (a full disk, ...)
        pass


def _start(cfg: Config, resume: bool, rank: int, world: int, device) -> tuple[TrainState, dict, bytes | None]:
    """The run's state, restored from latest.pth with resume; then (accepted) config.yaml written.
    Returns (state, the config keys changed from the checkpoint's, the config.yaml it replaced)."""
    out_dir = cfg.out_dir
    main = rank == 0
    latest = os.path.join(out_dir, "latest.pth")
    changed: dict = {}
    if resume:  # a refused checkpoint or config leaves the run folder as it was
        ckpt = load_checkpoint(latest)
        changed = check_resume_config(ckpt, cfg, latest)
    s = build_state(cfg, out_dir, rank, world, device)
    if resume:
        resume_from(s, ckpt, latest, changed)
        del ckpt
    # accepted: from here on the run folder changes
    log = print if main else (lambda *a, **k: None)
    previous = None
    if main:
        os.makedirs(out_dir, exist_ok=True)
        for path in remove_stale_temporaries(out_dir):
            print(f"[semiearth] removed {path}, left by an interrupted save", file=sys.stderr)
        config_path = os.path.join(out_dir, "config.yaml")
        if resume and os.path.isfile(config_path):
            with open(config_path, "rb") as f:
                previous = f.read()
        save_config(cfg, config_path)
    if resume:
        log(f"[semiearth] resumed {latest} at iteration {s.iteration}")
        if changed:
            log(f"[semiearth] --resume: config changed from the checkpoint's, applied from iteration "
                f"{s.iteration} on (config.yaml records it): {describe_changes(changed)}")  # fmt: skip
    return s, changed, previous


def _train(s: TrainState, resume: bool, changed: dict, keep_state: bool) -> dict:
    cfg, out_dir, device, world = s.cfg, s.out_dir, s.device, s.world
    main = s.rank == 0
    latest = os.path.join(out_dir, "latest.pth")
    log = print if main else (lambda *a, **k: None)
    labelled = build_dataset(cfg.data, "labeled")
    val_set = build_dataset(cfg.data, "val")
    semi = s.semi
    if semi and cfg.purify.method != "none":
        s.purifier = build_purifier(cfg.purify, cfg.data, labelled, device, log)
    loader_x = make_loader(labelled, cfg, True, cfg.train.batch_size, s)
    unlabelled = build_dataset(cfg.data, "unlabeled") if semi else None
    loader_u = make_loader(unlabelled, cfg, False, cfg.train.unlabeled_batch_size, s) if semi else None
    loaders = [("labeled", labelled, loader_x), ("unlabeled", unlabelled, loader_u)]
    inputs = [(n, d, loader.batch_sampler) for n, d, loader in loaders if hasattr(loader, "batch_sampler")]
    params = {f"weights.{k}.{n}": p for k, m in s.method.students.items() for n, p in m.named_parameters()}
    s.guard = DivergenceGuard(
        cfg, device, s.method.scaler.is_enabled(), inputs, params, s.iteration if resume else None
    )

    logger = RunLogger(out_dir, cfg.train.iters, s.iteration, enabled=main, desc=cfg.train.method)
    if resume:
        logger.log(s.iteration, {"resumed": latest, "changed": {k: [a, b] for k, (a, b) in changed.items()}}, "resume")
    previous = {sig: signal.signal(sig, StopRequest(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    window = Window(device)
    last_panel = s.iteration
    images_per_iter = (cfg.train.batch_size + cfg.train.unlabeled_batch_size) * world
    s.method.train()
    # The value checks of the ops and of VLM-PP (NaN logits, bad class probabilities, a batch without
    # the oracle's ground truth) and the signs of divergence (NaN/inf loss or gradients) are read at
    # the logging steps and before every save or evaluation, not every step.
    checks = DeferredChecks()
    cfg_p = cfg.purify
    if s.purifier is not None and (cfg_p.abstain is not None or cfg_p.monitor_every):
        s.labelled_purify = LabelledPurify(cfg, s.method, s.purifier, labelled, device, logger)
        if s.labelled_purify.abstain:
            s.labelled_purify.calibrate(s.iteration)  # before training (and again after a resume)
    lp = s.labelled_purify

    def verify() -> None:
        checks.raise_if_failed()
        s.guard.check(window)

    try:
        batches = zip(loader_x, loader_u, strict=True) if semi else ((b, None) for b in loader_x)
        t_data = time.perf_counter()
        for batch_x, batch_u in batches:
            window.timer.add("data", time.perf_counter() - t_data)
            s.method.step_health = {}
            with deferred_checks(checks):
                out = train_step(s, batch_x, batch_u, window.timer)
            s.iteration += 1
            window.collect(out, s.iteration, s.method.step_health)
            logger.step(1)
            if main and out.purified:
                if (s.iteration - 1) // cfg.purify.every % cfg.purify.records_every == 0:
                    window.keep_records(s.iteration, out)
                if cfg.train.panel_every and s.iteration - last_panel >= cfg.train.panel_every:
                    write_panels(s.out_dir, s.iteration, out.purified[0], cfg)  # first purified batch of a period
                    last_panel = s.iteration
            if s.iteration % cfg.train.log_every == 0 or s.iteration == cfg.train.iters:
                verify()
                row = window.row(images_per_iter * len(window.steps))
                row.update(D.all_reduce_mean({k: row[k] for k in REDUCED if k in row}, device))
                row["lr"] = s.method.optimizer.param_groups[0]["lr"]
                logger.step(0, loss=row["loss"], mask=row["mask_ratio"])  # the window's means
                logger.log(s.iteration, row)
                window.flush_records(logger)
                window = Window(device)
            if lp is not None and main and lp.monitor_due(s.iteration):  # periodic: may sync
                lp.monitor(s.iteration)
            if lp is not None and lp.calibrate_due(s.iteration):  # every rank: each has its purifier
                lp.calibrate(s.iteration)
            if cfg.train.ckpt_every and s.iteration % cfg.train.ckpt_every == 0:
                verify()
                save(s)
            if cfg.train.eval_every and s.iteration % cfg.train.eval_every == 0 and s.iteration < cfg.train.iters:
                verify()
                validate(s, val_set, logger)
            if D.any_rank(bool(s.stop_signal), device):
                verify()
                window.flush_records(logger)
                save(s)
                if main:
                    msg = f"[semiearth] stopped by signal at iteration {s.iteration}; saved {latest}; continue with --resume"
                    print("\n" + msg, file=sys.stderr, flush=True)
                num = s.stop_signal or signal.SIGTERM  # a rank stopped by another rank's signal
                return {"interrupted": True, "signal": int(num), "iteration": s.iteration, "paths": {"latest": latest}}
            t_data = time.perf_counter()
        verify()
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


def selection_miou(metrics: dict, cfg: Config) -> float:
    """The validation mean that picks best.pth: the full mIoU unless eval.select_best is "excluded"."""
    return metrics["mIoU_excluded"] if cfg.eval.select_best == "excluded" else metrics["mIoU"]


def finish(s: TrainState, val_set, logger) -> dict:
    """Final validation (best.pth), then test with best.pth; results.json."""
    cfg = s.cfg
    val = evaluate(
        s.method.eval_network(), val_set, cfg.data, cfg.eval, s.device, indices=range(s.rank, len(val_set), s.world)
    )
    if selection_miou(val, cfg) > s.best_miou or not os.path.exists(os.path.join(s.out_dir, "best.pth")):
        s.best_miou = max(selection_miou(val, cfg), s.best_miou)
        save(s, "best.pth")
    D.barrier()
    best = os.path.join(s.out_dir, "best.pth")
    result = {"interrupted": False, "iteration": s.iteration, "val": val, "best_val_mIoU": s.best_miou}
    result["protocol"] = val["protocol"]  # the evaluation convention of every number here
    if s.labelled_purify is not None:
        result["purify_monitor"] = s.labelled_purify.summary()
    test_set = _optional_split(cfg, "test")
    if test_set is not None and len(test_set):
        any_network = s.method.students[s.method.STUDENTS[0]]
        model = inference_model(load_checkpoint(best), None, best, lambda: copy.deepcopy(any_network))
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
