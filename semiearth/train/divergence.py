"""A diverged run stops before any checkpoint of the diverged state is written.

Signs of divergence, kept on the device at each step (no host-device sync) and read with the
step's losses at each logging step and before every save or evaluation (`DivergenceGuard.check`):

- a NaN/inf loss, or a NaN/inf gradient norm (the clipping norm with train.grad_clip, else the norm of
  all gradients);
- a loss that exploded: |loss| over EXPLODED (10^4) times the first loss of this process (at least
  10^-2): no healthy run of these methods gets there, a learning rate far too high does in one step;
- under fp16's grad scaler (CUDA, train.amp: fp16), where an overflowing step is skipped by design,
  OVERFLOW_SKIPS (20) overflows in a row: the scale has been halved that many times (65536 -> 2^-4)
  and the gradients still overflow.

Before each save the state to be written is checked too (`check_state`, one read): NaN/inf in any
weight or optimiser tensor, or a trained weight tensor whose largest |value| grew over EXPLODED
times (from at least 10^-2) since the last save (or the start): the step before the save may have
been the one that blew up, before any loss could show it. Any of them raises TrainingDiverged: one
line with what was seen, the likely cause found by checking the inputs (a zero in data.std,
NaN/inf pixels in the images of the diverged iterations, the learning rate) and which checkpoint is
left as it was.
"""

from __future__ import annotations

import math

import torch

from semiearth.train import distributed as D
from semiearth.train.checkpoint import CheckpointError, _tensors

OVERFLOW_SKIPS = 20  # fp16: consecutive skipped (overflowing) steps that mean the run diverged
EXPLODED = 1e4  # a loss or a weight this many times its reference (at least FLOOR) has diverged
FLOOR = 1e-2
SCAN_ITERATIONS = 8  # iterations whose images are checked for NaN/inf pixels when diagnosing


class TrainingDiverged(CheckpointError):
    """The run diverged (NaN/inf or exploded loss, gradient or weights); nothing of the diverged
    state was saved."""


def _finite(v) -> bool:
    return v is None or math.isfinite(v)


def _largest(params) -> torch.Tensor:
    """[N] the largest |value| of each tensor (NaN where it holds a NaN), on the tensors' device."""
    return torch.stack([p.detach().abs().amax() if p.numel() else p.new_zeros(()) for p in params]).float()


class DivergenceGuard:
    """Reads the signs of divergence that `Window` keeps and raises TrainingDiverged.

    inputs: [(split name, dataset, StreamBatchSampler)] of the run's loaders (for the diagnosis);
    params: {name: parameter} of the trained networks (for check_state);
    saved_at: the iteration of the last latest.pth written (None: none yet; the trainer updates it)."""

    def __init__(self, cfg, device, scaled: bool, inputs=(), params=None, saved_at: int | None = None):
        self.cfg, self.device, self.scaled, self.inputs = cfg, device, scaled, list(inputs)
        self.saved_at = saved_at
        self.run = 0  # consecutive overflow skips so far (fp16)
        self.checked = saved_at or 0  # the last iteration checked
        self.first_loss: float | None = None  # the reference of an exploded loss
        self.params = dict(params or {})
        self.reference = _largest(self.params.values()) if self.params else None  # on the device, no read

    def check(self, window) -> None:
        """Read the window's per-step signs (one copy, shared with the logging row) and raise when
        this rank or (DDP) any rank diverged."""
        window.read()
        bad = None
        for rec in window.steps:
            it = rec["iter"]
            if it <= self.checked:
                continue
            self.checked = it
            if bad is None:
                bad = self._step(it, rec)
        if D.any_rank(bad is not None, self.device) and bad is None:
            bad = (self.checked, f"another process diverged by iteration {self.checked}")
        if bad is not None:
            raise self.error(*bad)

    def _step(self, it: int, rec: dict) -> tuple[int, str] | None:
        loss = rec["loss"]
        if self.scaled:
            self.run = self.run + 1 if rec.get("overflow") else 0
            if self.run >= OVERFLOW_SKIPS:
                return it, (f"{self.run} fp16 gradient overflows in a row (iterations {it - self.run + 1}-{it}, "
                            "skipped by the grad scaler)")  # fmt: skip
        elif not _finite(loss):
            return it, f"the loss is {loss} at iteration {it}"
        elif not _finite(rec.get("grad_norm")):
            return it, f"the gradient norm is {rec['grad_norm']} at iteration {it}"
        if loss is not None and math.isfinite(loss):
            if self.first_loss is None:
                self.first_loss = abs(loss)
            elif abs(loss) > EXPLODED * max(self.first_loss, FLOOR):
                return it, f"the loss exploded to {loss:.3g} at iteration {it} (it began at {self.first_loss:.3g})"
        return None

    def check_state(self, state: dict, iteration: int) -> None:
        """Raise before a save of NaN/inf weights or optimiser state, or of trained weights that grew
        over EXPLODED times since the last save (one read per device)."""
        flags: dict[torch.device, list] = {}  # device -> [(kind, name, ok: 0-d bool tensor)]
        for p, t in _tensors(state):
            if t.is_floating_point() and t.numel():
                flags.setdefault(t.device, []).append(("nan", p, torch.isfinite(t).all()))
        if self.params:
            now = _largest(self.params.values())
            grown = now > EXPLODED * self.reference.clamp_min(FLOOR)
            for name, g in zip(self.params, grown.unbind(), strict=True):
                flags.setdefault(g.device, []).append(("grown", name, ~g))
        found: dict[str, list] = {"nan": [], "grown": []}
        for items in flags.values():
            ok = torch.stack([f for _, _, f in items]).tolist()
            for (kind, name, _), good in zip(items, ok, strict=True):
                if not good:
                    found[kind].append(name)
        bad, exploded = found["nan"], found["grown"]
        if bad:
            raise self.error(iteration, f"{bad[0]} holds NaN/inf at iteration {iteration}", scan_window=True)
        if exploded:
            name = exploded[0]
            raise self.error(
                iteration,
                f"weight {name} grew over {EXPLODED:g} times since the last save (now |w| up to "
                f"{float(self.params[name].detach().abs().amax()):.3g}) at iteration {iteration}",
                scan_window=True,
            )
        if self.params:
            self.reference = now

    # ------------------------------------------------------------------------- the message
    def error(self, iteration: int, symptom: str, scan_window: bool = False) -> TrainingDiverged:
        first = max(1, iteration - SCAN_ITERATIONS + 1) if scan_window else iteration
        cause = likely_cause(self.cfg, range(first, iteration + 1), self.inputs, self.scaled, self.saved_at is not None)
        kept = (
            "no checkpoint had been saved"
            if self.saved_at is None
            else f"latest.pth (iteration {self.saved_at}) and best.pth are left as they were"
        )
        return TrainingDiverged(
            f"training diverged: {symptom}; likely cause: {cause}; stopped before saving the diverged state: {kept}"
        )


