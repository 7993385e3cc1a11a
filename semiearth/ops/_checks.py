"""Checks of tensor values (NaN logits, out-of-range labels) without a host sync per call.

A check of a value on the device needs that value on the host: one device-to-host sync. Outside
any context an op checks at once and raises (what a user calling `semiearth.purify` once expects).
Inside `deferred_checks()` an op records the device tensor that counts the problem instead, and
`DeferredChecks.raise_if_failed()` reads all of them with one copy, when the caller chooses (the
trainer: at its logging steps). The kernels stay memory-safe on bad values in the meantime; their
outputs for a failed call are meaningless, and the error names the op and the fix as the
immediate check would.

Under torch.compile the checks become `torch._assert_async` (no graph break).
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch

_ACTIVE: contextvars.ContextVar["DeferredChecks | None"] = contextvars.ContextVar("semiearth_checks", default=None)


class DeferredChecks:
    """Failure counts of ops on the device, read at once by `raise_if_failed`."""

    def __init__(self) -> None:
        self._pending: list[tuple[torch.Tensor, Callable[[int], Exception]]] = []

    def add(self, count: torch.Tensor, error: Callable[[int], Exception]) -> None:
        """Record `count` (a 0-d integer tensor, 0 when all is well) and how to report it."""
        self._pending.append((count.reshape(()).to(torch.int64), error))

    def __len__(self) -> int:
        return len(self._pending)

    def raise_if_failed(self) -> None:
        """Raise the first recorded failure (one device-to-host copy for all of them), then forget them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        device = pending[0][0].device
        counts = torch.stack([c if c.device == device else c.to(device) for c, _ in pending]).tolist()
        for (_, error), count in zip(pending, counts, strict=True):
            if count:
                raise error(count)


@contextlib.contextmanager
def deferred_checks(checks: DeferredChecks | None = None) -> Iterator[DeferredChecks]:
    """Inside: the ops record their value checks in `checks` (a new one by default) instead of
    synchronising; it is returned so that the caller reads it when it syncs anyway."""
    checks = DeferredChecks() if checks is None else checks
    token = _ACTIVE.set(checks)
    try:
        yield checks
    finally:
        _ACTIVE.reset(token)


def require_zero(count: torch.Tensor, error: Callable[[int], Exception]) -> None:
    """Raise error(count) unless the 0-d integer tensor `count` is 0: at once, or deferred inside
    `deferred_checks()`, or as an async assert under torch.compile."""
    if torch.compiler.is_compiling():
        torch._assert_async(count == 0, str(error(-1)).replace(" -1 ", " some "))
        return
    checks = _ACTIVE.get()
    if checks is not None:
        checks.add(count, error)
        return
    n = int(count)
    if n:
        raise error(n)


def require(ok: torch.Tensor, error: Callable[[int], Exception]) -> None:
    """require_zero for a boolean tensor `ok` (True when all is well)."""
    require_zero((~ok).to(torch.int64).sum(), error)
