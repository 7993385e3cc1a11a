"""purify_apply: every fast backend (C++, Triton, CUDA) against the torch reference."""

import pytest
import torch
from helpers import TRITON_INTERPRET, backend_device, logits_from_labels, real_tiles, safe_thresh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semiearth import ops

BACKENDS = ["cpp", "triton", "cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def small(backend: str) -> bool:
    return backend == "triton" and TRITON_INTERPRET


def segments(stats: ops.PurifyStats, g: torch.Generator, keep: float = 0.6):
    """seg_table [B,Hc,Wc,C]: a random share of the (cell, class) segments that have candidates."""
    present = stats.hist > 0
    chosen = present & (torch.rand(present.shape, generator=g) < keep)
    seg = torch.full(present.shape, -1, dtype=torch.int32)
    idx = chosen.nonzero(as_tuple=True)
    seg[idx] = torch.arange(len(idx[0]), dtype=torch.int32)
    return seg, len(idx[0])


def check_backend(backend, logits, stats, seg, q, rule, trust=1.0, tau=0.7):
    name, device = backend_device(backend, "purify_apply")
    want = ops.purify_apply(logits, stats, seg, q, rule, trust, tau, backend="torch")
    moved = ops.PurifyStats(*[t.to(device) for t in stats[:6]], cell=stats.cell)
    label, conf = ops.purify_apply(
        logits.to(device), moved, seg.to(device), q.to(device), rule, trust, tau, backend=name
    )
    assert label.dtype == torch.int64 and conf.dtype == torch.float32
    assert torch.equal(label.cpu(), want[0]), f"labels differ at {int((label.cpu() != want[0]).sum())} pixels"
    torch.testing.assert_close(conf.cpu(), want[1], rtol=1e-5, atol=1e-6)
    return label.cpu(), conf.cpu()


def make_case(b, c, h, w, cell, dtype, seed, integer=False, thr=0.8):
    g = torch.Generator().manual_seed(seed)
    if integer:
        x = torch.randint(-2, 3, (b, c, h, w), generator=g).float()
    else:
        x = torch.randn(b, c, h, w, generator=g) * 2
    x = x.to(dtype)
    ignore = torch.rand(b, h, w, generator=g) < 0.15
    stats = ops.purify_stats(x, safe_thresh(x, thr), 1, cell, ignore, backend="torch")
    seg, n = segments(stats, g)
    q = torch.softmax(torch.randn(n, c, generator=g) * 3, dim=1)
    return x, stats, seg, q, g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["bayes", "paper"])
def test_random_shapes(backend, rule):
    backend_device(backend, "purify_apply")
    max_hw, examples = (40, 4) if small(backend) else (300, 30)

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        b=st.integers(1, 3),
        c=st.integers(1, 16 if small(backend) else 64),
        h=st.sampled_from([1, 3]) | st.integers(1, max_hw),
        w=st.sampled_from([1, 2]) | st.integers(1, max_hw),
        cell=st.integers(8, 64),
        dtype=st.sampled_from(DTYPES),
        integer=st.booleans(),
        trust=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        tau=st.sampled_from([0.5, 0.7, 1.0]),
        seed=st.integers(0, 2**31 - 1),
    )
    def run(b, c, h, w, cell, dtype, integer, trust, tau, seed):
        x, stats, seg, q, _ = make_case(b, c, h, w, cell, dtype, seed, integer)
        check_backend(backend, x, stats, seg, q, rule, trust, tau)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_q_changes_nothing(backend, dtype):
    """bayes with a uniform q: labels and confidences of the fast backend's own purify_stats, bit for bit."""
    name, device = backend_device(backend, "purify_apply")
    h, w = (24, 40) if small(backend) else (130, 170)
    x, _, _, _, g = make_case(2, 7, h, w, 16, dtype, 11)
    stats = ops.purify_stats(x.to(device), 0.9, 1, 16, backend=name if name != "auto" else "auto")
    seg = torch.where(stats.hist.cpu() > 0, 0, -1).to(torch.int32)
    q = torch.full((1, 7), 1 / 7)
    label, conf = ops.purify_apply(x.to(device), stats, seg.to(device), q.to(device), "bayes", backend=name)
    assert int(stats.candidates.sum()) > 0
    assert torch.equal(label, stats.label)
    assert torch.equal(conf, stats.conf)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_and_non_contiguous(backend):
    h, w = (20, 30) if small(backend) else (64, 96)
    x, stats, seg, q, g = make_case(2, 5, h, w, 8, torch.float32, 5, integer=True, thr=0.6)
    xt = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last view
    assert not xt.is_contiguous()
    q = torch.zeros_like(q)
    q[:, 1] = q[:, 3] = 0.5  # a tie inside q: bayes keeps the lowest index, paper takes class 1
    segt = seg.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    for rule in ("bayes", "paper"):
        check_backend(backend, xt, stats, segt, q, rule)


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_tiles(backend):
    for i, (_tag, _, ann, c) in enumerate(real_tiles()):
        ann = ann[:48, :64] if small(backend) else ann[:400, :512]
        g = torch.Generator().manual_seed(i)
        x = logits_from_labels(ann[None], c, blur=9, noise=0.7, seed=i)
        stats = ops.purify_stats_reference(x, safe_thresh(x, 0.8), 1, 32, (ann == 0)[None])
        seg, n = segments(stats, g, keep=0.8)
        q = torch.softmax(torch.randn(n, c, generator=g) * 4, dim=1)
        for rule in ("bayes", "paper"):
            check_backend(backend, x, stats, seg, q, rule)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_regions(backend):
    x, stats, seg, q, g = make_case(1, 4, 17, 19, 8, torch.float32, 2)
    seg = torch.full_like(seg, -1)
    label, conf = check_backend(backend, x, stats, seg, torch.zeros(0, 4), "bayes")
    assert torch.equal(label, stats.label) and torch.equal(conf, stats.conf)


