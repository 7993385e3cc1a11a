"""ptxas resource usage of the CUDA kernels in csrc/cuda, without a GPU.

`cuda_ptxas_usage(arch)` compiles every csrc/cuda/*.cu in one nvcc run (`-arch=sm_<arch>
-Xptxas -v`, with the include paths, defines and -std that setup.py / torch's CUDAExtension
use) into a temporary folder and parses the ptxas log with tests/ptxas.py. Only device code is
compiled (`-cubin` instead of `-c`): ptxas gets the same PTX as in `-c`, and the host compiler
never parses the torch headers (about 15 s per arch instead of 45 s, nearly all of it nvcc's
device front end on those headers). Kernel names are demangled and shortened to
`name<template args>`, e.g. 'crop_batch_kernel<float, int32_t>'.

    python tests/cuda_ptxas.py [arch ...]   # prints the usage for sm_80 and sm_90 by default

Used by tests/test_cuda_budgets.py and bench/kernel_budgets.py (keep `cuda_ptxas_usage` and
`CUDA_REGISTER_BUDGET`).
"""

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

try:
    from ptxas import Usage, parse_ptxas_log
except ImportError:  # imported as tests.cuda_ptxas (bench/)
    from tests.ptxas import Usage, parse_ptxas_log

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"

# Registers per thread every csrc/cuda kernel must stay within (with no spills and no stack):
# 64 keeps 256-thread blocks at 4 per SM (full occupancy is 32 registers, half is 64).
CUDA_REGISTER_BUDGET = 64
CUDA_ARCHS = (80, 90)


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME / $CUDA_PATH, then PATH, then /usr/local/cuda; None if absent."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.join(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = "/usr/local/cuda/bin/nvcc"
    return default if os.access(default, os.X_OK) else None


def cuda_sources() -> list[Path]:
    return sorted(CUDA_DIR.glob("*.cu"))


def nvcc_flags(arch: int) -> list[str]:
    """The flags setup.py's CUDAExtension compiles csrc/cuda with (minus host-only ones)."""
    import torch
    from torch.utils import cpp_extension

    site = os.path.dirname(os.path.dirname(torch.__file__))
    includes = [str(ROOT / "csrc")]
    includes += [d for d in glob.glob(os.path.join(site, "nvidia", "cu*", "include")) if os.path.isdir(d)]
    includes += cpp_extension.include_paths(device_type="cuda")
    includes.append(sysconfig.get_paths()["include"])
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    return [
        *cpp_extension.COMMON_NVCC_FLAGS,
        "-O3",
        "-std=c++20",
        "-DWITH_CUDA",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=_C",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *(f"-I{d}" for d in includes),
        f"-arch=sm_{arch}",
    ]


def compile_cuda(arch: int, out_dir: str | os.PathLike) -> tuple[str, list[Path]]:
    """Compile every csrc/cuda/*.cu for sm_<arch> into out_dir (one nvcc run, `-cubin
    -Xptxas -v`): (the ptxas log, the .cubin files). Raises FileNotFoundError without nvcc,
    RuntimeError if nvcc fails."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    sources = cuda_sources()
    cmd = [nvcc, *nvcc_flags(arch), "-Xptxas", "-v", "-cubin", "--output-directory", str(out_dir)]
    cmd += [str(s) for s in sources]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed ({proc.returncode}): {' '.join(cmd)}\n{log}")
    return log, [Path(out_dir) / (s.stem + ".cubin") for s in sources]


def readable_names(mangled: list[str]) -> list[str]:
    """['_ZN...crop_batch_kernelIfiEEv...'] -> ['crop_batch_kernel<float, int32_t>'] (one c++filt
    run; the mangled names where c++filt is missing; the whole demangled name where two kernels
    would get the same short one)."""
    try:
        proc = subprocess.run(["c++filt", *mangled], capture_output=True, text=True, check=True)
        demangled = proc.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return list(mangled)
    if len(demangled) != len(mangled):
        return list(mangled)
    short = [shorten(d) for d in demangled]
    return [s if short.count(s) == 1 else d for s, d in zip(short, demangled, strict=True)]


def shorten(demangled: str) -> str:
    """'void ns::(anonymous namespace)::k<unsigned char, int>(args)' -> 'k<uint8_t, int32_t>'."""
    # Cut the parameter list: the last top-level '(...)'.
    depth, cut = 0, len(demangled)
    for i in range(len(demangled) - 1, -1, -1):
        ch = demangled[i]
        if ch == ")":
            depth += 1
        elif ch == "(":
            depth -= 1
            if depth == 0:
                cut = i
                break
    head = demangled[:cut]
    # Drop the return type and namespaces: the name starts after the last top-level ' ' / '::'.
    depth, start = 0, 0
    for i, ch in enumerate(head):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif depth == 0 and (ch == " " or (ch == ":" and head[i - 1 : i + 1] == "::")):
            start = i + 1
    name = head[start:].replace("unsigned char", "uint8_t")
    return re.sub(r"\blong\b", "int64_t", re.sub(r"\bint\b", "int32_t", name))


@functools.cache
def _usage(arch: int) -> tuple[tuple[str, Usage], ...]:
    if not cuda_sources():
        return ()
    with tempfile.TemporaryDirectory(prefix="cuda_ptxas_") as tmp:
        log, _ = compile_cuda(arch, tmp)
    usage = parse_ptxas_log(log)
    if not usage:
        raise RuntimeError(f"no kernel found in the ptxas log of sm_{arch}:\n{log}")
    return tuple(zip(readable_names(list(usage)), usage.values(), strict=True))


def cuda_ptxas_usage(arch: int) -> dict[str, Usage]:
    """{kernel: Usage} of every kernel of csrc/cuda compiled for sm_<arch> (one nvcc run per arch,
    cached). Raises FileNotFoundError when nvcc is missing, RuntimeError when it fails."""
    return dict(_usage(int(arch)))


if __name__ == "__main__":
    for a in [int(x) for x in sys.argv[1:]] or CUDA_ARCHS:
        for name, u in cuda_ptxas_usage(a).items():
            print(
                f"sm_{a} {name}: {u.registers} registers, spill stores/loads {u.spill_stores}/{u.spill_loads} B, stack {u.stack} B"
            )
