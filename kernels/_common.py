"""What the purify kernels share: flag bits, tile configuration, the online softmax step, offsets.

Rules that the GPU compiler enforces and the interpreter does not (both broke real GPUs once):
- a module-level constant that a kernel reads must be a `tl.constexpr(...)` object;
- an integer argument equal to 1 arrives as a Python int (Triton specialises it into a constant),
  so index arithmetic is widened with `tl.cast(x, tl.int64)`, never with `x.to(...)` on an argument.
tests/test_triton_aot.py compiles every kernel for sm_80 and sm_90 with the launches built here, and
tests/test_kernel_budgets.py holds the GPU launches to their register and spill budgets.

Register budget: every kernel walks the classes one at a time over 1-D [P] pixel vectors (an
online softmax), so a thread holds a few values per pixel whatever C is, and offsets inside one
image are int32 (the image's base pointer is int64) unless the image is too big for them (WIDE).
"""

from typing import Any, NamedTuple

import triton
import triton.language as tl

# The flag bits of purify_stats (semiearth.ops.purify_stats.LOW / BOUNDARY / IGNORED).
LOW_BIT = tl.constexpr(1)
BOUNDARY_BIT = tl.constexpr(2)
IGNORED_BIT = tl.constexpr(4)
INT32_LIMIT = 2**31 - 1


@triton.jit
def softmax_step(z, c, m, s, lab):
    """Fold class `c`'s logits z [P] float32 into each pixel's running max m, sum of exp(z - m) s and
    argmax lab [P] int32. Classes come in ascending order, so the strict `>` keeps the lowest class
    on ties (torch.argmax's rule)."""
    lab = tl.where(z > m, c, lab)
    m_new = tl.maximum(m, z)
    s = s * tl.exp(m - m_new) + tl.exp(z - m_new)
    return m_new, s, lab


@triton.jit
def pixel_offsets(y, x, s_h, s_w, WIDE: tl.constexpr):
    """Offsets y * s_h + x * s_w of pixels inside one image: int32, or int64 when WIDE."""
    if WIDE:
        return tl.cast(y, tl.int64) * s_h + tl.cast(x, tl.int64) * s_w
    return y * s_h + x * s_w


@triton.jit
def class_offset(c, s_c, WIDE: tl.constexpr):
    """Offset c * s_c of class plane `c` inside one image: int32, or int64 when WIDE."""
    if WIDE:
        return tl.cast(c, tl.int64) * s_c
    return c * s_c


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


def needs_wide(*extents: int) -> bool:
    """True when an offset inside one image (the largest of `extents`, in elements) overflows int32."""
    return max(extents) > INT32_LIMIT


def logits_extent(logits) -> int:
    """The largest element offset inside one image of logits [B,C,H,W] (any strides)."""
    _, c, h, w = logits.shape
    s_c, s_h, s_w = logits.stride()[1:]
    return (c - 1) * s_c + (h - 1) * s_h + (w - 1) * s_w


class TileConfig(NamedTuple):
    """Block sizes shared by the purify kernels (see `tile_config`)."""

    ROWS: int
    BLOCK_W: int
    NC: int
    cells_per_prog: int
    cell_rows_per_prog: int
    num_warps: int


def tile_config(h: int, w: int, cell: int, gpu: bool) -> TileConfig:
    """Block sizes for images [*,*,H,W] pooled in `cell` x `cell` cells.

    BLOCK_W covers at least one cell (or the whole width when cell > W) so that programs own
    whole cells. On a GPU a tile holds ~256 pixels (8 rows of a 32-pixel cell: two pixels per
    thread of 4 warps, which keeps every kernel within 64 registers and many programs in flight, one
    per cell); under the interpreter (CPU tensors) tiles and programs are as big as possible,
    because each program instance costs ~20 ms there. `gpu` picks the first (tests use it on the
    CPU too, to cover the small-block paths).
    """
    npow2 = triton.next_power_of_2
    min_w = npow2(min(cell, w))
    target_w = 32 if gpu else 256
    block_w = max(min_w, min(target_w, npow2(w)))
    cells_per_prog = max(1, block_w // cell) if cell < w else 1
    target_px = 256 if gpu else 16384
    rows = max(1, min(target_px // block_w, npow2(min(cell, h))))
    hc = -(-h // cell)
    cell_rows_per_prog = 1 if gpu else max(1, min(hc, (16 * rows) // min(cell, h)))
    num_warps = max(1, min(4, rows * block_w // 64))  # 4 warps, fewer for tiles under 256 pixels
    return TileConfig(rows, block_w, npow2(cells_per_prog), cells_per_prog, cell_rows_per_prog, num_warps)


def pixel_tile(gpu: bool) -> tuple[int, int, int]:
    """(ROWS, BLOCK_W, num_warps) of a kernel that maps each program to a plain pixel tile."""
    return (8, 32, 4) if gpu else (64, 256, 4)


class Launch(NamedTuple):
    """One kernel launch, built apart from running it so that tests can compile exactly it ahead
    of time for GPU targets (tests/test_triton_aot.py). `meta`: constexpr keywords, num_warps."""

    kernel: Any
    grid: tuple
    args: tuple
    meta: dict

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.meta)
