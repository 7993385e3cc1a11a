"""Loading of the compiled extension `semiearth._C`, the choice of backend for each call, and the
call itself.

An op runs through the PyTorch dispatcher, `torch.ops.semiearth.<op>` (torchvision's design): the
C++ kernels are its CPU implementations, the CUDA kernel of crop_batch and the Triton kernels of
purify_stats and purify_apply (registered in _triton.py) its CUDA ones, so torch.compile and
`torch.ops.semiearth.*` see the same kernels as `semiearth.ops`. `backend=` overrides the choice:
OP_BACKENDS is the one table of what each op has, and `backend_device` says where each runs.
"""

import importlib
import os
import warnings
from functools import cache

import torch

# The per-op backend table: the backends each op has, and the only names its `backend=` accepts
# besides "auto". A new backend of an op = its kernel, one name here and one branch in ops/<op>.py.
OP_BACKENDS: dict[str, tuple[str, ...]] = {
    "purify_stats": ("torch", "cpp", "triton"),
    "crop_batch": ("torch", "cpp", "cuda"),
    "purify_apply": ("torch", "cpp", "triton"),
}
GPU_BACKENDS = ("triton", "cuda")  # "auto" on CUDA tensors picks the op's one of these
BACKENDS = ("auto", *sorted({b for names in OP_BACKENDS.values() for b in names}))  # every name, some op
BUILD_HINT = "build it with `pip install --no-build-isolation -e .` (or `make test`)"


_LOADED: list = []  # [the extension module or None], once loaded (a plain global: torch.compile reads it)


def extension():
    """The imported `semiearth._C` module (which registers torch.ops.semiearth), or None."""
    if not _LOADED:
        _LOADED.append(_load_extension())
    return _LOADED[0]


def _load_extension():
    try:
        from semiearth import _C
    except ImportError:
        return None
    from semiearth.ops import (
        _fake,  # noqa: F401  (fake impls for torch.compile)
        _triton,
    )

    _triton.register_cuda_kernels()
    return _C


def has_cpp() -> bool:
    """True when the C++ CPU kernels are built and loaded."""
    return extension() is not None


def has_cuda_kernels() -> bool:
    """True when the extension was compiled with its CUDA kernels (WITH_CUDA)."""
    ext = extension()
    return ext is not None and bool(ext.with_cuda())


def triton_usable(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, or on CPU tensors under the interpreter (TRITON_INTERPRET=1)."""
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@cache
def _warn_reference_once(op: str) -> None:
    warnings.warn(
        f"semiearth.ops.{op}: the C++ extension semiearth._C is not built, using the slow torch "
        f"reference; {BUILD_HINT}.",
        RuntimeWarning,
        stacklevel=4,
    )


def backends(op: str) -> tuple[str, ...]:
    """The backends `op` has (OP_BACKENDS), without "auto"."""
    return OP_BACKENDS[op]


def backend_device(backend: str) -> str:
    """The device type a fast backend runs on: "cpu" for cpp, "cuda" for cuda and triton (the
    Triton interpreter, TRITON_INTERPRET=1, runs triton on the CPU too, for tests)."""
    return {"cpp": "cpu", "cuda": "cuda", "triton": "cuda"}[backend]


def fast_backend(op: str, device: torch.device | str) -> str:
    """The backend that "auto" picks for `op` on `device`, without warnings or errors (benches and
    tests name it in their reports): the op's GPU backend on CUDA, cpp on the CPU, else torch."""
    if torch.device(device).type == "cuda":
        return next(b for b in OP_BACKENDS[op] if b in GPU_BACKENDS)
    return "cpp" if has_cpp() else "torch"


# The Triton implementations, called directly where the dispatcher cannot reach them: on CPU
# tensors under the interpreter, or on CUDA when the extension (which defines the ops) is not built.
TRITON_FUNCTIONS = {
    "purify_stats": "semiearth.kernels.purify_stats:purify_stats_triton",
    "purify_apply": "semiearth.kernels.purify_apply:purify_apply_triton",
}


def call(op: str, backend: str, *args):
    """Run `op` with a resolved fast `backend` (not "torch") on validated arguments: through the
    dispatcher, `torch.ops.semiearth.<op>(*args)`, where it routes the tensors' device to this
    backend, else the Triton function itself."""
    if backend == "triton" and not (has_cpp() and args[0].is_cuda):
        module, name = TRITON_FUNCTIONS[op].split(":")
        return getattr(importlib.import_module(module), name)(*args)
    return getattr(torch.ops.semiearth, op)(*args)


def resolve(op: str, backend: str, device: torch.device) -> str:
    """Map `backend` ("auto" or one of the op's backends in OP_BACKENDS) to the one that will run,
    or raise a clear error; a backend the op does not have is a ValueError listing those it has.

    "auto": the op's GPU backend ("triton" or "cuda") for CUDA tensors, "cpp" for CPU tensors, and
    the torch reference (with one warning) when the extension is not built.
    """
    if backend != "auto" and backend not in OP_BACKENDS[op]:
        raise ValueError(
            f"{op}: backend must be 'auto' or one of the backends {op} has ({', '.join(OP_BACKENDS[op])}), "
            f"got {backend!r}"
        )
    if backend == "auto":
        if device.type == "cuda":
            backend = next(b for b in OP_BACKENDS[op] if b in GPU_BACKENDS)
        elif device.type == "cpu" and has_cpp():
            return "cpp"
        else:
            _warn_reference_once(op)
            return "torch"
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"{op}: backend 'cpp' takes CPU tensors, got {device}; use 'auto'")
        if not has_cpp():
            raise RuntimeError(f"{op}: backend 'cpp' needs the extension semiearth._C; {BUILD_HINT}")
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{op}: backend 'cuda' takes CUDA tensors, got {device}")
        if not has_cuda_kernels():
            raise RuntimeError(
                f"{op}: semiearth._C was built without CUDA kernels; rebuild with a CUDA toolkit "
                "(FORCE_CUDA=1 pip install --no-build-isolation -e .)"
            )
    if backend == "triton" and not triton_usable(device):
        raise ValueError(
            f"{op}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before "
            "importing triton, for testing on the CPU)"
        )
    return backend
