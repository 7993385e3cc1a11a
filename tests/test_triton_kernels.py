"""Triton-specific tests of semiearth.kernels: many classes, block edges, NaN path, bit identity.

The backend-generic comparisons against the references live in test_purify_stats.py and
test_purify_apply.py. These run on CUDA tensors, or on CPU tensors under the Triton interpreter
(TRITON_INTERPRET=1 set before triton is imported); shapes stay small because the interpreter
costs ~20 ms per program instance.
"""

import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs a CUDA GPU or TRITON_INTERPRET=1 (set before importing triton)", allow_module_level=True)

from semiearth.kernels._common import tile_config  # noqa: E402
from semiearth.kernels.boundary_pool import boundary_pool  # noqa: E402
from semiearth.kernels.confidence import confidence_pool  # noqa: E402
from semiearth.kernels.purify_apply import purify_apply_triton  # noqa: E402
from semiearth.kernels.purify_stats import purify_stats_triton  # noqa: E402

from semiearth.ops.purify_apply import purify_apply, purify_apply_reference, rule_weights  # noqa: E402
from semiearth.ops.purify_stats import PurifyStats, purify_stats, purify_stats_reference  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NAMES = ("conf", "label", "flags", "hist", "mass", "nboundary")


def case_id(case):
    return "x".join(map(str, case[:-1])) + "-" + str(case[-1]).replace("torch.", "")


def make_logits(b, c, h, w, dtype=torch.float32, seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g) * 2.0
    if ties:  # rounded logits give many exact ties in the argmax
        x = x.round()
    return x.to(dtype).to(DEV)


def assert_stats_equal(out, ref):
    for name, a, r in zip(NAMES, out, ref, strict=False):
        assert a.dtype == r.dtype and a.shape == r.shape, (name, a.dtype, r.dtype, a.shape, r.shape)
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=name)
        else:
            assert torch.equal(a, r), f"{name}: {(a != r).sum().item()} elements differ"


def run_stats(logits, low_thresh, radius, cell, ignore, gpu):
    """purify_stats through the two kernels with the GPU (small) or interpreter (big) tiles."""
    _, c, h, w = logits.shape
    cfg = tile_config(h, w, cell, gpu=gpu)
    ign = None if ignore is None else ignore.contiguous().view(torch.uint8)
    conf, label, flags, hist, mass, nonfinite = confidence_pool(logits, ign, low_thresh, cell, cfg)
    assert int(nonfinite) == 0
    nbnd = boundary_pool(label, ign, flags, radius, cell, cfg)
    return conf, label, flags, hist, mass, nbnd


CASES = [
    # b, c, h, w, radius, cell, dtype
    (2, 6, 37, 45, 1, 8, torch.float32),  # odd sizes, cells not dividing the image
    (1, 1, 1, 1, 0, 8, torch.float32),  # 1x1, one class, cell > image
    (1, 70, 12, 21, 2, 16, torch.float16),  # many classes: a long online softmax
    (2, 5, 40, 70, 3, 32, torch.bfloat16),
    (1, 3, 33, 65, 1, 48, torch.float32),  # cell not a power of two, block edges at 32/64
    (1, 4, 20, 9, 1, 64, torch.float32),  # cell > H and W
]


