"""purify_stats: every fast backend (C++, Triton, CUDA) against the torch reference."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import (
    TRITON_INTERPRET,
    assert_stats_equal,
    backend_device,
    logits_from_labels,
    real_tiles,
    safe_thresh,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semiearth import ops

BACKENDS = ["cpp", "triton", "cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def check_backend(backend, logits, low_thresh=0.7, radius=1, cell=32, ignore=None):
    """Run `backend` and the reference on the same inputs and compare."""
    name, device = backend_device(backend, "purify_stats")
    low_thresh = safe_thresh(logits, low_thresh)
    ref = ops.purify_stats_reference(logits, low_thresh, radius, cell, ignore)
    x = logits.to(device)
    ign = None if ignore is None else ignore.to(device)
    out = ops.purify_stats(x, low_thresh, radius, cell, ign, backend=name)
    assert_stats_equal(out, ref)
    return out


def small(backend: str) -> bool:
    """Under the Triton interpreter every program instance costs ~20 ms: keep shapes small."""
    return backend == "triton" and TRITON_INTERPRET


@st.composite
def stats_case(draw, max_hw: int, max_c: int = 64):
    b = draw(st.integers(1, 3))
    c = draw(st.integers(1, max_c))
    h = draw(st.sampled_from([1, 2, 3]) | st.integers(1, max_hw))
    w = draw(st.sampled_from([1, 2, 5]) | st.integers(1, max_hw))
    radius = draw(st.integers(0, 3))
    cell = draw(st.integers(8, 64))
    thr = draw(st.sampled_from([0.3, 0.5, 0.7, 0.9, 1.0]))
    dtype = draw(st.sampled_from(DTYPES))
    integer = draw(st.booleans())  # integer-valued logits: many ties in the argmax
    use_ignore = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if integer:
        x = torch.randint(-2, 3, (b, c, h, w), generator=g).float()
    else:
        x = torch.randn(b, c, h, w, generator=g) * draw(st.sampled_from([0.3, 1.0, 4.0]))
    x = x.to(dtype)
    ignore = torch.rand(b, h, w, generator=g) < 0.2 if use_ignore else None
    return x, thr, radius, cell, ignore


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_shapes(backend):
    backend_device(backend, "purify_stats")  # skip early
    max_hw, examples = (40, 4) if small(backend) else (300, 40)

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(stats_case(max_hw, 16 if small(backend) else 64))
    def run(case):
        x, thr, radius, cell, ignore = case
        check_backend(backend, x, thr, radius, cell, ignore)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_edge_shapes(backend, dtype):
    shapes = [(1, 1, 1, 1), (1, 3, 1, 1), (2, 1, 5, 7), (1, 64, 3, 2), (3, 5, 9, 1)]
    if not small(backend):
        shapes += [(2, 6, 67, 131), (1, 19, 300, 33)]
    for i, shape in enumerate(shapes):
        g = torch.Generator().manual_seed(i)
        x = (torch.randn(shape, generator=g) * 2).to(dtype)
        for radius, cell in [(0, 8), (1, 32), (3, 13)]:
            check_backend(backend, x, 0.7, radius, cell)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_classes_and_tall_cells(backend):
    """Past 254 classes the C++ kernel keeps a band's labels in 32 bits instead of 8, and cells
    taller than 255 rows flush its 8-bit per-column counters mid-cell."""
    if small(backend):
        pytest.skip("shapes too large for the Triton interpreter")
    g = torch.Generator().manual_seed(11)
    ignore = torch.rand(2, 31, 45, generator=g) < 0.2
    check_backend(backend, torch.randn(2, 300, 31, 45, generator=g) * 3, 0.5, 1, 8, ignore)
    check_backend(backend, torch.randn(1, 5, 601, 37, generator=g), 0.7, 2, 300)


PORTABLE_RUN = """
import sys, torch
from semiearth import ops
cases = torch.load(sys.argv[1], weights_only=True)
outs = [tuple(ops.purify_stats(x, 0.7, r, cell, ign, backend="cpp")[:6]) for x, ign, r, cell in cases]
torch.save(outs, sys.argv[2])
"""


def test_portable_cpu_bodies_give_the_same_bits(tmp_path):
    """The portable C++ bodies (arm64, x86 without AVX2), forced with SEMIEARTH_DISABLE_AVX2=1 in a
    subprocess, give bit for bit what the bodies of this process give."""
    backend_device("cpp")
    g = torch.Generator().manual_seed(12)
    cases = [
        (torch.randn(2, 7, 45, 61, generator=g) * 3, torch.rand(2, 45, 61, generator=g) < 0.2, 1, 16),
        (torch.randn(1, 40, 33, 17, generator=g), None, 2, 8),  # per-candidate class counting
        (torch.randn(1, 3, 20, 37, generator=g), None, 0, 13),
    ]
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, SEMIEARTH_DISABLE_AVX2="1")
    cmd = [sys.executable, "-c", PORTABLE_RUN, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")]
    subprocess.run(cmd, env=env, check=True, timeout=300)
    portable = torch.load(tmp_path / "out.pt", weights_only=True)
    for (x, ign, r, cell), theirs in zip(cases, portable, strict=True):
        ours = ops.purify_stats(x, 0.7, r, cell, ign, backend="cpp")
        for name, a, b in zip(ops.PurifyStats._fields[:6], ours[:6], theirs, strict=True):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmax_ties_take_lowest_class(backend):
    # integer-valued logits: several classes share the maximum at most pixels
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (2, 5, 23, 37), generator=g).float()
    out = check_backend(backend, x, 0.5, 1, 8)
    first_max = (x == x.amax(dim=1, keepdim=True)).float().argmax(dim=1)
    assert torch.equal(out.label.cpu(), first_max)
    # all classes equal: label 0, conf 1/C
    flat = torch.zeros(1, 4, 3, 3)
    out = check_backend(backend, flat, 0.5, 1, 8)
    assert int(out.label.max()) == 0
    torch.testing.assert_close(out.conf.cpu(), torch.full((1, 3, 3), 0.25))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    g = torch.Generator().manual_seed(4)
    h, w = (20, 30) if small(backend) else (70, 90)
    base = torch.randn(2, h, 2 * w, 7, generator=g) * 2  # channels-last, then every other column
    x = base.permute(0, 3, 1, 2)[..., ::2]
    assert not x.is_contiguous()
    ignore = (torch.rand(2, 2 * w, h, generator=g) < 0.3).transpose(1, 2)[..., ::2]
    assert not ignore.is_contiguous()
    check_backend(backend, x, 0.8, 2, 16, ignore)
    check_backend(backend, x.half(), 0.8, 1, 16, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignore_mask(backend):
    g = torch.Generator().manual_seed(5)
    h, w = (24, 40) if small(backend) else (96, 160)
    labels = torch.zeros(1, h, w, dtype=torch.long)
    labels[:, :, w // 2 :] = 1
    x = logits_from_labels(labels, 3, blur=5, noise=0.8, seed=5)
    ignore = torch.zeros(1, h, w, dtype=torch.bool)
    ignore[:, :, w // 2 - 2 : w // 2 + 2] = True  # an ignored strip along the class border
    ignore |= torch.rand(1, h, w, generator=g) < 0.1
    out = check_backend(backend, x, 0.9, 2, 8, ignore)
    flags = out.flags.cpu()
    assert torch.equal((flags & ops.IGNORED) != 0, ignore)
    cand = out.candidates.cpu()
    assert not bool((cand & ignore).any())
    assert int(out.hist.sum()) == int(cand.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_tiles(backend):
    """Logits from the real ground truth of the LoveDA / Potsdam tiles (blurred one-hot + noise)."""
    for i, (tag, _, ann, c) in enumerate(real_tiles()):
        if small(backend):
            ann = ann[:48, :64]
        elif tag != "potsdam" and i > 0:
            ann = ann[:512, :512]  # one full 1024 tile is enough for the reference's time
        ignore = (ann == 0)[None]
        x = logits_from_labels(ann[None], c, blur=9, noise=0.7, seed=i)
        check_backend(backend, x, 0.7, 1, 32, ignore)
        if not small(backend):
            check_backend(backend, x.bfloat16(), 0.9, 2, 64, None)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_logits_raise(backend, bad):
    if backend == "cpp":
        backend_device("cpp")
    for dtype in DTYPES:
        for c in (0, 2):  # the first class seeds the running max, later ones update it
            x = torch.randn(2, 3, 9, 11).to(dtype)
            x[1, c, 4, 5] = bad
            with pytest.raises(ValueError, match="logits contain NaN or inf at 1 pixel"):
                ops.purify_stats(x, backend=backend)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(logits=torch.randn(3, 8, 8)), ValueError, "logits"),
        (dict(logits=torch.randn(1, 2, 3, 8, 8)), ValueError, "logits"),
        (dict(logits=torch.zeros(1, 3, 8, 8, dtype=torch.int64)), TypeError, "logits"),
        (dict(logits=torch.randn(1, 3, 8, 8).double()), TypeError, "logits"),
        (dict(logits=torch.randn(1, 0, 8, 8)), ValueError, "logits.*C = 0"),
        (dict(logits=torch.randn(1, 3, 0, 8)), ValueError, "logits"),
        (dict(logits=[[1.0]]), TypeError, "logits"),
        (dict(low_thresh=0.0), ValueError, "low_thresh"),
        (dict(low_thresh=-0.5), ValueError, "low_thresh"),
        (dict(low_thresh=1.5), ValueError, "low_thresh"),
        (dict(low_thresh=float("nan")), ValueError, "low_thresh"),
        (dict(radius=-1), ValueError, "radius"),
        (dict(cell=0), ValueError, "cell"),
        (dict(ignore=torch.zeros(1, 8, 8, dtype=torch.uint8)), TypeError, "ignore"),
        (dict(ignore=torch.zeros(1, 8, 9, dtype=torch.bool)), ValueError, "ignore"),
    ],
)
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_bad_input_names_the_argument(kwargs, error, match, backend):
    if backend == "cpp":
        backend_device("cpp")
    args = dict(logits=torch.randn(1, 3, 8, 8), low_thresh=0.7, radius=1, cell=32, ignore=None)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ops.purify_stats(**args, backend=backend)


def test_thresh_one_flags_every_uncertain_pixel():
    backend_device("cpp")
    x = torch.randn(1, 4, 16, 16)
    out = ops.purify_stats(x, 1.0, 1, 8, backend="cpp")
    assert bool(((out.flags & ops.LOW) != 0).all())


def test_meta_and_compile():
    """The fake impls give shapes on the meta device, and the ops trace under torch.compile."""
    backend_device("cpp")
    x = torch.randn(2, 5, 33, 17)
    conf, label, flags, hist, mass, nb, nonfinite = torch.ops.semiearth.purify_stats(x.to("meta"), 0.7, 1, 8, None)
    assert conf.shape == (2, 33, 17) and label.dtype == torch.int64 and flags.dtype == torch.uint8
    assert hist.shape == (2, 5, 3, 5) and hist.dtype == torch.int32 and mass.shape == nb.shape == (2, 5, 3)

    def f(t):
        return torch.ops.semiearth.purify_stats(t * 2.0, 0.7, 1, 8, None)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(x), f(x), strict=True):
        assert torch.equal(a, b)
    wrapped = torch.compile(
        lambda t: ops.purify_stats(t, 0.7, 1, 8, backend="cpp").label, backend="aot_eager", fullgraph=False
    )
    assert torch.equal(wrapped(x), ops.purify_stats_reference(x, 0.7, 1, 8).label)
