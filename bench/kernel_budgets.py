"""Registers, spills, occupancy and memory floor of every GPU kernel at the target shapes, no GPU needed.

    python bench/kernel_budgets.py [--arch 90] [--json PATH]

Compiles the launches that the ops make on CUDA tensors (tile_config(gpu=True), the `plan_*`
functions; tests/triton_aot.py) for sm_<arch> with the installed Triton, and csrc/cuda with nvcc,
and reads ptxas' report (tests/ptxas.py). Per kernel and shape: registers per thread and their
budget, spill bytes, occupancy on an H100/H200 (same SM limits), programs per wave, and the memory
floor (the bytes the kernel must move at HBM bandwidth) on an H100 SXM and an H200.

These are the compiler's numbers and a bandwidth bound, not timings: `make gpu-check` measures.
To see another Triton (the GPU image has 3.6): `pip install --target DIR triton==3.6.0` and run
this with PYTHONPATH=DIR.
"""

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import triton_aot  # noqa: E402
from ptxas import H100, H200, SM_OF_ARCH, occupancy, waves  # noqa: E402

BUDGETS = triton_aot.REGISTER_BUDGETS


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def floor_bytes(kernel: str, b: int, c: int, h: int, w: int, cell: int, dtype: torch.dtype, rule: int) -> int:
    """Bytes a kernel must read and write at one target shape (ignore mask on, 16 regions/image).

    purify_apply's bayes rule reads the logits of hit pixels only: counted as the candidates of
    16 whole cells per image, an upper bound on what 16 regions can hit."""
    px, cells = b * h * w, b * -(-h // cell) * -(-w // cell)
    if kernel == "_confidence_pool_kernel":
        return px * (c * element_size(dtype) + 1) + px * (4 + 8 + 1) + cells * (4 * c + 4)
    if kernel == "_boundary_pool_kernel":
        return px * (8 + 1 + 1) + px * 1 + cells * 4
    hit = min(px, b * triton_aot.REGIONS_PER_IMAGE * cell * cell)
    logits = hit * c * element_size(dtype) if rule == 0 else 0
    return px * (8 + 4 + 1) + cells * 4 * c + logits + px * (8 + 4)


def target_rows(arch: int) -> list[dict]:
    """One row per distinct target launch: shape, dtype, kernel, ptxas usage, occupancy, floor."""
    sm = SM_OF_ARCH[arch]
    rows, seen = [], set()
    for (b, c, h, w, cell), dtype in ((s, d) for s in triton_aot.TARGET_SHAPES for d in triton_aot.TARGET_DTYPES):
        launches = triton_aot.stats_launches(b, c, h, w, cell, dtype, True, 1)
        for rule in (0, 1):
            launches.append(triton_aot.apply_launch(b, c, h, w, cell, dtype, triton_aot.REGIONS_PER_IMAGE * b, rule))
        for launch in launches:
            name = launch.kernel.fn.__name__
            rule = launch.meta.get("RULE", 0)
            key = (name, rule, b, c, h, w, dtype)
            if key in seen:
                continue
            seen.add(key)
            _, use = triton_aot.compile_launch(launch, arch)
            warps = launch.meta["num_warps"]
            programs = launch.grid[0] * launch.grid[1] * launch.grid[2]
            nbytes = floor_bytes(name, b, c, h, w, cell, dtype, rule)
            label = name.strip("_").replace("_kernel", "") + (
                {0: " bayes", 1: " paper"}[rule] if "apply" in name else ""
            )
            rows.append({
                "kernel": label,
                "shape": f"B{b} C{c} {h}x{w}",
                "dtype": str(dtype).replace("torch.", ""),
                "registers": use.registers,
                "budget": BUDGETS[name],
                "spill_bytes": use.spills,
                "stack": use.stack,
                "warps": warps,
                "occupancy": occupancy(use.registers, warps, sm=sm),
                "programs": programs,
                "waves": waves(programs, use.registers, warps, sm=sm),
                "floor_us_h100": nbytes / H100.bandwidth * 1e6,
                "floor_us_h200": nbytes / H200.bandwidth * 1e6,
                "megabytes": nbytes / 1e6,
            })  # fmt: skip
    return rows


def cuda_rows(arch: int) -> list[dict]:
    """The CUDA kernels of csrc/cuda (nvcc -Xptxas -v), or none without nvcc."""
    try:
        from cuda_ptxas import CUDA_REGISTER_BUDGET, cuda_ptxas_usage
    except ImportError:
        return []
    try:
        usage = cuda_ptxas_usage(arch)
    except FileNotFoundError as e:
        print(f"csrc/cuda not compiled: {e}", file=sys.stderr)
        return []
    sm = SM_OF_ARCH[arch]
    rows = []
    for name, use in sorted(usage.items()):
        rows.append({
            "kernel": name, "shape": "any", "dtype": "-", "registers": use.registers,
            "budget": CUDA_REGISTER_BUDGET, "spill_bytes": use.spills, "stack": use.stack, "warps": 8,
            "occupancy": occupancy(use.registers, 8, sm=sm), "programs": None, "waves": None,
            "floor_us_h100": None, "floor_us_h200": None, "megabytes": None,
        })  # fmt: skip
    return rows


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], arch: int) -> None:
    import triton

    print(f"sm_{arch}, Triton {triton.__version__}, occupancy and waves on {SM_OF_ARCH[arch].name}")
    head = "| kernel | shape | dtype | registers (budget) | spills | occupancy | programs | waves | floor H100 / H200 |"
    print(head)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        floor = "-" if r["floor_us_h100"] is None else f"{r['floor_us_h100']:.1f} / {r['floor_us_h200']:.1f} µs"
        print(
            f"| {r['kernel']} | {r['shape']} | {r['dtype']} | {r['registers']} ({r['budget']}) | "
            f"{r['spill_bytes']} B | {r['occupancy']:.1%} | {fmt(r['programs'], 'd')} | {fmt(r['waves'], '.2f')} | "
            f"{floor} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(SM_OF_ARCH), help="compute capability x 10")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: under the interpreter triton.jit builds no compilable kernel")
    rows = target_rows(args.arch) + cuda_rows(args.arch)
    print_table(rows, args.arch)
    over = [r for r in rows if r["registers"] > r["budget"] or r["spill_bytes"] or r["stack"]]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "rows": rows}, f, indent=1)
    print(f"{len(over)} of {len(rows)} launches over budget" if over else f"all {len(rows)} launches within budget")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
