"""Loading of the compiled extension `semiearth._C` and the choice of backend for each call."""

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


def backends(op: str) -> tuple[str, ...]:
    """The backends `op` has (OP_BACKENDS), without "auto"."""
    return OP_BACKENDS[op]


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
