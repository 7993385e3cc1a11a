"""ptxas budgets of the CUDA kernels in csrc/cuda, checked at compile time (no GPU needed).

Every kernel, compiled for sm_80 and sm_90 with the flags setup.py uses, must have no spill
stores or loads, no stack frame and at most CUDA_REGISTER_BUDGET (64) registers per thread: 64
keeps 256-thread blocks at 4 per SM (half occupancy) or better. crop_batch_kernel uses 40-42
(its __launch_bounds__(256, 4) caps it at 64, so a regression shows as spills rather than
registers). Skipped where nvcc is not found (CUDA_HOME, PATH) or torch is a CPU build.
"""

import pytest
import torch
from cuda_ptxas import CUDA_ARCHS, CUDA_REGISTER_BUDGET, cuda_ptxas_usage, cuda_sources, find_nvcc

# Instantiations of crop_batch_kernel<image type, index type> the launcher uses.
CROP_BATCH = {f"crop_batch_kernel<{t}, {i}>" for t in ("float", "uint8_t") for i in ("int32_t", "int64_t")}


def usage(arch):
    if find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH): the CUDA kernels' ptxas budget is not checked")
    if torch.version.cuda is None:
        pytest.skip("torch is a CPU build: csrc/cuda is not compiled against it")
    return cuda_ptxas_usage(arch)


@pytest.mark.parametrize("arch", CUDA_ARCHS)
def test_cuda_kernels_within_budget(arch):
    kernels = usage(arch)
    assert cuda_sources(), "no csrc/cuda/*.cu found"
    assert CROP_BATCH <= set(kernels), f"sm_{arch}: missing {sorted(CROP_BATCH - set(kernels))} in {sorted(kernels)}"
    over = {
        name: u
        for name, u in kernels.items()
        if u.spill_stores or u.spill_loads or u.stack or u.registers > CUDA_REGISTER_BUDGET
    }
    assert not over, (
        f"sm_{arch}: kernels over the budget (<= {CUDA_REGISTER_BUDGET} registers, no spills, no stack): "
        + "; ".join(f"{k}: {u}" for k, u in sorted(over.items()))
    )
