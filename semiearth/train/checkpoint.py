"""Checkpoints: atomic save (temp file + rename), integrity digests, exact resume, clear errors.

A checkpoint holds the student, the EMA teacher, optimiser, scheduler, grad scaler, iteration,
best validation mIoU, the RNG states (torch, CUDA, numpy, random) and the resolved config. It is
loaded with `torch.load(weights_only=True)`, so everything in it is tensors and plain Python.

Integrity: `save_checkpoint` stores, under `digest`, the sha256 of every tensor's bytes (keyed by
its path, e.g. `ema.head.weight`) and of everything else (iteration, config, ...). `load_checkpoint`
recomputes them, so damaged bytes anywhere in the file are an error naming the tensor instead of a
model that silently evaluates worse; NaN/inf weights are refused the same way.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import re
import sys
import tempfile

import numpy as np
import torch

from semiearth.files import current_umask

FORMAT = "semiearth-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the run."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "random": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


TMP_PREFIX = ".tmp-"  # temporary files of save_checkpoint: `.tmp-*.pth` beside the target


# ----------------------------------------------------------------------------- integrity
def _tensors(obj, prefix: str = ""):
    """(path, tensor) for every tensor nested in dicts/lists/tuples of `obj`, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def _skeleton(obj):
    """`obj` with every tensor replaced by a placeholder: what the tensor digests do not cover."""
    if isinstance(obj, torch.Tensor):
        return "<tensor>"
    if isinstance(obj, dict):
        return {k: _skeleton(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_skeleton(v) for v in obj)
    return obj


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes (any dtype, any device)."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digest(state: dict) -> dict:
    """{'tensors': {path: sha256}, 'meta': sha256 of the non-tensor content} of a state dict."""
    return {
        "tensors": {p: tensor_sha256(t) for p, t in _tensors(state)},
        "meta": hashlib.sha256(repr(_skeleton(state)).encode()).hexdigest(),
    }


def _check_digest(state: dict, expected: dict, path: str) -> None:
    got = digest(state)
    bad = [p for p, h in got["tensors"].items() if expected["tensors"].get(p) != h]
    bad += [p for p in expected["tensors"] if p not in got["tensors"]]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: {len(bad)} tensor(s) do not match the sha256 saved with them "
            f"(e.g. {bad[0]}); use another checkpoint (latest.pth / best.pth) or retrain"
        )
    if got["meta"] != expected["meta"]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its non-tensor content (iteration, config, ...) does not match the "
            "sha256 saved with it; use another checkpoint (latest.pth / best.pth) or retrain"
        )


def _check_finite(state: dict, path: str) -> None:
    for p, t in _tensors(state):
        if t.is_floating_point() or t.is_complex():
            n = int((~torch.isfinite(t)).sum())
            if n:
                raise CheckpointError(
                    f"checkpoint {path}: tensor {p} holds {n} NaN/inf value(s) (the run diverged before this save); "
                    "use an earlier checkpoint, or retrain with a lower train.lr"
                )


def _load_reason(err: Exception) -> str:
    """torch.load's error as one short line, without its advice to turn off the safe loader."""
    text = str(err)
    m = re.search(r"WeightsUnpickler error: *(.*)", text)
    if m:
        return m.group(1).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0] if lines else type(err).__name__


