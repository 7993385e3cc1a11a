"""Bad input to the ops is a Python exception on every backend, never a crash of the process.

On one GPU machine an error thrown inside the C++ extension (built there by a g++ other than the
one torch was built with) ended in a segmentation fault. So the wrappers validate everything
before entering C++ or Triton, and the kernels report non-finite logits as a count instead of
throwing. Each backend's cases run in a child process, so that a crash fails the test instead of
killing pytest: `python tests/test_bad_input.py BACKEND` prints one JSON line per case.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def cases(device: torch.device):
    """(name, call, expected exception type, text the message must contain)."""
    from semiearth import ops

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 11, generator=g).to(device)
    nan = x.clone()
    nan[1, 2, 4, 5] = float("nan")
    inf = x.clone()
    inf[0, 0, 0, 0] = float("-inf")
    stats = ops.purify_stats(x, 0.9, 1, 4, backend="torch" if device.type == "cpu" else "auto")
    seg = torch.zeros(stats.hist.shape, dtype=torch.int32, device=device)
    q = torch.full((1, 3), 1 / 3, device=device)

    def relabel(value):
        label = stats.label.clone()
        label[0, 1, 2] = value
        return stats._replace(label=label)

    images = torch.rand(2, 3, 16, 16, device=device)
    box = torch.tensor([[0, 1, 1, 9, 9, 0]], dtype=torch.float32, device=device)
    far = box.clone()
    far[0, 0] = 5
    return [
        ("stats NaN", lambda b: ops.purify_stats(nan, backend=b), ValueError, "NaN or inf at 1 pixel"),
        ("stats -inf", lambda b: ops.purify_stats(inf, backend=b), ValueError, "NaN or inf at 1 pixel"),
        ("stats rank", lambda b: ops.purify_stats(x[0], backend=b), ValueError, "[B,C,H,W]"),
        ("stats dtype", lambda b: ops.purify_stats(x.double(), backend=b), TypeError, "dtype"),
        ("stats cell", lambda b: ops.purify_stats(x, cell=0, backend=b), ValueError, "cell"),
        ("stats ignore", lambda b: ops.purify_stats(x, ignore=stats.flags, backend=b), TypeError, "ignore"),
        ("apply label huge", lambda b: ops.purify_apply(x, relabel(10**8), seg, q, backend=b), ValueError, "label"),
        ("apply label 7", lambda b: ops.purify_apply(x, relabel(7), seg, q, backend=b), ValueError, "label"),
        ("apply label -3", lambda b: ops.purify_apply(x, relabel(-3), seg, q, backend=b), ValueError, "label"),
        ("apply region", lambda b: ops.purify_apply(x, stats, seg + 4, q, backend=b), ValueError, "region"),
        ("crop batch", lambda b: ops.crop_batch(images, far, 8, backend=b), ValueError, "batch indices"),
        ("crop channels", lambda b: ops.crop_batch(images[:, :2], box, 8, backend=b), ValueError, "[B,3,H,W]"),
    ]


def backend_cases(backend: str):
    """(backend argument, device, the op names it serves) of a backend that can run here, else None."""
    from semiearth import ops

    if backend == "cpp":
        return ("cpp", torch.device("cpu"), None) if ops.has_cpp() else None
    if backend == "triton":
        usable = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
        return ("triton", torch.device("cuda" if torch.cuda.is_available() else "cpu"), "purify") if usable else None
    if backend == "cuda":
        return ("auto", torch.device("cuda"), None) if torch.cuda.is_available() and ops.has_cuda_kernels() else None
    return ("torch", torch.device("cpu"), None)


def run_cases(backend: str) -> None:
    """Child process: run every case on `backend`, print one JSON line per case."""
    spec = backend_cases(backend)
    if spec is None:
        print(json.dumps({"skip": f"backend {backend} cannot run here"}))
        return
    name, device, only = spec
    for case, call, _, _ in cases(device):
        b = "auto" if (only and not case.startswith(("stats", "apply"))) else name
        try:
            call(b)
            result = {"case": case, "raised": None}
        except Exception as e:  # noqa: BLE001  (the parent checks the type)
            result = {"case": case, "raised": type(e).__name__, "message": str(e)}
        print(json.dumps(result), flush=True)


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton", "cuda"])
def test_bad_input_raises_and_never_crashes(backend):
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "test_bad_input.py"), backend],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"the child process died (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines and "skip" in lines[0]:
        pytest.skip(lines[0]["skip"])
    expected = {name: (error.__name__, text) for name, _, error, text in cases(torch.device("cpu"))}
    assert {r["case"] for r in lines} == set(expected), proc.stderr[-3000:]
    for r in lines:
        error, text = expected[r["case"]]
        assert r["raised"] == error and text in r["message"], (r["case"], r)
        assert "\n" not in r["message"].strip(), f"{r['case']}: the message is not one line: {r['message']!r}"


if __name__ == "__main__":
    run_cases(sys.argv[1])
