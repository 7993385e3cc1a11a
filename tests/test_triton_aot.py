"""Every Triton kernel compiles for real GPUs (sm_80, sm_90) within its budgets, checked on a
machine without one.

The interpreter tests (TRITON_INTERPRET=1) cannot see what only the GPU compiler rejects, so
tests/triton_aot.py compiles every specialisation the ops launch on CUDA tensors (the GPU tiles
that `plan_*` picks, at the target shapes and the edge cases) ahead of time, in a subprocess
without TRITON_INTERPRET (under it, triton.jit builds nothing compilable), and reads ptxas' report:
no spills and at most REGISTER_BUDGETS registers per thread on every launch. The toy kernels
below check that the harness catches the two mistakes that once shipped.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed")

HERE = Path(__file__).resolve().parent


# The GPU image's Triton (3.6), installed by `make setup` into its own folder, is checked too.
OTHER_TRITON = os.environ.get("SEMIEARTH_OTHER_TRITON", "")


def popen_python(args: list, extra_path: str = "") -> subprocess.Popen:
    """`python *args` in tests/ without TRITON_INTERPRET, so that triton.jit builds real kernels;
    `extra_path` goes first on PYTHONPATH (another Triton)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, str(HERE), env.get("PYTHONPATH")]))
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, *args], cwd=HERE, env=env, stdout=pipe, stderr=pipe, text=True)


def check_aot(procs: dict) -> set:
    """Assert each harness run compiled every launch within budget; the Triton versions they used."""
    versions = set()
    for (triton_name, arch), proc in procs.items():
        out, err = proc.communicate(timeout=1500)
        where = f"sm_{arch} with {triton_name}"
        assert out.strip(), f"the AOT harness printed nothing for {where}:\n{err[-4000:]}"
        result = json.loads(out)
        failures = "\n".join(f"{f['launch']}: {f['error'][-600:]}" for f in result["failures"][:5])
        assert not result["failures"], (
            f"{len(result['failures'])} of {result['compiled']} specialisations do not compile for {where}:\n{failures}"
        )
        assert result["compiled"] >= 50  # the launch grid was really enumerated
        assert len(result["usage"]) == result["compiled"]
        over = "\n".join(
            f"{u['launch']}: {u['registers']} registers, {u['spill_stores']} B spill stores, {u['stack']} B stack"
            for u in result["over_budget"][:10]
        )
        assert not result["over_budget"], f"{where}: kernels over their register/spill budgets:\n{over}"
        assert proc.returncode == 0, err[-4000:]
        versions.add(result["triton"])
    return versions


def test_every_kernel_compiles_for_gpu_within_budget():
    """sm_80 and sm_90 side by side (one process per core), with the pinned Triton."""
    check_aot({("the pinned Triton", arch): popen_python(["triton_aot.py", "--arch", str(arch)]) for arch in (80, 90)})


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(OTHER_TRITON, "triton")),
    reason="the GPU image's Triton is not installed (`make setup` puts it in .venv/other-triton and sets "
    "SEMIEARTH_OTHER_TRITON)",
)
def test_every_kernel_within_budget_with_the_gpu_images_triton():
    procs = {
        ("the GPU image's Triton", arch): popen_python(["triton_aot.py", "--arch", str(arch)], OTHER_TRITON)
        for arch in (80, 90)
    }
    import triton

    assert triton.__version__ not in check_aot(procs), "the other Triton was not the one imported"


TOY = """
import json, torch, triton, triton.language as tl, triton_aot
from semiearth.kernels._common import Launch

PLAIN_GLOBAL = 1  # what the interpreter accepts and the compiler rejects

@triton.jit
def plain_global_kernel(out_ptr):
    tl.store(out_ptr, PLAIN_GLOBAL)

@triton.jit
def int_to_kernel(out_ptr, H, W):
    tl.store(out_ptr, H.to(tl.int64) * W)  # H = 1 arrives as a Python int

@triton.jit
def good_kernel(out_ptr, H, W):
    tl.store(out_ptr, tl.cast(H, tl.int64) * W)

out = torch.empty(1, dtype=torch.int64, device="meta")
launches = [
    ("plain global", Launch(plain_global_kernel, (1,), (out,), {})),
    ("H=1 .to", Launch(int_to_kernel, (1,), (out, 1, 7), {})),
    ("H=1 tl.cast", Launch(good_kernel, (1,), (out, 1, 7), {})),
]
print(json.dumps(triton_aot.compile_all(90, launches)))
"""


def test_harness_catches_what_the_interpreter_accepts(tmp_path):
    script = tmp_path / "toy_kernels.py"  # triton.jit reads the kernels' source from a file
    script.write_text(textwrap.dedent(TOY))
    proc = popen_python([str(script)])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    failed = {f["launch"]: f["error"] for f in result["failures"]}
    assert set(failed) == {"plain global", "H=1 .to"}, failed
    assert "constexpr" in failed["plain global"]
    assert result["compiled"] == 3