@pytest.mark.parametrize("gpu_tiles", [False, True], ids=["big-tiles", "gpu-tiles"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_stats_matches_reference(case, gpu_tiles):
    b, c, h, w, radius, cell, dtype = case
    logits = make_logits(b, c, h, w, dtype, seed=c + h)
    ignore = (torch.rand(b, h, w, generator=torch.Generator().manual_seed(1)) < 0.15).to(DEV)
    for ign in (None, ignore):
        out = run_stats(logits, 0.8, radius, cell, ign, gpu_tiles)
        ref = purify_stats_reference(logits, 0.8, radius, cell, ign)
        assert_stats_equal(out, ref)


def test_stats_non_contiguous_logits():
    base = make_logits(2, 9, 30, 44, seed=3)
    views = [
        base[:, ::2, :, 1::2],  # strided classes and columns
        base.permute(0, 1, 3, 2),  # H and W swapped: stride_w != 1
        base.to(memory_format=torch.channels_last),  # classes innermost
    ]
    for x in views:
        assert_stats_equal(purify_stats_triton(x, 0.7, 1, 8, None), purify_stats_reference(x, 0.7, 1, 8))


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # numpy, in the interpreter
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_logits_give_nan_conf(bad_value):
    logits = make_logits(1, 70, 6, 10, ties=False)
    logits[0, 66, 2, 3] = bad_value  # a late class
    logits[0, 0, 5, 9] = bad_value
    logits[0, 1, 5, 9] = bad_value  # two bad classes, one pixel
    out = purify_stats_triton(logits, 0.7, 1, 4, None)
    nan = torch.isnan(out[0])
    assert nan[0, 2, 3] and nan[0, 5, 9] and int(nan.sum()) == 2
    assert out[-1].dtype == torch.int64 and out[-1].shape == () and int(out[-1]) == 2
    with pytest.raises(ValueError, match="NaN or inf"):
        purify_stats(logits, backend="triton")


def test_public_dispatch_matches_reference():
    logits = make_logits(2, 6, 19, 23, seed=5)
    out = purify_stats(logits, 0.75, 2, 8, backend="triton")
    ref = purify_stats(logits, 0.75, 2, 8, backend="torch")
    assert_stats_equal(out[:6], ref[:6])
    assert out.cell == 8


def make_apply_case(b, c, h, w, cell, n, dtype=torch.float32, seed=0):
    logits = make_logits(b, c, h, w, dtype, seed=seed, ties=False)
    stats = PurifyStats(*purify_stats_triton(logits, 0.95, 1, cell, None)[:6], cell=cell)
    g = torch.Generator().manual_seed(seed + 1)
    hc, wc = -(-h // cell), -(-w // cell)
    seg = torch.randint(-1, max(n, 1), (b, hc, wc, c), generator=g, dtype=torch.int32)
    seg = (seg if n > 0 else torch.full_like(seg, -1)).to(DEV)
    q = torch.rand(n, c, generator=g)
    if n > 1:
        q[0] = 1.0  # a uniform row
        q[1, c // 2] = 50.0  # a confident row
    q = (q / q.sum(dim=1, keepdim=True)).to(DEV)
    return logits, stats, seg, q


def apply_triton(logits, stats, seg, weights, rule, tau):
    return purify_apply_triton(logits, stats.label, stats.conf, stats.flags, seg, weights, stats.cell, rule, tau)


APPLY_CASES = [
    (2, 6, 37, 45, 8, 9, torch.float32),
    (1, 70, 12, 21, 4, 5, torch.float16),  # many classes
    (1, 3, 1, 1, 8, 2, torch.bfloat16),
    (1, 4, 17, 33, 16, 0, torch.float32),  # N = 0
]


@pytest.mark.parametrize("rule", ["bayes", "paper"])
@pytest.mark.parametrize("case", APPLY_CASES, ids=case_id)
def test_apply_matches_reference(case, rule):
    b, c, h, w, cell, n, dtype = case
    logits, stats, seg, q = make_apply_case(b, c, h, w, cell, n, dtype)
    weights = rule_weights(q, rule, 1.5)
    before = [t.clone() for t in (logits, *stats[:6], seg, weights)]
    label, conf = apply_triton(logits, stats, seg, weights, 0 if rule == "bayes" else 1, 0.7)
    if n > 0:
        ref_label, ref_conf = purify_apply_reference(logits, stats, seg, weights, 0 if rule == "bayes" else 1, 0.7)
    else:  # the reference cannot index an empty weights table; nothing is hit
        ref_label, ref_conf = stats.label, stats.conf
    assert label.dtype == torch.int64 and conf.dtype == torch.float32
    assert torch.equal(label, ref_label)
    torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-6)
    for t, t0 in zip((logits, *stats[:6], seg, weights), before, strict=True):
        assert torch.equal(t, t0), "an input was modified"


def test_apply_zero_weights_bit_identical():
    """Uniform q (bayes weights exactly 0) gives back purify_stats' triton conf bit for bit."""
    for c, dtype in ((6, torch.float32), (70, torch.bfloat16)):
        logits, stats, seg, _ = make_apply_case(2, c, 21, 34, 8, 3, dtype, seed=c)
        seg = torch.zeros_like(seg)  # every candidate hits region 0
        q = torch.full((3, c), 1.0 / c, device=DEV)
        label, conf = purify_apply(logits, stats, seg, q, rule="bayes", backend="triton")
        assert int(stats.candidates.sum()) > 0
        assert torch.equal(conf, stats.conf)
        assert torch.equal(label, stats.label)


def test_apply_non_contiguous_logits():
    logits, stats, seg, q = make_apply_case(1, 8, 16, 40, 8, 4, seed=7)
    x = logits.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, stride_w != 1
    weights = rule_weights(q, "bayes", 1.0)
    out = apply_triton(x, stats, seg, weights, 0, 0.7)
    ref = purify_apply_reference(logits, stats, seg, weights, 0, 0.7)
    assert torch.equal(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize(
    ("c", "h", "w", "cell"), [(1, 1, 1, 1), (6, 512, 512, 32), (64, 300, 7, 48), (3, 9, 1000, 500)]
)
def test_tile_config_owns_whole_cells(c, h, w, cell, gpu):
    cfg = tile_config(h, w, cell, gpu=gpu)
    for v in (cfg.ROWS, cfg.BLOCK_W, cfg.NC):
        assert v & (v - 1) == 0
    assert cfg.BLOCK_W >= min(cell, w)
    assert cfg.cells_per_prog * min(cell, w) <= cfg.BLOCK_W or cfg.cells_per_prog == 1
    assert cfg.NC >= cfg.cells_per_prog >= 1 and cfg.cell_rows_per_prog >= 1
