"""What ptxas says about a compiled GPU kernel, and what that means on an H100/H200.

Used by the budget tests (tests/test_kernel_budgets.py) and bench/kernel_budgets.py for both the
Triton kernels (their ptxas log, captured while triton.compile builds them) and the CUDA kernels
of csrc/cuda (nvcc -Xptxas -v). No GPU is needed: these are the compiler's own numbers.
"""

import re
from typing import NamedTuple


class Usage(NamedTuple):
    """Resources of one kernel as ptxas reports them (bytes per thread for stack and spills)."""

    registers: int
    spill_stores: int
    spill_loads: int
    stack: int

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas_log(text: str) -> dict[str, Usage]:
    """{kernel name: Usage} from the text of `ptxas -v` (one block per entry function)."""
    usage, name, frame = {}, None, (0, 0, 0)
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            name, frame = m.group(1), (0, 0, 0)
        elif (m := _FRAME.search(line)) and name:
            frame = tuple(int(g) for g in m.groups())
        elif (m := _REGS.search(line)) and name:
            stack, stores, loads = frame
            usage[name] = Usage(int(m.group(1)), stores, loads, stack)
            name = None
    return usage


class SM(NamedTuple):
    """Per-SM limits of a GPU generation (CUDA occupancy calculator, compute capability 8.0/9.0)."""

    name: str
    sms: int
    max_warps: int
    max_blocks: int
    registers: int
    max_smem: int  # bytes of shared memory a block can get
    bandwidth: float  # bytes/s of HBM, for the memory floor


H100 = SM("H100 SXM", 132, 64, 32, 65536, 227 * 1024, 3.35e12)
H200 = SM("H200", 132, 64, 32, 65536, 227 * 1024, 4.8e12)
A100 = SM("A100 SXM", 108, 64, 32, 65536, 163 * 1024, 2.04e12)
SM_OF_ARCH = {80: A100, 90: H100}


def blocks_per_sm(registers: int, num_warps: int, smem: int = 0, sm: SM = H100) -> int:
    """Resident blocks of `num_warps` warps per SM, from registers (allocated per warp in units of
    256), warps, the block limit and shared memory."""
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = sm.registers // (regs_per_warp * num_warps)
    by_warps = sm.max_warps // num_warps
    by_smem = sm.max_smem // smem if smem else sm.max_blocks
    return max(0, min(by_regs, by_warps, sm.max_blocks, by_smem))


def occupancy(registers: int, num_warps: int, smem: int = 0, sm: SM = H100) -> float:
    """Resident warps / the SM's maximum (0..1)."""
    return blocks_per_sm(registers, num_warps, smem, sm) * num_warps / sm.max_warps


def waves(programs: int, registers: int, num_warps: int, smem: int = 0, sm: SM = H100) -> float:
    """Programs of a grid / the programs the whole GPU holds at once (>= 1: the grid fills it)."""
    return programs / max(1, blocks_per_sm(registers, num_warps, smem, sm) * sm.sms)
