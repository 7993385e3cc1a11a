"""purify_stats: one pass over teacher logits that finds where pseudo-labels need a second look.

Per pixel: max softmax confidence, argmax pseudo-label and flags (LOW, BOUNDARY, IGNORED); per
`cell` x `cell` block: class histogram, uncertainty mass and boundary count of the candidates
(LOW and not IGNORED pixels). The torch reference below is the specification.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from semiearth.bounds import CELL, LOW_THRESH, RADIUS
from semiearth.ops._checks import require_zero
from semiearth.ops._extension import call, resolve
from semiearth.ops._validate import (
    check_bound,
    check_finite_logits,
    check_logits,
    check_same_device,
    check_tensor,
    nonfinite_error,
)

LOW, BOUNDARY, IGNORED = 1, 2, 4
OP = "purify_stats"


class PurifyStats(NamedTuple):
    """Output of purify_stats; `cell` is kept so that later ops map pixels to cells the same way."""

    conf: torch.Tensor  # [B,H,W] float32, max softmax
    label: torch.Tensor  # [B,H,W] int64, argmax (lowest index on ties)
    flags: torch.Tensor  # [B,H,W] uint8, LOW | BOUNDARY | IGNORED
    hist: torch.Tensor  # [B,Hc,Wc,C] int32, candidates per pseudo-label class
    mass: torch.Tensor  # [B,Hc,Wc] float32, sum of (1 - conf) over candidates
    nboundary: torch.Tensor  # [B,Hc,Wc] int32, candidates that are also BOUNDARY
    cell: int

    @property
    def candidates(self) -> torch.Tensor:
        """[B,H,W] bool: LOW and not IGNORED."""
        return (self.flags & (LOW | IGNORED)) == LOW


def purify_stats(
    logits: torch.Tensor,
    low_thresh: float = 0.7,
    radius: int = 1,
    cell: int = 32,
    ignore: torch.Tensor | None = None,
    backend: str = "auto",
) -> PurifyStats:
    """Confidence, pseudo-label, flags and per-cell pooling of teacher logits [B,C,H,W].

    backend: "auto" (Triton on CUDA, C++ on CPU), "torch", "cpp" or "triton".
    Raises ValueError/TypeError for bad shapes, dtypes, thresholds, or NaN/inf logits (counted by
    every kernel; raised at once, or later inside semiearth.ops.deferred_checks()).
    """
    check_logits(OP, logits)
    check_bound(OP, "low_thresh", low_thresh, LOW_THRESH)
    check_bound(OP, "radius", radius, RADIUS, integer=True)
    check_bound(OP, "cell", cell, CELL, integer=True)
    if ignore is not None:
        check_tensor(OP, "ignore", ignore, 3, (torch.bool,), "[B,H,W] bool")
        b, _, h, w = logits.shape
        if tuple(ignore.shape) != (b, h, w):
            raise ValueError(f"{OP}: ignore must have shape {(b, h, w)} to match logits, got {tuple(ignore.shape)}")
        check_same_device(OP, "logits", logits, ignore=ignore)
    backend = resolve(OP, backend, logits.device)
    if backend == "torch":
        return purify_stats_reference(logits, low_thresh, radius, cell, ignore)
    *out, nonfinite = call(OP, backend, logits, float(low_thresh), radius, cell, ignore)
    require_zero(nonfinite, lambda n: nonfinite_error(OP, n))
    return PurifyStats(*out, cell=cell)


def purify_stats_reference(logits, low_thresh=0.7, radius=1, cell=32, ignore=None) -> PurifyStats:
    """Plain-torch specification of purify_stats (see the module docstring)."""
    check_finite_logits(OP, logits)
    x = logits.float()
    b, c, h, w = x.shape
    conf = torch.softmax(x, dim=1).amax(dim=1)
    label = x.argmax(dim=1)
    ignored = torch.zeros(b, h, w, dtype=torch.bool, device=x.device) if ignore is None else ignore
    boundary = boundary_reference(label, ignored, radius)
    low = conf < low_thresh
    flags = low.to(torch.uint8) * LOW + boundary.to(torch.uint8) * BOUNDARY + ignored.to(torch.uint8) * IGNORED
    cand = low & ~ignored
    onehot = F.one_hot(label, c) * cand[..., None]
    hist = pool_cells(onehot.permute(0, 3, 1, 2), cell).permute(0, 2, 3, 1).to(torch.int32)
    mass = pool_cells(((1.0 - conf) * cand)[:, None], cell)[:, 0]
    nboundary = pool_cells((cand & boundary).to(torch.int32)[:, None], cell)[:, 0].to(torch.int32)
    return PurifyStats(conf, label, flags, hist, mass, nboundary, cell)


def boundary_reference(label: torch.Tensor, ignored: torch.Tensor, radius: int) -> torch.Tensor:
    """[B,H,W] bool: some pixel within Chebyshev distance `radius`, inside and not ignored, has another label."""
    h, w = label.shape[1:]
    r = radius
    padded = F.pad(label.masked_fill(ignored, -1), (r, r, r, r), value=-1)
    boundary = torch.zeros_like(ignored)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            nb = padded[:, dy : dy + h, dx : dx + w]
            boundary |= (nb >= 0) & (nb != label)
    return boundary


def pool_cells(x: torch.Tensor, cell: int) -> torch.Tensor:
    """Sum [B,K,H,W] over cell x cell blocks (zero-padded at the far edges) -> [B,K,Hc,Wc]."""
    b, k, h, w = x.shape
    hc, wc = -(-h // cell), -(-w // cell)
    x = F.pad(x, (0, wc * cell - w, 0, hc * cell - h))
    return x.reshape(b, k, hc, cell, wc, cell).sum(dim=(3, 5))
