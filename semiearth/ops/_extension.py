"""Loading of the compiled extension `semiearth._C` and the choice of backend for each call."""

import os
import warnings
from functools import cache

import torch

BACKENDS = ("auto", "torch", "cpp", "cuda", "triton")
BUILD_HINT = "build it with `pip install --no-build-isolation -e .` (or `make test`)"


@cache
def extension():
    """The imported `semiearth._C` module (which registers torch.ops.semiearth), or None."""
    try:
        from semiearth import _C
    except ImportError:
        return None
    from semiearth.ops import _fake  # noqa: F401  (fake impls for torch.compile)

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


def resolve(op: str, backend: str, device: torch.device, gpu_backend: str) -> str:
    """Map `backend` ("auto" or explicit) to the one that will run, or raise a clear error.

    "auto": `gpu_backend` ("triton" or "cuda") for CUDA tensors, "cpp" for CPU tensors, and the
    torch reference (with one warning) when the extension is not built.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda":
            backend = gpu_backend
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
