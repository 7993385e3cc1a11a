"""Argument checks shared by the ops: each error names the argument and says how to fix it.

Checks of shapes, dtypes and numbers read nothing from the device. Checks of tensor values go
through semiearth.ops._checks (at once, or deferred to the caller's next sync).
"""

import torch

from semiearth.bounds import UNIT, Bound
from semiearth.ops._checks import require

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(op: str, name: str, t, ndim: int, dtypes, shape_doc: str) -> None:
    """Raise TypeError/ValueError unless `t` is a tensor of rank `ndim` with one of `dtypes`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have shape {shape_doc}, got {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype {names}, got {str(t.dtype).replace('torch.', '')}")


def check_same_device(op: str, ref_name: str, ref: torch.Tensor, **others) -> None:
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(
                f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; move them to one device"
            )


def check_logits(op: str, logits) -> None:
    """logits [B,C,H,W] float32/16/bf16 with C, H, W >= 1."""
    check_tensor(op, "logits", logits, 4, FLOAT_DTYPES, "[B,C,H,W]")
    if logits.shape[1] == 0:
        raise ValueError(f"{op}: logits has C = 0 classes; it must have at least one class channel")
    if logits.numel() == 0:
        raise ValueError(f"{op}: logits {tuple(logits.shape)} is empty; B, H and W must be >= 1")


def nonfinite_error(op: str, count: int) -> ValueError:
    return ValueError(
        f"{op}: logits contain NaN or inf at {count} pixel(s); check the teacher's output "
        "(fp16 overflow, a diverged model) before purifying"
    )


def check_finite_logits(op: str, logits: torch.Tensor) -> None:
    require(torch.isfinite(logits).all(dim=1), lambda n: nonfinite_error(op, n))


def check_bound(op: str, name: str, value, bound: Bound, integer: bool = False) -> None:
    """Raise ValueError unless `value` is a number (an int when `integer`) in `bound`, the range the
    config declares for the same key (semiearth/bounds.py), so the config and the op agree."""
    if (integer and not isinstance(value, int)) or not bound.holds(value):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{op}: {name} must be {kind} {bound.text()}, got {value!r}")


def check_unit_interval(op: str, name: str, value) -> None:
    """`value` in (0, 1] (semiearth.bounds.UNIT)."""
    check_bound(op, name, value, UNIT)


def check_int(op: str, name: str, value, low: int) -> None:
    """`value` an integer >= `low`."""
    check_bound(op, name, value, Bound(ge=low), integer=True)
