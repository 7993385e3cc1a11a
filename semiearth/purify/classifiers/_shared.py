"""Helpers the classifiers share (one owner each, no classifier importing a sibling for them).

- The Hugging Face hub offline handling of the classifiers that load hub weights (open_clip,
  transformers VLMs): :func:`hub_offline` (HF_HUB_OFFLINE set, or huggingface.co unreachable within
  3 s) and :func:`offline_mode` (a cache miss fails at once instead of retrying the network).
- :func:`best_temperature`: the softmax temperature fitted to target class shares (the noisy
  oracle's segment calibration, the abstaining wrapper's recalibration).
"""

import contextlib
import math
import os
import socket
from functools import cache

import torch


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@cache
def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set or huggingface.co cannot be reached within 3 seconds."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE", "")) or not _hub_reachable()


@contextlib.contextmanager
def offline_mode():
    """Make huggingface_hub fail at once on a cache miss instead of retrying the network."""
    import huggingface_hub.constants as hfc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hfc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hfc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hfc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def best_temperature(z: torch.Tensor, target: torch.Tensor) -> float:
    """Temperature T in about [0.02, 50] minimising the cross-entropy of softmax(z / T) [N,C] against
    target distributions [N,C]: a log grid, then a finer one around its best point."""

    def ce(t: float) -> float:
        return float(-(target * torch.log_softmax(z / t, dim=1)).sum(dim=1).mean())

    step = (math.log(50.0) - math.log(0.02)) / 59
    best = min(torch.exp(torch.linspace(math.log(0.02), math.log(50.0), 60)).tolist(), key=ce)
    fine = torch.exp(torch.linspace(math.log(best) - step, math.log(best) + step, 21)).tolist()
    return min(fine, key=ce)
