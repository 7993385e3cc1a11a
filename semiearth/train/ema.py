"""EMA teacher: theta_t <- m * theta_t + (1 - m) * theta_s, with m = min(1 - 1/(t+1), momentum)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def create_teacher(student: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def ema_momentum(t: int, momentum: float = 0.996) -> float:
    """min(1 - 1/(t+1), momentum): early on the teacher follows the student closely."""
    return min(1.0 - 1.0 / (t + 1), momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA of parameters and floating-point buffers (BN statistics); integer buffers are copied."""
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
        pt.mul_(momentum).add_(ps.detach(), alpha=1.0 - momentum)
    for bt, bs in zip(teacher.buffers(), student.buffers(), strict=True):
        if bt.dtype.is_floating_point:
            bt.mul_(momentum).add_(bs, alpha=1.0 - momentum)
        else:
            bt.copy_(bs)
