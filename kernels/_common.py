"""What the purify kernels share: flag bits, tile configuration, argmax tie-break, tile prologue.

Rules that the GPU compiler enforces and the interpreter does not (both broke real GPUs once):
- a module-level constant that a kernel reads must be a `tl.constexpr(...)` object;
- an integer argument equal to 1 arrives as a Python int (Triton specialises it into a constant),
  so index arithmetic is widened from an int64 tensor (the batch index) or with `tl.cast(x, tl.int64)`,
  never with `x.to(...)` on an argument.
tests/test_triton_aot.py compiles every kernel for sm_80 and sm_90 with the launches built here.
"""

from typing import Any, NamedTuple

import triton
import triton.language as tl

# The flag bits of purify_stats (semiearth.ops.purify_stats.LOW / BOUNDARY / IGNORED).
LOW_BIT = tl.constexpr(1)
BOUNDARY_BIT = tl.constexpr(2)
IGNORED_BIT = tl.constexpr(4)
INT32_MAX = tl.constexpr(2147483647)


@triton.jit
def chunk_argmax(z, cs, cmask):
    """Max over the class axis of z [BLOCK_C, P] and the lowest class index `cs` that reaches it.

    cs [BLOCK_C] int32 class indices of the rows, cmask [BLOCK_C] which of them exist.
    """
    cm = tl.max(z, axis=0)
    idx = tl.where((z == cm[None, :]) & cmask[:, None], cs[:, None], INT32_MAX)
    return cm, tl.min(idx, axis=0)


@triton.jit
def chunk_softmax_update(z, cs, cmask, m, s, lab):
    """Fold one class chunk into the running (max, sum of exp, argmax) of each pixel.

    z: [BLOCK_C, P] float32 logits of classes `cs` ([BLOCK_C] int32), -inf where ~cmask.
    m, s: [P] float32 running max and sum(exp(z - m)); lab: [P] int32 running argmax.
    Ties go to the lowest class: inside a chunk by the min index, across chunks by a strict `>`.
    """
    cm, cl = chunk_argmax(z, cs, cmask)
    lab = tl.where(cm > m, cl, lab)
    m_new = tl.maximum(m, cm)
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[None, :]), axis=0)
    return m_new, s, lab


@triton.jit
def cell_tile(pid_x, cell, cells_per_prog, W, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """Prologue of a program that owns `cells_per_prog` whole cells along x (see TileConfig).

    Returns, per slot of the [ROWS * BLOCK_W] tile: its row in the tile `rr`, its image column `x`,
    whether that column belongs to this program and the image (`col_ok`), its local cell column
    `lc`, and the index `cx0` of the program's first cell column.
    """
    p = tl.arange(0, ROWS * BLOCK_W)
    rr = p // BLOCK_W
    cc = p % BLOCK_W
    span = cells_per_prog * cell
    x = pid_x * span + cc
    col_ok = (cc < span) & (x < W)
    lc = cc // cell
    cx0 = pid_x * cells_per_prog
    return rr, x, col_ok, lc, cx0


class TileConfig(NamedTuple):
    """Block sizes shared by the purify kernels (see `tile_config`)."""

    BLOCK_C: int
    ROWS: int
    BLOCK_W: int
    NC: int
    cells_per_prog: int
    cell_rows_per_prog: int
    num_warps: int


def tile_config(c: int, h: int, w: int, cell: int, gpu: bool) -> TileConfig:
    """Block sizes for logits [*,C,H,W] pooled in `cell` x `cell` cells.

    BLOCK_W covers at least one cell (or the whole width when cell > W) so that programs own
    whole cells. On a GPU a tile holds ~1024 pixels x <= 16 classes (4-8 warps, many programs in
    flight); under the interpreter (CPU tensors) tiles and programs are as big as possible,
    because each program instance costs ~20 ms there. `gpu` picks the first (tests use it on
    the CPU too, to cover the small-block paths).
    """
    npow2 = triton.next_power_of_2
    min_w = npow2(min(cell, w))
    target_w = 32 if gpu else 256
    block_w = max(min_w, min(target_w, npow2(w)))
    cells_per_prog = max(1, block_w // cell) if cell < w else 1
    target_px = 1024 if gpu else 16384
    rows = max(1, min(target_px // block_w, npow2(min(cell, h))))
    block_c = min(npow2(c), 16 if gpu else 64)
    hc = -(-h // cell)
    cell_rows_per_prog = 1 if gpu else max(1, min(hc, (16 * rows) // min(cell, h)))
    num_warps = 4 if rows * block_w * block_c <= 8192 else 8
    return TileConfig(block_c, rows, block_w, npow2(cells_per_prog), cells_per_prog, cell_rows_per_prog, num_warps)


class Launch(NamedTuple):
    """One kernel launch, built apart from running it so that tests can compile exactly it ahead
    of time for GPU targets (tests/test_triton_aot.py). `meta`: constexpr keywords, num_warps."""

    kernel: Any
    grid: tuple
    args: tuple
    meta: dict

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)