def test_inputs_are_not_modified():
    backend_device("cpp")
    x, stats, seg, q, g = make_case(2, 6, 40, 50, 16, torch.float32, 9)
    before = [t.clone() for t in (x, *stats[:6], seg, q)]
    ops.purify_apply(x, stats, seg, q, "bayes", backend="cpp")
    for a, b in zip(before, (x, *stats[:6], seg, q), strict=True):
        assert torch.equal(a, b)


def with_label(stats: ops.PurifyStats, value: int) -> ops.PurifyStats:
    label = stats.label.clone()
    label[0, 3, 5] = value
    return stats._replace(label=label)


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
def test_bad_input_names_the_argument(backend):
    name, device = ("torch", torch.device("cpu")) if backend == "torch" else backend_device(backend, "purify_apply")
    x, stats, seg, q, g = make_case(1, 4, 16, 16, 8, torch.float32, 1)
    x, seg, q = x.to(device), seg.to(device), q.to(device)
    stats = ops.PurifyStats(*[t.to(device) for t in stats[:6]], cell=stats.cell)
    cases = [
        (dict(logits=x[0]), ValueError, "logits"),
        (dict(logits=x.double()), TypeError, "logits"),
        (dict(logits=x[:, :0]), ValueError, "logits"),
        (dict(stats=tuple(stats)), TypeError, "stats"),
        (dict(seg_table=seg.long()), TypeError, "seg_table"),
        (dict(seg_table=seg[..., :2]), ValueError, "seg_table"),
        (dict(q=q[:, :3]), ValueError, "q"),
        (dict(q=q.unsqueeze(0)), ValueError, "q"),
        (dict(q=-q), ValueError, "q"),
        (dict(q=q[:0]), ValueError, "seg_table refers to region"),
        (dict(rule="median"), ValueError, "rule"),
        (dict(trust=-1.0), ValueError, "trust"),
        (dict(tau=0.0), ValueError, "tau"),
        (dict(tau=1.5), ValueError, "tau"),
        # labels outside [0, C) would index seg_table out of bounds in every fast path
        (dict(stats=with_label(stats, 100_000_000)), ValueError, r"stats.label .*\[0, 4\)"),
        (dict(stats=with_label(stats, 4)), ValueError, r"stats.label"),
        (dict(stats=with_label(stats, 7)), ValueError, r"stats.label"),
        (dict(stats=with_label(stats, -3)), ValueError, r"stats.label"),
        (dict(stats=stats._replace(conf=stats.conf.double())), TypeError, r"stats.conf"),
        (dict(stats=stats._replace(flags=stats.flags[:, :8])), ValueError, r"stats are for shape"),
    ]
    for kwargs, error, match in cases:
        args = dict(logits=x, stats=stats, seg_table=seg, q=q, rule="bayes", trust=1.0, tau=0.7)
        args.update(kwargs)
        with pytest.raises(error, match=match):
            ops.purify_apply(**args, backend=name)


def test_reference_checks_labels_too():
    x, stats, seg, q, g = make_case(1, 4, 16, 16, 8, torch.float32, 1)
    weights = ops.rule_weights(q, "bayes", 1.0)
    with pytest.raises(ValueError, match=r"stats.label"):
        ops.purify_apply_reference(x, with_label(stats, 7), seg, weights, 0)


def test_meta_and_compile():
    backend_device("cpp")
    x, stats, seg, q, g = make_case(1, 4, 16, 16, 8, torch.float32, 1)
    w = ops.rule_weights(q, "bayes", 1.0)
    meta = [t.to("meta") for t in (x, stats.label, stats.conf, stats.flags, seg, w)]
    label, conf = torch.ops.semiearth.purify_apply(*meta, 8, 0, 0.7)
    assert label.shape == conf.shape == (1, 16, 16) and label.dtype == torch.int64

    def f(x, label, conf, flags, seg, w):
        return torch.ops.semiearth.purify_apply(x * 1.0, label, conf, flags, seg, w, 8, 0, 0.7)

    args = (x, stats.label, stats.conf, stats.flags, seg, w)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(*args), f(*args), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rule", ["bayes", "paper"])
@pytest.mark.parametrize("seed", range(4))
def test_purified_probabilities_agree_with_labels_and_confidences(rule, seed):
    """purify_apply_probs (soft targets): a distribution per pixel whose argmax and max are
    purify_apply's label and confidence, and the teacher's softmax where nothing was purified."""
    x, stats, seg, q, _ = make_case(2, 5, 37, 45, 8, torch.float32, seed)
    label, conf = ops.purify_apply(x, stats, seg, q, rule, 0.8, backend="torch")
    prob = ops.purify_apply_probs(x, stats, seg, q, rule, 0.8)
    assert prob.shape == x.shape and prob.dtype == torch.float32
    torch.testing.assert_close(prob.sum(1), torch.ones_like(conf))
    torch.testing.assert_close(prob.amax(1), conf, rtol=1e-5, atol=1e-6)
    top = prob.gather(1, label[:, None])[:, 0]  # label's probability is the max (ties allowed)
    torch.testing.assert_close(top, conf, rtol=1e-5, atol=1e-6)
    from semiearth.ops.purify_apply import pixel_regions

    untouched = ~pixel_regions(stats, seg)[1]
    torch.testing.assert_close(prob.permute(0, 2, 3, 1)[untouched], x.softmax(1).permute(0, 2, 3, 1)[untouched])
