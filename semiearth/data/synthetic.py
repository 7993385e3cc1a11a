"""SyntheticAerial: procedurally generated aerial scenes with the 6 ISPRS Potsdam classes.

Every image is generated on the fly from (seed, split, index), so the dataset needs no files and
is identical on every machine. A scene is a textured lawn (low vegetation) crossed by roads and
plazas (impervious surfaces), with buildings (roofs with a ridge, casting shadows along the
image's sun direction), trees (clusters of textured crowns, also shadowed), cars on the roads and
clutter patches (soil, water, containers). Each image has its own illumination and colour cast, so
a handful of labelled images cannot cover the variation that the unlabelled ones show - the setting
semi-supervised learning is for. Shadows darken whatever is below them but do not change its label,
as in Potsdam.

Options (`data.options`, semiearth.options.SyntheticOptions): size (px, default 128), labeled (8),
unlabeled (400), val (48), test (48), seed (0), cache (true: keep generated scenes in memory as uint8,
4 B per pixel: 64 KiB per 128 px scene). Classes: semiearth.data.classes.SYNTHETIC (the Potsdam table).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from semiearth.config import DataConfig, describe
from semiearth.data.classes import SYNTHETIC
from semiearth.options import SyntheticOptions

IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
_SPLIT_SALT = {"labeled": 1, "unlabeled": 2, "val": 3, "test": 4}


def _noise(g: torch.Generator, size: int, cells: int) -> torch.Tensor:
    """Smooth value noise in [0, 1] of shape [size, size] from a cells x cells random grid."""
    grid = torch.rand(1, 1, cells, cells, generator=g)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)


def _rand(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _paint(image: torch.Tensor, where: torch.Tensor, colour, texture: torch.Tensor, amount: float) -> None:
    """image[:, where] = colour * (1 + amount * (texture - 0.5))."""
    c = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
    tex = 1.0 + amount * (texture - 0.5)
    image[:] = torch.where(where, c * tex, image)


def generate_scene(seed: int, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene: image float32 [3,S,S] RGB in [0,1] and mask int64 [S,S] with ids 0..5."""
    g = torch.Generator().manual_seed(seed)
    s = size
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    fine = torch.rand(s, s, generator=g)
    mid = _noise(g, s, max(4, s // 8))
    coarse = _noise(g, s, 4)

    # lawn: low vegetation, yellow-green with mowing stripes and patches
    mask = torch.full((s, s), LOW_VEG, dtype=torch.int64)
    grass = [_rand(g, 0.35, 0.5), _rand(g, 0.5, 0.62), _rand(g, 0.2, 0.3)]
    image = torch.empty(3, s, s)
    stripes = 0.5 + 0.5 * torch.sin(yy * _rand(g, 0.2, 0.5) + xx * _rand(g, -0.2, 0.2))
    _paint(image, torch.ones(s, s, dtype=torch.bool), grass, 0.5 * fine + 0.3 * coarse + 0.2 * stripes, 0.45)

    # roads and plazas: impervious surfaces, grey asphalt
    asphalt = [_rand(g, 0.42, 0.55)] * 3
    for _ in range(_randint(g, 1, 3)):
        w = _randint(g, s // 14, s // 8)
        c = _randint(g, w, s - w)
        road = ((yy - c).abs() < w / 2) if float(torch.rand((), generator=g)) < 0.5 else ((xx - c).abs() < w / 2)
        _paint(image, road, asphalt, 0.7 * fine + 0.3 * mid, 0.25)
        mask[road] = IMPERVIOUS
    if float(torch.rand((), generator=g)) < 0.5:
        y0, x0 = _randint(g, 0, s - s // 4), _randint(g, 0, s - s // 4)
        h, w = _randint(g, s // 8, s // 4), _randint(g, s // 8, s // 4)
        plaza = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        _paint(image, plaza, [_rand(g, 0.6, 0.75)] * 3, fine, 0.2)
        mask[plaza] = IMPERVIOUS
    road_mask = mask == IMPERVIOUS

    # clutter: irregular patches of soil, water or containers
    for _ in range(_randint(g, 0, 2)):
        cy, cx, r = _rand(g, 0, s), _rand(g, 0, s), _rand(g, s / 16, s / 8)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() < r * (0.6 + 0.8 * mid)
        colour = [[0.45, 0.33, 0.22], [0.15, 0.25, 0.35], [0.6, 0.2, 0.15], [0.7, 0.6, 0.35]][_randint(g, 0, 3)]
        _paint(image, blob, colour, fine, 0.5)
        mask[blob] = CLUTTER

    # buildings: roofs with a ridge; sun direction shared by the whole image
    sun = _rand(g, 0, 2 * math.pi)
    shadow_len = _rand(g, s / 40, s / 16)
    sdy, sdx = round(math.sin(sun) * shadow_len), round(math.cos(sun) * shadow_len)
    shadow = torch.zeros(s, s, dtype=torch.bool)
    for _ in range(_randint(g, 2, 6)):
        for _try in range(10):
            h, w = _randint(g, s // 10, s // 3), _randint(g, s // 10, s // 3)
            y0, x0 = _randint(g, 0, s - h), _randint(g, 0, s - w)
            box = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
            if not (box & road_mask).any():
                break
        else:
            continue
        roof = [[0.62, 0.3, 0.22], [0.55, 0.55, 0.58], [0.3, 0.3, 0.33], [0.75, 0.7, 0.62], [0.5, 0.35, 0.3]][
            _randint(g, 0, 4)
        ]
        ridge_y = h >= w
        side = (xx < x0 + w / 2) if ridge_y else (yy < y0 + h / 2)
        tex = 0.6 * fine + 0.4 * (0.5 + 0.5 * torch.sin((yy if ridge_y else xx) * 1.7))
        _paint(image, box, roof, tex, 0.25)
        image[:, box & side] *= 0.82  # the half of the roof facing away from the sun
        mask[box] = BUILDING
        shadow |= torch.roll(box, shifts=(sdy, sdx), dims=(0, 1))
    building = mask == BUILDING

    # trees: clusters of textured crowns
    crowns = torch.zeros(s, s, dtype=torch.bool)
    for _ in range(_randint(g, 2, 5)):
        cy, cx = _rand(g, 0, s), _rand(g, 0, s)
        for _k in range(_randint(g, 1, 6)):
            ty, tx = cy + _rand(g, -s / 10, s / 10), cx + _rand(g, -s / 10, s / 10)
            r = _rand(g, s / 28, s / 14)
            crowns |= ((yy - ty) ** 2 + (xx - tx) ** 2) < r * r
    crowns &= ~building
    leaf = [_rand(g, 0.12, 0.22), _rand(g, 0.3, 0.42), _rand(g, 0.1, 0.18)]
    crown_tex = (0.5 + 0.5 * torch.sin(xx * 1.3 + 2 * fine) * torch.sin(yy * 1.1)) * 0.6 + 0.4 * fine
    _paint(image, crowns, leaf, crown_tex, 0.8)
    mask[crowns] = TREE
    shadow |= torch.roll(crowns, shifts=(sdy // 2, sdx // 2), dims=(0, 1))

    # cars: small bright rectangles on the roads
    for _ in range(_randint(g, 4, 16)):
        ch, cw = (s // 32 + 1, s // 14 + 1) if float(torch.rand((), generator=g)) < 0.5 else (s // 14 + 1, s // 32 + 1)
        y0, x0 = _randint(g, 0, s - ch), _randint(g, 0, s - cw)
        car = (yy >= y0) & (yy < y0 + ch) & (xx >= x0) & (xx < x0 + cw)
        if not road_mask[car].all():
            continue
        colour = [[0.85, 0.1, 0.1], [0.1, 0.2, 0.7], [0.9, 0.9, 0.9], [0.08, 0.08, 0.08], [0.8, 0.7, 0.1]][
            _randint(g, 0, 4)
        ]
        _paint(image, car, colour, fine, 0.15)
        mask[car] = CAR

    # shadows darken what they fall on (not the objects that cast them), labels unchanged
    shadow &= ~building
    image[:, shadow] *= 0.45

    # per-image illumination, colour cast, haze and sensor noise
    gain = _rand(g, 0.7, 1.25)
    cast = torch.tensor([_rand(g, 0.85, 1.15), _rand(g, 0.9, 1.1), _rand(g, 0.85, 1.15)]).view(3, 1, 1)
    haze = _rand(g, 0.0, 0.15)
    image = image * gain * cast * (0.85 + 0.3 * coarse) + haze
    image = image + 0.03 * torch.randn(3, s, s, generator=g)
    return image.clamp(0, 1).float(), mask


class SyntheticAerial(torch.utils.data.Dataset):
    """The built-in synthetic dataset (see module docstring); needs no files."""

    spec = SYNTHETIC
    Options = SyntheticOptions  # data.options (checked when the config is loaded)
    NEEDS_ROOT = False

    def __init__(self, cfg: DataConfig, split: str):
        try:  # checked when the config is loaded; again here for a DataConfig built in code
            opts = SyntheticOptions(**cfg.options).model_dump()
        except ValidationError as err:
            raise ValueError(
                f"{describe(err, SyntheticOptions, 'data.options')} (options of dataset synthetic)"
            ) from None
        if split not in _SPLIT_SALT:
            raise ValueError(f"unknown split '{split}'")
        if cfg.num_classes != 6:
            raise ValueError(f"the synthetic dataset has 6 classes, data.num_classes is {cfg.num_classes}")
        self.split = split
        self.size = int(opts["size"])
        self.length = int(opts[split])
        self.seed = int(opts["seed"])
        self.ignore_index = cfg.ignore_index
        self.labelled = split != "unlabeled"
        self.cache = {} if opts["cache"] else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.cache is not None and index in self.cache:
            image8, mask8 = self.cache[index]
            image, mask = image8.float() / 255.0, mask8.long()
        else:
            seed = (self.seed * 1_000_003 + _SPLIT_SALT[self.split] * 100_003 + index) % (2**62)
            image, mask = generate_scene(seed, self.size)
            image = (image * 255.0).round() / 255.0  # the same values cached or not
            if self.cache is not None:
                self.cache[index] = ((image * 255.0).round().to(torch.uint8), mask.to(torch.uint8))
        item = {"image": image, "mask": mask, "name": f"synthetic_{self.split}_{index:05d}"}
        if not self.labelled:  # the trainer never sees these labels; `gt` serves purify.method: oracle only
            item["mask"], item["gt"] = torch.full_like(mask, self.ignore_index), mask
        return item
