"""count_syncs: count what would make the host wait for the GPU, on a machine without one.

    with count_syncs() as syncs:
        train_step(...)
    assert syncs.total <= 2, syncs.report()

A host-device sync is the host reading device data (or waiting for the device) before it can go
on: `.item()`, `bool(t)`, `int(t)`, `float(t)`, ops whose output shape depends on the data
(`nonzero`, `masked_select`, `x[mask]`, `unique`, `bincount`, ...), copies to the host (`.tolist()`,
`.numpy()`, `.cpu()`, `.to("cpu")`), blocking copies between host and device, and the explicit
waits (`torch.cuda.synchronize`, `Event.synchronize` / `elapsed_time`, `Stream.synchronize`).

Two hooks see them:

- a `TorchDispatchMode` sees every aten op: `_local_scalar_dense` (item/bool/int/float), ops
  tagged `dynamic_output_shape` or `data_dependent_output` (nonzero, masked_select, unique*,
  bincount, repeat_interleave without output_size, one_hot without num_classes), `index` /
  `index_put` with a boolean index, `equal`, `is_nonzero`, and (with a GPU) blocking copies
  between devices (`_to_copy`, `copy_`);
- patches of `Tensor.tolist`, `.numpy()`, `.cpu()`, `.to(...)`, `.cuda()` and of the CUDA waits
  (these host-side reads never reach the dispatcher as one op).

Without a GPU (`cpu_is_device`, the default when CUDA is absent) every CPU tensor stands for a
device tensor: each of the above counts, and so does every blocking `.to(<device>)` (on this
machine a copy to "the device" and a no-op look the same; pass `non_blocking=True` or skip the
call when the tensor is already there). With a GPU only tensors on it count, so the counts are
exact there.

Host-only bookkeeping that is never a sync on a GPU is set aside in `skipped`, not counted: the
optimisers' `step` counters (CPU tensors unless capturable/fused) read with `.item()` inside
torch.optim.

Each sync is attributed to `by_site`: "path:line op" of the innermost frame in the semiearth
package (else the innermost frame outside torch and this file), so a developer sees where each
comes from. `torch.cuda.set_sync_debug_mode("warn")` is the cross-check on a GPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_HERE = os.path.abspath(__file__)
_ROOT = os.path.dirname(os.path.dirname(_HERE))  # the repository root
_PACKAGE = os.path.join(_ROOT, "semiearth") + os.sep
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_HOST_ONLY = (os.path.join(_TORCH, "optim") + os.sep,)  # optimiser `step` counters live on the host

_ALWAYS = {
    aten._local_scalar_dense.default,
    aten.equal.default,
    aten.is_nonzero.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,
}
_INDEX = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_TAGS = (torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output)

_state = threading.local()


def _active() -> SyncCounter | None:
    return getattr(_state, "counter", None)


class SyncCounter:
    """What `count_syncs` counted: `total`, `by_site` (Counter of "path:line op"), `skipped`
    (host-only reads that are no sync on a GPU), and `snapshot()` / `since()` to split a run into
    steps."""

    def __init__(self, cpu_is_device: bool):
        self.cpu_is_device = cpu_is_device
        self.by_site: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._paused = 0
        self._inside = 0  # inside a patched method: its own aten ops are not counted again

    @property
    def total(self) -> int:
        return sum(self.by_site.values())

    def snapshot(self) -> Counter:
        return Counter(self.by_site)

    def since(self, snapshot: Counter) -> Counter:
        """The syncs counted after `snapshot` (a Counter of sites)."""
        return self.by_site - snapshot

    @contextlib.contextmanager
    def paused(self):
        """Nothing is counted inside (set-up, data loading)."""
        self._paused += 1
        try:
            yield self
        finally:
            self._paused -= 1

    def report(self, sites: Counter | None = None) -> str:
        sites = self.by_site if sites is None else sites
        lines = [f"{sum(sites.values())} syncs"] + [f"  {n:3d}  {site}" for site, n in sites.most_common()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"SyncCounter(total={self.total}, by_site={dict(self.by_site)})"

    # ------------------------------------------------------------------------- recording
    def on_device(self, t) -> bool:
        """Whether tensor `t` stands for device data (a CPU tensor does without a GPU)."""
        if not isinstance(t, torch.Tensor):
            return False
        return t.device.type != "cpu" or (self.cpu_is_device and t.device.type != "meta")

    def record(self, op: str) -> None:
        if self._paused:
            return
        site, in_torch = _site()
        host_only = op == "aten._local_scalar_dense" and any(p.startswith(_HOST_ONLY) for p in in_torch)
        (self.skipped if host_only else self.by_site)[f"{site} {op}"] += 1


def _site() -> tuple[str, list[str]]:
    """("path:line" of the frame that caused the sync, the paths of the innermost frames inside torch).

    The frame is the innermost one in the semiearth package, else the innermost one outside torch."""
    frame = sys._getframe(2)
    in_torch: list[str] = []
    outside_torch = None
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path != _HERE:
            where = f"{os.path.relpath(path, _ROOT) if path.startswith(_ROOT) else path}:{frame.f_lineno}"
            if path.startswith(_PACKAGE):
                return where, in_torch
            if not path.startswith(_TORCH):
                outside_torch = outside_torch or where
            elif outside_torch is None:
                in_torch.append(path)
        frame = frame.f_back
    return outside_torch or "<unknown>", in_torch


def _op_name(func) -> str:
    name = str(func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else func)
    return f"aten.{name}"


class _SyncMode(TorchDispatchMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        c = self.counter
        if not c._inside and not c._paused and self._syncs(func, args, kwargs):
            c.record(_op_name(func))
        return func(*args, **kwargs)

    def _syncs(self, func, args, kwargs) -> bool:
        c = self.counter
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        first = tensors[0] if tensors else None
        if func in _INDEX:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            boolean = any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())
            return boolean and c.on_device(first)
        if func is aten.repeat_interleave.Tensor:
            return kwargs.get("output_size") is None and c.on_device(first)
        if func is aten.one_hot.default:
            num_classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
            return num_classes == -1 and c.on_device(first)
        if func in _ALWAYS or any(tag in func.tags for tag in _TAGS):
            return c.on_device(first)
        if func is aten._to_copy.default or func is aten.copy_.default:
            # a blocking copy between host and device (exact with a GPU; CPU->CPU is never counted here)
            src = args[1] if func is aten.copy_.default else args[0]
            dst_dev = args[0].device if func is aten.copy_.default else kwargs.get("device") or src.device
            non_blocking = (args[2] if func is aten.copy_.default and len(args) > 2 else False) or kwargs.get(
                "non_blocking", False
            )
            cross = torch.device(dst_dev).type != src.device.type
            return cross and not non_blocking
        return False


@contextlib.contextmanager
def _patched(counter: SyncCounter):
    """Patch the host-side reads and waits that never reach the dispatcher as one op."""
    saved = []

    def patch(owner, name, make):
        original = getattr(owner, name, None)
        if original is None:
            return
        saved.append((owner, name, original))
        setattr(owner, name, make(original))

    def counting(op, when):
        def make(original):
            def wrapper(*args, **kwargs):
                c = _active()
                if c is None or c._inside:
                    return original(*args, **kwargs)
                if when(c, *args, **kwargs):
                    c.record(op)
                c._inside += 1
                try:
                    return original(*args, **kwargs)
                finally:
                    c._inside -= 1

            return wrapper

        return make

    def always(c, *args, **kwargs):
        return True

    def self_on_device(c, t, *args, **kwargs):
        return c.on_device(t)

    def blocking_to(c, t, *args, **kwargs):
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is None or non_blocking:
            return False  # a dtype conversion, or an asynchronous copy
        if c.cpu_is_device:
            return True  # host <-> device and a no-op look the same here: count every blocking move
        return torch.device(device).type != t.device.type

    def blocking_cuda(c, t, *args, **kwargs):
        return not kwargs.get("non_blocking", False) and (c.cpu_is_device or t.device.type == "cpu")

    patch(torch.Tensor, "tolist", counting("Tensor.tolist", self_on_device))
    patch(torch.Tensor, "numpy", counting("Tensor.numpy", self_on_device))
    patch(torch.Tensor, "cpu", counting("Tensor.cpu", self_on_device))
    patch(torch.Tensor, "to", counting("Tensor.to", blocking_to))
    patch(torch.Tensor, "cuda", counting("Tensor.cuda", blocking_cuda))
    patch(torch.cuda, "synchronize", counting("torch.cuda.synchronize", always))
    patch(torch.cuda.Event, "synchronize", counting("Event.synchronize", always))
    patch(torch.cuda.Event, "elapsed_time", counting("Event.elapsed_time", always))
    patch(torch.cuda.Stream, "synchronize", counting("Stream.synchronize", always))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@contextlib.contextmanager
def count_syncs(cpu_is_device: bool | None = None):
    """Count the host-device syncs of the code inside; yields a SyncCounter.

    cpu_is_device: whether CPU tensors stand for device tensors; by default True when no CUDA
    device is available (count on the CPU what would sync on a GPU), False otherwise (exact).
    """
    if cpu_is_device is None:
        cpu_is_device = not torch.cuda.is_available()
    counter = SyncCounter(cpu_is_device)
    previous = _active()
    _state.counter = counter
    try:
        with _patched(counter), _SyncMode(counter):
            yield counter
    finally:
        _state.counter = previous
