"""torchgeo datasets as a SemiEarth data source (`data.name: torchgeo`).

A torchgeo user keeps the dataset they already have on disk (in torchgeo's layout, under
`data.root`) and names its torchgeo class; nothing is re-downloaded or re-prepared::

    data:
      name: torchgeo
      root: /data/loveda            # what you pass to torchgeo.datasets.LoveDA(root=...)
      num_classes: 7
      class_names: [background, building, road, water, barren, forest, agriculture]
      options: {dataset: LoveDA, ratio: 1/8, seed: 0}

`data.options`:

- `dataset`: the torchgeo class, one of :data:`SOURCES` (LoveDA, Potsdam2D, Vaihingen2D,
  DeepGlobeLandCover);
- `ratio` (default 1/8): the share of the train pool that is labelled;
- `seed` (default 0), `val_frac`, `test_frac` (default 0.1 each; used only where the torchgeo dataset
  has no val / test split with masks): the split, drawn by semiearth-prepare's seeded scene-level
  code (:func:`semiearth.data.prepare.assign_splits`, :func:`semiearth.data.prepare.labeled_split`),
  where a scene is one torchgeo sample (a LoveDA tile, a whole ISPRS top tile, a DeepGlobe image);
- `splits`: which torchgeo split plays which role (`train`, `val`, `test`, `unlabeled`), e.g.
  `{train: train, val: test}`; defaults in :data:`SOURCES`;
- `kwargs`: more keyword arguments of the torchgeo class (e.g. `{scene: [urban]}` for LoveDA);
- `unlabeled_masks`: unlabelled items keep their masks (oracle classifier, diagnostics).

Items follow docs/data_contract.md: the torchgeo image (float 0..255) -> its bands `data.bands`
(1-based; default the first three, so Potsdam's RGBIR gives RGB) / `data.value_scale`; the torchgeo
mask -> train ids by the source's `encoding` (e.g. LoveDA's 0 = no-data -> ignore); `name` = the file
stem of the sample. The class table is the torchgeo class's `classes` less its no-data entry, and
must equal `data.class_names` (an error says what to set), so a class never gets another's name.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import ValidationError
from torch.utils.data import Dataset

from semiearth.config import describe
from semiearth.data.classes import IGNORE_INDEX, check_train_ids
from semiearth.data.io import DataError, Scene
from semiearth.options import TorchgeoOptions

ROLES = ("train", "val", "test", "unlabeled")


def read_options(options: dict) -> TorchgeoOptions:
    """data.options as TorchgeoOptions, or a one-line DataError naming the key."""
    try:
        return TorchgeoOptions.model_validate(dict(options or {}))
    except ValidationError as err:  # checked when the config is loaded; again here for a DataConfig built in code
        raise DataError(describe(err, TorchgeoOptions, "data.options")) from None


@dataclass(frozen=True)
class Source:
    """How one torchgeo class maps onto SemiEarth's splits and train ids.

    `roles`: torchgeo split -> role (`train` = the labelled/unlabelled pool, `val`, `test`,
    `unlabeled` = images without public masks). `encoding`: torchgeo mask value -> train id or
    IGNORE_INDEX (values not listed are errors). `ignored`: entries of the class's `classes` that
    are no class (their value maps to ignore)."""

    roles: dict[str, str]
    encoding: dict[int, int]
    ignored: tuple[str, ...] = ()
    notes: str = ""
    kwargs: dict = field(default_factory=dict)


def _identity(n: int) -> dict[int, int]:
    return {v: v for v in range(n)}


# torchgeo 0.8: how each dataset encodes its masks (read from torchgeo's own loaders).
SOURCES: dict[str, Source] = {
    # masks_png raw: 0 = no-data, 1..7 = background..agriculture; torchgeo lists 'no-data' last in
    # `classes` but returns the raw values. Test has no public masks: its images are unlabelled data,
    # and test is the official Val (as semiearth-prepare loveda does), val held out from Train.
    "LoveDA": Source(
        {"train": "train", "val": "test", "test": "unlabeled"},
        {0: IGNORE_INDEX, **{raw: raw - 1 for raw in range(1, 8)}},
        ignored=("no-data",),
        notes="raw 0 (no-data) -> ignore, raw k -> k-1",
    ),
    # colour labels decoded by torchgeo's rgb_to_mask (colours outside the palette become 0, clutter)
    "Potsdam2D": Source({"train": "train", "test": "test"}, _identity(6), notes="RGBIR images: bands 1-3 = RGB"),
    "Vaihingen2D": Source({"train": "train", "test": "test"}, _identity(6), notes="IRRG images (as released)"),
    # 6 = Unknown: the DeepGlobe benchmark scores 6 classes and ignores Unknown
    "DeepGlobeLandCover": Source(
        {"train": "train", "test": "test"}, {**_identity(6), 6: IGNORE_INDEX}, ignored=("Unknown",)
    ),
}


def supported() -> str:
    return ", ".join(SOURCES)


def torchgeo_class(name: str) -> type:
    """The torchgeo dataset class `name` (one of SOURCES), or a one-line DataError saying what to do."""
    if name not in SOURCES:
        raise DataError(
            f"data.options.dataset: unknown torchgeo dataset {name!r}; supported: {supported()} "
            "(set data.options.dataset to one of them)"
        )
    try:
        import torchgeo.datasets as tgd
    except ImportError as err:
        raise DataError(f"data.name torchgeo needs the torchgeo extra ({err}): pip install -e .[torchgeo]") from None
    return getattr(tgd, name)


def class_names(name: str) -> list[str]:
    """The train-id class names of torchgeo dataset `name`: its `classes` less the no-data entries."""
    cls = torchgeo_class(name)
    return [c for c in cls.classes if c not in SOURCES[name].ignored]


def _one_line(err: Exception) -> str:
    return re.sub(r"\s+", " ", str(err)).strip()


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def sample_paths(ds) -> list[str]:
    """The image file of each sample of a torchgeo dataset (for names), from the attributes its
    loaders keep (`files[i]['image']` or `image_fns`)."""
    if hasattr(ds, "image_fns"):
        return list(ds.image_fns)
    return [f["image"] for f in ds.files]


class TorchgeoDataset(Dataset):
    """`data.name: torchgeo`: one of our splits (labeled, unlabeled, val, test) of a torchgeo dataset."""

    Options = TorchgeoOptions  # data.options, checked when the config is loaded
    spec = None  # the class table depends on data.options.dataset (see class_names)

    def __init__(self, cfg, split: str):
        self.options = read_options(cfg.options)
        self.name = self.options.dataset
        self.source = SOURCES.get(self.name)
        self.cls = torchgeo_class(self.name)
        self.split = split
        self.root = os.path.expanduser(str(cfg.root or ""))
        self.ignore_index = int(cfg.ignore_index)
        self.value_scale = float(cfg.value_scale)
        self.bands = [b - 1 for b in cfg.bands] if cfg.bands else [0, 1, 2]
        self.names = class_names(self.name)
        self._check_classes(cfg)
        self.lut = self._lut()
        self.parts = self._open_splits()
        self.items = self._select(split)
        if not self.items:
            raise DataError(f"torchgeo {self.name} at {self.root}: split {split!r} has no samples")
        self.load_masks = split != "unlabeled" or self.options.unlabeled_masks

    # -- set-up ----------------------------------------------------------------------------------
    def _check_classes(self, cfg) -> None:
        if int(cfg.num_classes) != len(self.names) or list(cfg.class_names) != self.names:
            quoted = ", ".join(f"'{n}'" for n in self.names)
            raise DataError(
                f"torchgeo {self.name} has {len(self.names)} classes {self.names} but the config has "
                f"num_classes={cfg.num_classes} {list(cfg.class_names)}; set data.num_classes={len(self.names)} "
                f'and data.class_names="[{quoted}]"'
            )

    def _lut(self) -> np.ndarray:
        """int64 [256]: torchgeo mask value -> train id, IGNORE_INDEX (no-data), or -1 (not a value of
        this dataset, an error when met)."""
        lut = np.full(256, -1, dtype=np.int64)
        for raw, tid in self.source.encoding.items():
            lut[raw] = self.ignore_index if tid == IGNORE_INDEX else tid
        return lut

    def roles(self) -> dict[str, str]:
        roles = dict(self.options.splits or self.source.roles)
        known = list(self.cls.splits)
        unknown = [s for s in roles if s not in known]
        if unknown:
            raise DataError(
                f"data.options.splits: torchgeo {self.name} has no split {unknown[0]!r}; its splits: {', '.join(known)}"
            )
        if "train" not in roles.values():
            raise DataError(f"data.options.splits {roles}: no torchgeo split has the role 'train' (the labelled pool)")
        return roles

    def _open_splits(self) -> dict[str, tuple[object, str]]:
        """torchgeo split -> (the torchgeo dataset, its role). A split that is not on disk is left out,
        unless it is the train pool; any other failure is an error; a labelled role needs masks."""
        kwargs = {**self.source.kwargs, **self.options.kwargs}
        parts = {}
        for tg_split, role in self.roles().items():
            try:
                ds = self.cls(root=self.root, split=tg_split, **kwargs)
            except Exception as err:  # torchgeo: DatasetNotFoundError, AssertionError on bad kwargs, ...
                missing = type(err).__name__ == "DatasetNotFoundError"
                if role != "train" and missing:
                    continue  # e.g. LoveDA without its Test images: no extra unlabelled data
                fix = (
                    f"set data.root to the folder you pass to torchgeo's {self.name}(root=...)"
                    if missing
                    else f"check data.options.kwargs {kwargs} against torchgeo's {self.name} arguments"
                )
                call = f"{self.name}(root={self.root!r}, split={tg_split!r})"
                raise DataError(f"torchgeo {call} failed: {_one_line(err) or type(err).__name__}; {fix}") from None
            if len(ds) == 0:
                continue
            if role != "unlabeled" and "mask" not in ds[0]:
                raise DataError(
                    f"torchgeo {self.name} split {tg_split!r} has no masks, so it cannot be labelled data "
                    f"(role {role!r}); set data.options.splits.{tg_split}=unlabeled"
                )
            parts[tg_split] = (ds, role)
        if not any(role == "train" for _, role in parts.values()):
            raise DataError(f"torchgeo {self.name} at {self.root}: the train split has no samples")
        return parts

    def scenes(self) -> tuple[list[Scene], dict[str, tuple[str, int]]]:
        """One Scene per torchgeo sample (its role from the split), and name -> (torchgeo split, index)."""
        scenes, where = [], {}
        for tg_split, (ds, role) in self.parts.items():
            for i, path in enumerate(sample_paths(ds)):
                name = _stem(path)
                if name in where:
                    name = f"{tg_split}_{name}"
                where[name] = (tg_split, i)
                label = None if role == "unlabeled" else "mask"
                scenes.append(Scene(name, path, label, role))
        return scenes, where

    def _select(self, split: str) -> list[tuple[str, str, int]]:
        """(name, torchgeo split, index) of our `split`, drawn by semiearth-prepare's split code."""
        from semiearth.data.prepare import assign_splits, labeled_split, parse_ratio

        scenes, where = self.scenes()
        opts = self.options
        try:
            ratio = parse_ratio(opts.ratio)
        except ValueError as err:
            raise DataError(f"data.options.ratio: {err}") from None
        split_of, level = assign_splits(scenes, opts.val_frac, opts.test_frac, opts.seed)
        if level == "tile":
            raise DataError(
                f"torchgeo {self.name} at {self.root}: {sum(s.role == 'train' for s in scenes)} train samples are "
                "too few to hold out val/test scene-wise; set data.options.val_frac=0 and test_frac=0 "
                "(val then uses the test split), or add samples"
            )
        names = {r: sorted(n for n, s in split_of.items() if s == r) for r in ROLES}
        names = self._fill_missing(names)
        if split in ("labeled", "unlabeled"):
            labeled, rest = labeled_split(names["train"], ratio, opts.seed)
            chosen = labeled if split == "labeled" else rest + names["unlabeled"]
        else:
            chosen = names[split]
        return [(n, *where[n]) for n in chosen]

    def _fill_missing(self, names: dict) -> dict:
        for a, b in (("val", "test"), ("test", "val")):
            if not names[a] and names[b]:
                if self.split in (a, b):
                    warnings.warn(
                        f"torchgeo {self.name}: no {a} samples, so {a} uses the {b} samples (selection and "
                        f"test then share images); set data.options.{a}_frac > 0 to hold {a} out of train",
                        stacklevel=4,
                    )
                names[a] = names[b]
        return names

    # -- items -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        name, tg_split, j = self.items[i]
        sample = self.parts[tg_split][0][j]
        image = sample["image"].float()
        if max(self.bands) >= image.shape[0]:
            raise DataError(
                f"data.bands {[b + 1 for b in self.bands]}: torchgeo {self.name} has {image.shape[0]} bands"
            )
        image = (image[self.bands] / self.value_scale).clamp_(0, 1).contiguous()
        h, w = image.shape[1:]
        if self.load_masks and "mask" in sample:
            raw = sample["mask"].numpy().astype(np.int64)
            mask = self.lut[np.clip(raw, 0, 255)]
            mask[(raw < 0) | (raw > 255)] = -1
            check_train_ids(mask, len(self.names), self.ignore_index, f"torchgeo {self.name} {tg_split} {name}")
        else:
            mask = np.full((h, w), self.ignore_index, dtype=np.int64)
        return {"image": image, "mask": torch.from_numpy(mask), "name": name}

    def __repr__(self) -> str:
        return f"TorchgeoDataset({self.name}, root={self.root!r}, split={self.split!r}, n={len(self)})"