# ----------------------------------------------------------------------------- save / load
def atomic_write(path: str, write, suffix: str = ".pth") -> None:
    """Call `write(f)` on a temp file in `path`'s folder, fsync, rename onto `path`, fsync the folder.
    The file gets the permissions of any file the user creates (0666 minus the umask; mkstemp's own
    are 0600). A crash leaves the previous file intact (and at worst a `.tmp-*` orphan)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def save_checkpoint(path: str, state: dict) -> None:
    """Write `state` (with its digest) to `path` atomically: a temp file in the same folder, fsync,
    rename, fsync of the folder. A crash leaves the previous file intact (and at worst a `.tmp-*.pth`
    orphan, which `remove_stale_temporaries` deletes at the next start)."""
    full = {"format": FORMAT, **state}
    full["digest"] = digest(full)
    atomic_write(path, lambda f: torch.save(full, f))


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete `.tmp-*.pth` / `.tmp-*.yaml` files that an interrupted save left in `folder`; returns their paths."""
    stale = sorted(
        p for ext in (".pth", ".yaml") for p in glob.glob(os.path.join(glob.escape(folder), f"{TMP_PREFIX}*{ext}"))
    )
    for p in stale:
        os.unlink(p)
    return stale


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint (weights_only), verify its digest and that its weights are finite, or raise
    CheckpointError saying what is wrong and what to do."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was never written completely; use another")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a SemiEarth checkpoint ({_load_reason(err)}); "
            "use a checkpoint written by semiearth-train"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a SemiEarth checkpoint (format {FORMAT} expected)")
    expected = state.pop("digest", None)
    if expected is None:
        print(f"[semiearth] warning: checkpoint {path} has no integrity digest (older SemiEarth)", file=sys.stderr)
    else:
        _check_digest(state, expected, path)
    _check_finite(state, path)
    return state


def check_compatible(state: dict, model_name: str, num_classes: int, path: str, method: str | None = None) -> None:
    """The checkpoint is of this model, class count and (when given) S4 method, else CheckpointError."""
    got = (state.get("model_name"), state.get("num_classes"))
    if got != (model_name, num_classes):
        raise CheckpointError(
            f"checkpoint {path} is for model {got[0]} with {got[1]} classes, this run is {model_name} with "
            f"{num_classes} classes"
        )
    theirs = checkpoint_method(state)
    if method is not None and theirs != method:
        raise CheckpointError(
            f"checkpoint {path} was trained with train.method {theirs}, this run is {method}: resume it with "
            f"--set train.method={theirs}, or start a new run in another --out"
        )


def checkpoint_method(state: dict) -> str:
    """The S4 method that wrote the checkpoint (checkpoints from before the method seam: fixmatch)."""
    return state.get("method", "fixmatch")


LEGACY_WEIGHTS = {"teacher": "ema", "student": "model"}  # checkpoints from before the method seam


def weight_names(state: dict) -> list[str]:
    """The `--weights` names a checkpoint offers: its networks, then its ensembles."""
    if "weights" not in state:
        return [n for n, k in LEGACY_WEIGHTS.items() if k in state]
    return [*state["weights"], *state.get("ensembles", {})]


def default_weights(state: dict) -> str:
    """The network a checkpoint's method evaluates by default (the EMA teacher for FixMatch)."""
    return state.get("default_weights", "teacher")


def checkpoint_weights(state: dict, which: str, path: str) -> dict:
    """The state dict of network `which` (a name from `weight_names`) of a loaded checkpoint."""
    names = weight_names(state)
    if which not in names:
        raise CheckpointError(
            f"--weights {which!r}: checkpoint {path} (train.method {checkpoint_method(state)}) holds "
            f"{', '.join(names) or 'no weights'}"
        )
    weights = state["weights"][which] if "weights" in state else state[LEGACY_WEIGHTS[which]]
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path} holds no {which} weights")
    return weights


def inference_model(state: dict, which: str | None, path: str, build) -> torch.nn.Module:
    """The network `which` (default: the method's `default_weights`) of a loaded checkpoint, built by
    `build()` (a fresh model of the checkpoint's architecture) and loaded; an ensemble name gives a
    MeanProbabilities of its members."""
    from semiearth.models.ensemble import MeanProbabilities

    which = which or default_weights(state)
    members = state.get("ensembles", {}).get(which)
    models = []
    for name in members or [which]:
        model = build()
        load_weights(model, checkpoint_weights(state, name, path), name, path)
        models.append(model)
    return MeanProbabilities(models) if members else models[0]


def load_weights(module: torch.nn.Module, weights: dict, what: str, path: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: {what} weights do not fit the model: {err}") from err
