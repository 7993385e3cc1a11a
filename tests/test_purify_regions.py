"""select_regions: budget, ranking, segments per class, boxes, seg_table consistency, N = 0."""

import pytest
import torch

from semiearth.ops import purify_stats
from semiearth.purify import select_regions


def two_class_logits(h=64, w=96, margin=0.3, split=40):
    """Class 0 left of `split`, class 1 right; confident (margin 8) except a low-confidence band."""
    logits = torch.zeros(1, 3, h, w)
    logits[0, 0, :, :split] = 8.0
    logits[0, 1, :, split:] = 8.0
    logits[0, :, 16:48, 24:56] = 0.0
    logits[0, 0, 16:48, 24:split] = margin
    logits[0, 1, 16:48, split:56] = margin
    return logits


def stats_of(logits, cell=16, ignore=None):
    return purify_stats(logits, low_thresh=0.7, radius=1, cell=cell, ignore=ignore, backend="torch")


def test_regions_and_seg_table_agree():
    stats = stats_of(two_class_logits())
    regions, seg = select_regions(stats, max_regions=100, min_pixels=1, context=2.0)
    assert regions.dtype == torch.float32 and regions.shape[1] == 6
    assert seg.dtype == torch.int32 and seg.shape == (1, 4, 6, 3)
    n = regions.shape[0]
    assert n > 0
    # every selected segment has enough candidates, seg_table lists each region exactly once
    ids = seg[seg >= 0]
    assert sorted(ids.tolist()) == list(range(n))
    for b, cy, cx, c in (seg >= 0).nonzero().tolist():
        r = int(seg[b, cy, cx, c])
        assert int(regions[r, 0]) == b and int(regions[r, 5]) == c
        assert stats.hist[b, cy, cx, c] >= 1
        # box = cell grown by context 2 around its centre, clipped to the image
        x0, y0 = cx * 16, cy * 16
        assert regions[r, 1] == max(0, x0 - 8) and regions[r, 3] == min(96, x0 + 24)
        assert regions[r, 2] == max(0, y0 - 8) and regions[r, 4] == min(64, y0 + 24)
    # every (cell, class) with candidates got a segment when the budget allows
    assert int((stats.hist >= 1).sum()) == n


def test_boundary_cells_rank_first_and_budget_is_per_image():
    logits = torch.cat([two_class_logits(), two_class_logits()])
    stats = stats_of(logits)
    regions, seg = select_regions(stats, max_regions=3, min_pixels=1)
    assert regions.shape[0] == 6
    assert regions[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    # the two sides of the boundary cell (x 32..48) come first: they have the most boundary share
    first = regions[0]
    assert int(first[1]) == 24 and int(first[3]) == 56
    assert {int(regions[0, 5]), int(regions[1, 5])} == {0, 1}


def test_min_pixels_and_empty_selection():
    stats = stats_of(two_class_logits())
    big, _ = select_regions(stats, max_regions=100, min_pixels=10_000)
    assert big.shape == (0, 6)
    confident = torch.zeros(2, 4, 33, 17)
    confident[:, 2] = 10.0
    regions, seg = select_regions(stats_of(confident))
    assert regions.shape == (0, 6) and bool((seg == -1).all())
    regions, seg = select_regions(stats, max_regions=0)
    assert regions.shape == (0, 6)


def test_ignored_pixels_are_never_selected():
    logits = two_class_logits()
    ignore = torch.ones(1, 64, 96, dtype=torch.bool)
    regions, _ = select_regions(stats_of(logits, ignore=ignore), min_pixels=1)
    assert regions.shape[0] == 0


def test_odd_sizes_and_context_clipping():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 37, 23) * 0.5
    stats = stats_of(logits, cell=8)
    regions, seg = select_regions(stats, max_regions=7, min_pixels=2, context=3.0)
    assert regions.shape[0] == 14
    assert bool((regions[:, 1] >= 0).all() & (regions[:, 3] <= 23).all())
    assert bool((regions[:, 2] >= 0).all() & (regions[:, 4] <= 37).all())
    assert bool((regions[:, 3] > regions[:, 1]).all() & (regions[:, 4] > regions[:, 2]).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_regions": -1}, "max_regions"),
        ({"min_pixels": 0}, "min_pixels"),
        ({"context": 0}, "context"),
        ({"boundary_weight": -1}, "boundary_weight"),
    ],
)
def test_bad_arguments(kwargs, match):
    stats = stats_of(two_class_logits())
    with pytest.raises(ValueError, match=match):
        select_regions(stats, **kwargs)
    with pytest.raises(TypeError, match="PurifyStats"):
        select_regions(torch.zeros(3))
