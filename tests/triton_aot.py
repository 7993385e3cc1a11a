"""Compile every Triton launch that semiearth.ops can make for a GPU target, ahead of time, no GPU.

The interpreter (TRITON_INTERPRET=1, which runs the kernels in CI) accepts kernels that no GPU
compiles: module-level globals that are not `tl.constexpr(...)`, `.to()` on an integer argument that
Triton specialised into a constant. This builds the exact launches of the op wrappers
(`plan_*` in semiearth.kernels) on meta tensors, specialises their arguments with Triton's own
binder (integers equal to 1 become constants, multiples of 16 and aligned pointers get attributes)
and compiles each distinct specialisation to a cubin with `triton.compile` for a `GPUTarget`.

Run without TRITON_INTERPRET (tests/test_triton_aot.py does): `python tests/triton_aot.py --arch 90`.
Prints one JSON object: {"compiled": n, "failures": [{"launch": ..., "error": ...}], "usage": [ptxas'
registers and spills of each], "over_budget": [...]}; exit 1 on any failure or budget overrun
(REGISTER_BUDGETS, zero spills).
"""

import argparse
import contextlib
import io
import itertools
import json
import os
import sys

import torch

# Meta tensors carry shapes, strides and dtypes, which is all that specialisation reads.
META = torch.device("meta")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# (B, C, H, W, cell) whose tile configurations (tile_config(gpu=True)) and integer arguments cover
# what the ops launch: 1 in every integer position the kernels take, cells that do and do not
# divide the image, cells wider than the image, C past one class chunk, the training and benchmark
# shapes. Each is compiled with float32 logits, no ignore mask, radius 1, 5 regions, both rules.
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 1, 1, 1, 8),
    (1, 3, 1, 37, 8),
    (2, 3, 37, 1, 8),
    (2, 6, 37, 45, 8),
    (1, 70, 12, 21, 16),
    (2, 5, 40, 70, 32),
    (1, 3, 33, 65, 48),
    (1, 4, 20, 9, 64),
    (4, 6, 518, 518, 32),
    (4, 8, 1024, 1024, 32),
    (1, 64, 300, 7, 48),
    (1, 3, 9, 1000, 500),
]
# The shapes the kernels are held to their budgets at (issue 19): training and benchmark batches,
# cell 32, radius 1, ignore mask on, 16 regions per image, float32 and bfloat16 logits.
TARGET_SHAPES = [(4, 6, 518, 518, 32), (8, 6, 518, 518, 32), (4, 8, 1024, 1024, 32), (16, 6, 256, 256, 32)]
TARGET_DTYPES = (torch.float32, torch.bfloat16)
REGIONS_PER_IMAGE = 16
# Registers per thread each kernel may use on every launch (no spills either): the kernels that
# read the logits stay within 64 (50 % occupancy or more on an H100 with 4 warps), the others 128.
REGISTER_BUDGETS = {"_confidence_pool_kernel": 64, "_purify_apply_kernel": 64, "_boundary_pool_kernel": 128}
# On these, every other axis: the three logit dtypes, with and without ignore mask, radius 0/1/2,
# 1 / 5 regions, both rules (the product: these options are independent constexprs and arguments).
VARIANT_SHAPES = [(1, 1, 1, 1, 1), (2, 6, 37, 45, 8), (1, 70, 12, 21, 16)]


def stats_launches(b, c, h, w, cell, dtype, with_ignore, radius):
    """The two launches of purify_stats (semiearth.kernels.purify_stats) for one call."""
    from semiearth.kernels._common import tile_config
    from semiearth.kernels.boundary_pool import plan_boundary_pool
    from semiearth.kernels.confidence import plan_confidence_pool

    logits = torch.empty((b, c, h, w), dtype=dtype, device=META)
    ignore = torch.empty((b, h, w), dtype=torch.uint8, device=META) if with_ignore else None
    cfg = tile_config(h, w, cell, gpu=True)
    (_, label, flags, *_), kernel1 = plan_confidence_pool(logits, ignore, 0.7, cell, cfg)
    _, kernel2 = plan_boundary_pool(label, ignore, flags, radius, cell, cfg)
    return [kernel1, kernel2]