def likely_cause(cfg, iterations, inputs, scaled: bool = False, saved: bool = True) -> str:
    """The first of: a zero / non-finite data.std or data.mean, NaN/inf pixels in an image of the
    given iterations' batches, the learning rate."""
    d, t = cfg.data, cfg.train
    if any(not math.isfinite(v) or v == 0 for v in d.std):
        return (f"data.std {d.std} holds a zero (or NaN/inf), and normalising divides by it: set data.std to "
                "the bands' standard deviations (all > 0)")  # fmt: skip
    if any(not math.isfinite(v) for v in d.mean):
        return f"data.mean {d.mean} holds NaN/inf: set it to the bands' means"
    found = nonfinite_pixels(iterations, inputs)
    if found:
        name, split, n = found
        return (f"image {name} of the {split} split holds {n} NaN/inf pixel value(s): repair or remove it "
                "(or map them to nodata when preparing the data)")  # fmt: skip
    lr, head = t.lr, t.lr * t.head_lr_mult
    fix = (
        "continue from the last checkpoint with --resume --set train.lr=<lower>"
        if saved
        else "start again with --overwrite --set train.lr=<lower>"
    )
    if lr >= 0.05 or head >= 0.5:
        return f"train.lr {lr:g} (head {head:g}) is far too high for AdamW (usual: 1e-6 to 1e-3): {fix}"
    extra = ", or train.amp: bf16 (no overflow)" if scaled else ""
    return f"the learning rate is too high for this model and data (train.lr {lr:g}, head {head:g}): {fix}, or set train.grad_clip{extra}"


def nonfinite_pixels(iterations, inputs) -> tuple[str, str, int] | None:
    """(image name, split, count) of the first image with NaN/inf pixels read by the batches of
    `iterations` (1-based: iteration i reads batch i - 1), or None."""
    seen = set()
    for it in iterations:
        for split, dataset, sampler in inputs:
            for index, _ in sampler.batch(it - 1):
                if (split, index) in seen:
                    continue
                seen.add((split, index))
                try:
                    item = dataset[index]
                except Exception:  # the data's own error is the loader's to report
                    continue
                image = item.get("image") if isinstance(item, dict) else None
                if isinstance(image, torch.Tensor) and image.is_floating_point():
                    n = int((~torch.isfinite(image)).sum())
                    if n:
                        return str(item.get("name", index)), split, n
    return None
