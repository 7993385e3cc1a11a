"""Generic folder datasets and the base class of every real dataset in SemiEarth.

Layouts
-------
Prepared folder (what ``semiearth-prepare`` writes; also the generic ``folder`` dataset)::

    root/images/<name>.png|.tif     images (any size; GeoTIFF keeps all bands)
    root/masks/<name>.png           index PNGs in train ids 0..C-1, 255 = ignore
    root/splits/<ratio>/labeled.txt, unlabeled.txt, splits/train.txt, val.txt, test.txt
    root/semiearth.json             what was prepared, from what, with which encoding

SemiEarth authors' layout (UniMatch style), read by the same code::

    root/JPEGImages/<name>.jpg   root/SegmentationClass/<name>.png   splits: "JPEGImages/x.jpg SegmentationClass/x.png"

Split lists hold one item per line: ``image_path [mask_path]``, paths relative to ``root`` (absolute
paths are kept). A line with a bare name (no extension) is looked up in ``images/`` or
``JPEGImages/`` (and ``masks/`` or ``SegmentationClass/``). Lines starting with ``#`` are comments.

Masks are train ids (``0..C-1``, ``ignore_index``) in these layouts. Dataset subclasses (LoveDA,
Potsdam, ...) additionally read their official layouts and decode the raw encodings on the fly;
see :meth:`SegmentationDataset.official_items`.

Unlabelled items carry a mask filled with ``ignore_index``, unless ``data.options.unlabeled_masks``
is true and the list names masks (for the oracle classifier and pseudo-label diagnostics only).
Pixels that the image marks as no-data (GeoTIFF nodata/mask/alpha, RGBA alpha 0) are set to ignore.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from semiearth.data.classes import IGNORE_INDEX, DatasetSpec, check_train_ids
from semiearth.data.io import DataError, Scene, check_same_size, list_images, read_image, read_label
from semiearth.options import FolderOptions, SegmentationOptions

PREPARED_META = "semiearth.json"
SPLIT_NAMES = ("labeled", "unlabeled", "val", "test")
_IMAGE_DIRS = ("images", "JPEGImages", "img_dir", "img")
_MASK_DIRS = ("masks", "SegmentationClass", "ann_dir", "ann")
_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Item:
    """One sample: image path, mask path (or None) and a unique name."""

    image: str
    mask: str | None
    name: str


# decode(raw label array, mask path) -> uint8/int train-id mask [H,W]
Decoder = Callable[[np.ndarray, str], np.ndarray]


def identity_decoder(raw: np.ndarray, path: str) -> np.ndarray:
    if raw.ndim != 2:
        raise DataError(f"{path}: expected a single-channel index mask (train ids), got shape {tuple(raw.shape)}")
    return raw


def _resolve(root: str, token: str) -> str:
    return token if os.path.isabs(token) else os.path.join(root, token)


def _find_by_name(root: str, name: str, dirs) -> str | None:
    for d in dirs:
        for ext in _EXTS:
            p = os.path.join(root, d, name + ext)
            if os.path.isfile(p):
                return p
    return None


def read_split_list(root: str, list_path: str) -> list[Item]:
    """Parse a split list (see the module doc). Missing or empty lists are errors naming the file."""
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"split list not found: {list_path}")
    items: list[Item] = []
    names: set[str] = set()
    with open(list_path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) > 2:
                raise DataError(f"{list_path}:{lineno}: expected 'image_path [mask_path]', got {line!r}")
            image, mask = parts[0], (parts[1] if len(parts) == 2 else None)
            if not os.path.splitext(image)[1]:  # bare name
                found = _find_by_name(root, image, _IMAGE_DIRS)
                if found is None:
                    raise FileNotFoundError(
                        f"{list_path}:{lineno}: no image named {image!r} in {root}/{{{','.join(_IMAGE_DIRS)}}}"
                    )
                if mask is None:
                    mask = _find_by_name(root, image, _MASK_DIRS)
                image = found
            image = _resolve(root, image)
            mask = _resolve(root, mask) if mask else None
            name = os.path.splitext(os.path.basename(image))[0]
            if name in names:  # keep names unique within a split
                name = os.path.splitext(os.path.relpath(image, root))[0].replace(os.sep, "/")
            names.add(name)
            items.append(Item(image, mask, name))
    if not items:
        raise DataError(f"split list is empty: {list_path}")
    return items


def is_prepared(root: str) -> bool:
    return os.path.isfile(os.path.join(root, PREPARED_META))


def read_prepared_meta(root: str) -> dict:
    with open(os.path.join(root, PREPARED_META)) as f:
        return json.load(f)


class SegmentationDataset(Dataset):
    """Base of every real dataset: a list of :class:`Item` plus a label decoder.

    Subclasses set ``spec`` (classes and encodings), ``detect_layout`` and ``decode_raw`` (static
    functions of their module) and override :meth:`official_items` to read their official layout.
    Resolution of ``(cfg.root, split)``:

    1. ``cfg.splits[split]`` names a list file that exists under ``root``: read it. Masks are train
       ids, unless ``root`` is an official layout (then the dataset's raw encoding applies).
    2. ``root`` is a prepared folder (``semiearth.json``) or the generic folder: the list is required
       (missing -> FileNotFoundError naming it).
    3. ``root`` is the dataset's official layout: :meth:`official_items` gives the split.
    """

    spec: DatasetSpec | None = None
    # The official layout, declared by each dataset as functions of its module:
    # detect_layout(root) -> the layout's name or None; decode_raw(raw label, path) -> train ids.
    detect_layout: Callable[[str], str | None] | None = None
    decode_raw = staticmethod(identity_decoder)
    Options = SegmentationOptions  # data.options, checked when the config is loaded

    def __init__(self, cfg, split: str):
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
        self.cfg = cfg
        self.split = split
        self.root = os.path.expanduser(str(cfg.root or ""))
        self.num_classes = int(cfg.num_classes)
        self.ignore_index = int(cfg.ignore_index)
        self.bands = list(cfg.bands) if cfg.bands else None
        self.value_scale = float(cfg.value_scale)
        self.options = dict(getattr(cfg, "options", None) or {})
        if not self.root:
            raise FileNotFoundError(f"data.root is empty for dataset {cfg.name!r}; set data.root=DIR")
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        if self.spec is not None and self.num_classes != self.spec.num_classes:
            raise DataError(
                f"{type(self).__name__} has {self.spec.num_classes} classes {list(self.spec.class_names)} "
                f"but data.num_classes={self.num_classes}"
            )
        self.layout, self.items, self.decoder = self._resolve()
        if not self.items:
            raise DataError(f"{type(self).__name__}: split {split!r} of {self.root} ({self.layout}) has no items")
        self.load_masks = split != "unlabeled" or bool(self.options.get("unlabeled_masks", False))
        # raw decoders and prepared masks use 255 for ignore; the config may ask for another value
        self.remap_ignore = self.ignore_index != IGNORE_INDEX and (
            self.decoder is not identity_decoder or is_prepared(self.root)
        )

    # -- layout resolution -----------------------------------------------------------------------
    def _resolve(self) -> tuple[str, list[Item], Decoder]:
        splits = dict(getattr(self.cfg, "splits", None) or {})
        rel = splits.get(self.split) or ""
        list_path = _resolve(self.root, rel) if rel else ""
        official = None if is_prepared(self.root) else self.detect_official()
        if list_path and os.path.isfile(list_path):
            items = read_split_list(self.root, list_path)
            if official is not None:
                return f"{official} (list {rel})", items, self.decode_raw
            return "list", items, identity_decoder
        if official is not None:
            if list_path:
                warnings.warn(
                    f"{list_path} not found; {self.root} is the official {official} layout, "
                    f"so split {self.split!r} follows the official split",
                    stacklevel=3,
                )
            return official, self.official_items(official, self.split), self.decode_raw
        if not rel:
            raise FileNotFoundError(
                f"no split list for {self.split!r}: set data.splits.{self.split} to a list file relative to "
                f"{self.root} (e.g. splits/1_100/labeled.txt from semiearth-prepare)"
                + (f", or point data.root at the official {type(self).__name__} layout" if self.spec else "")
            )
        raise FileNotFoundError(f"split list not found: {list_path}")

    def detect_official(self) -> str | None:
        """Name of the official layout found at ``self.root`` (by ``detect_layout``), or None."""
        return self.detect_layout(self.root) if self.detect_layout else None

    def official_items(self, layout: str, split: str) -> list[Item]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- items -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        image, valid = read_image(item.image, self.bands, self.value_scale)
        h, w = image.shape[1:]
        if item.mask is not None and self.load_masks:
            raw = read_label(item.mask)
            check_same_size((h, w), raw.shape[:2], item.image, item.mask)
            mask = np.asarray(self.decoder(raw, item.mask)).astype(np.int64)
            if self.remap_ignore:
                mask[mask == IGNORE_INDEX] = self.ignore_index
            check_train_ids(mask, self.num_classes, self.ignore_index, item.mask)
        else:
            if self.split != "unlabeled" and item.mask is None:
                raise DataError(f"{item.image}: split {self.split!r} needs a mask but its list line has none")
            mask = np.full((h, w), self.ignore_index, dtype=np.int64)
        if valid is not None:
            mask[~valid] = self.ignore_index
        return {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask), "name": item.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, layout={self.layout!r}, n={len(self)})"


def folder_scenes(src: str, num_classes: int, **_) -> list[Scene]:
    """Generic source for ``semiearth-prepare folder``: images/ (or JPEGImages/) + masks/ (or
    SegmentationClass/) with train-id masks 0..C-1, 255 ignore; one pool."""
    enc = {i: i for i in range(num_classes)}
    enc[IGNORE_INDEX] = IGNORE_INDEX
    for img_name, mask_name in (("images", "masks"), ("JPEGImages", "SegmentationClass")):
        img_dir = os.path.join(src, img_name)
        if os.path.isdir(img_dir):
            scenes = []
            for p in list_images(img_dir):
                stem = os.path.splitext(os.path.basename(p))[0]
                label = next(
                    (
                        os.path.join(src, mask_name, stem + e)
                        for e in (".png", ".tif")
                        if os.path.isfile(os.path.join(src, mask_name, stem + e))
                    ),
                    None,
                )
                scenes.append(Scene(stem, p, label, "pool" if label else "unlabeled", "index", enc))
            return scenes
    raise FileNotFoundError(f"folder not found: {os.path.join(src, 'images')} (or JPEGImages/)")


class FolderDataset(SegmentationDataset):
    """Generic folder: images/ + masks/ (or JPEGImages/ + SegmentationClass/) + split lists.

    Masks hold train ids already. Without split lists, ``data.options.auto_split: true`` lets a root
    with ``images/`` and ``masks/`` (or the authors' names) serve every image as ``labeled``/``val``/
    ``test`` and every image as ``unlabeled`` (for quick experiments; real runs use lists).
    """

    Options = FolderOptions

    find_scenes = staticmethod(folder_scenes)

    def detect_official(self) -> str | None:
        if not self.options.get("auto_split"):
            return None
        for d in _IMAGE_DIRS[:2]:
            if os.path.isdir(os.path.join(self.root, d)):
                return "folder"
        return None

    def official_items(self, layout: str, split: str) -> list[Item]:
        from semiearth.data.io import list_images

        img_dir = next(os.path.join(self.root, d) for d in _IMAGE_DIRS[:2] if os.path.isdir(os.path.join(self.root, d)))
        items = []
        for p in list_images(img_dir):
            name = os.path.splitext(os.path.basename(p))[0]
            mask = _find_by_name(self.root, name, _MASK_DIRS[:2])
            if split != "unlabeled" and mask is None:
                continue
            items.append(Item(p, mask, name))
        if not items:
            raise DataError(f"no images with masks in {img_dir}")
        return items