def apply_launch(b, c, h, w, cell, dtype, n, rule):
    """The launch of purify_apply (semiearth.kernels.purify_apply) for one call with n regions."""
    from semiearth.kernels.purify_apply import plan_purify_apply

    logits = torch.empty((b, c, h, w), dtype=dtype, device=META)
    pix = {"size": (b, h, w), "device": META}
    label, conf, flags = (
        torch.empty(**pix, dtype=torch.int64),
        torch.empty(**pix),
        torch.empty(**pix, dtype=torch.uint8),
    )
    seg = torch.empty((b, -(-h // cell), -(-w // cell), c), dtype=torch.int32, device=META)
    weights = torch.empty((n, c), device=META)
    return plan_purify_apply(logits, label, conf, flags, seg, weights, rule, 0.7, cell, gpu=True)[1]


def launches_of(b, c, h, w, cell, dtypes, ignores, radii, regions):
    name = f"B{b} C{c} {h}x{w} cell {cell}"
    for dtype, with_ignore, radius in itertools.product(dtypes, ignores, radii):
        tag = f"{name} {str(dtype).replace('torch.', '')} ignore={with_ignore} radius={radius}"
        for launch in stats_launches(b, c, h, w, cell, dtype, with_ignore, radius):
            yield f"purify_stats {tag}", launch
    for dtype, n, rule in itertools.product(dtypes, regions, (0, 1)):
        tag = f"{name} {str(dtype).replace('torch.', '')} regions={n} rule={rule}"
        yield f"purify_apply {tag}", apply_launch(b, c, h, w, cell, dtype, n, rule)


def target_launches():
    """(description, Launch) of the GPU launches at TARGET_SHAPES."""
    for b, c, h, w, cell in TARGET_SHAPES:
        yield from launches_of(b, c, h, w, cell, TARGET_DTYPES, (True,), (1,), (REGIONS_PER_IMAGE * b,))


def all_launches():
    """(description, Launch) of the specialisations to compile (targets, SHAPES, VARIANT_SHAPES)."""
    yield from target_launches()
    for shape in SHAPES:
        yield from launches_of(*shape, (torch.float32,), (False,), (1,), (5,))
    for shape in VARIANT_SHAPES:
        yield from launches_of(*shape, DTYPES, (False, True), (0, 1, 2), (1, 5))


def specialise(launch, backend):
    """(key, ASTSource, options) as triton.jit would compile `launch` on `backend`'s target."""
    from triton.compiler import ASTSource
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.meta)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.meta, bound, specialization, options)
    key = (kernel.fn.__name__, repr(sorted(signature.items())), repr(sorted(constexprs.items())), repr(attrs))
    key += (repr(sorted(options.__dict__.items())),)
    return key, ASTSource(kernel, signature, constexprs, attrs), options


def compile_launch(launch, arch: int):
    """(CompiledKernel, ptxas Usage) of `launch` built for sm_<arch>, with ptxas' own report.

    Triton's cache is bypassed so that ptxas runs and its `-v` log (printed by Triton when
    knobs.nvidia.dump_ptxas_log is on) can be read."""
    import triton
    from ptxas import parse_ptxas_log
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", arch, 32)
    _, src, options = specialise(launch, make_backend(target))
    log = io.StringIO()
    with knobs.nvidia.scope(), knobs.compilation.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True
        compiled = triton.compile(src, target=target, options=options.__dict__)
    assert compiled.asm.get("cubin"), "no cubin produced"
    usage = parse_ptxas_log(log.getvalue())
    return compiled, usage[launch.kernel.fn.__name__]


def compile_all(arch: int, kernels=None) -> dict:
    """Compile each distinct specialisation for sm_<arch>; `kernels` overrides all_launches().

    Each compiled entry records ptxas' registers and spills and the launch's warps, for the
    budget checks of tests/test_kernel_budgets.py."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", arch, 32))
    seen, failures, usage = set(), [], []
    for name, launch in kernels if kernels is not None else all_launches():
        key = specialise(launch, backend)[0]
        if key in seen:
            continue
        seen.add(key)
        try:
            _, use = compile_launch(launch, arch)
            usage.append(
                {"launch": name, "kernel": key[0], "num_warps": launch.meta.get("num_warps", 4), **use._asdict()}
            )
        except Exception as e:  # noqa: BLE001  (report every failing specialisation, then fail)
            failures.append({"launch": name, "kernel": key[0], "error": f"{type(e).__name__}: {e}"[:2000]})
    return {"arch": arch, "compiled": len(seen), "failures": failures, "usage": usage}


def over_budget(usage: list[dict]) -> list[dict]:
    """The compiled entries (compile_all's "usage") that spill or use more registers than their budget."""
    return [u for u in usage if u["registers"] > REGISTER_BUDGETS[u["kernel"]] or u["spill_stores"] or u["stack"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80 = A100, 90 = H100/H200)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: under the interpreter triton.jit builds no compilable kernel")
    result = compile_all(args.arch)
    import triton

    result["triton"] = triton.__version__
    result["over_budget"] = over_budget(result["usage"])
    print(json.dumps(result, indent=1))
    return 1 if result["failures"] or result["over_budget"] else 0


if __name__ == "__main__":
    sys.exit(main())
