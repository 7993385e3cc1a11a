"""Checkpoints: atomic save (temp file + rename), exact resume (incl. RNG states), clear errors.

A checkpoint holds the student, the EMA teacher, optimiser, scheduler, grad scaler, iteration,
best validation mIoU, the RNG states (torch, CUDA, numpy, random) and the resolved config. It is
loaded with `torch.load(weights_only=True)`, so everything in it is tensors and plain Python.
"""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import torch

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


def save_checkpoint(path: str, state: dict) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint (weights_only) or raise CheckpointError saying what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a SemiEarth checkpoint: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a SemiEarth checkpoint (format {FORMAT} expected)")
    return state


def check_compatible(state: dict, model_name: str, num_classes: int, path: str) -> None:
    got = (state.get("model_name"), state.get("num_classes"))
    if got != (model_name, num_classes):
        raise CheckpointError(
            f"checkpoint {path} is for model {got[0]} with {got[1]} classes, this run is {model_name} with "
            f"{num_classes} classes"
        )


def load_weights(module: torch.nn.Module, weights: dict, what: str, path: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: {what} weights do not fit the model: {err}") from err
