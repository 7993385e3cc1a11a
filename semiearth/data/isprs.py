"""ISPRS 2D semantic labelling benchmarks: Potsdam (5 cm, 6000x6000 RGB tiles) and Vaihingen
(9 cm, about 2000x2500 IRRG tiles), 6 classes.

Encodings (see :mod:`semiearth.data.classes`):

* official colour labels: (255,255,255) impervious -> 0, (0,0,255) building -> 1, (0,255,255) low
  vegetation -> 2, (0,255,0) tree -> 3, (255,255,0) car -> 4, (255,0,0) clutter -> 5, and in the
  eroded-boundary variants (``*_noBoundary``) (0,0,0) boundary -> ignore;
* mmsegmentation's converted index PNGs: 0 boundary -> ignore, 1..6 -> 0..5.

``data.root`` may point at a prepared folder (``semiearth-prepare potsdam|vaihingen``, recommended:
the official scenes are too large to train on directly) or at mmsegmentation's converted layout
``img_dir/{train,val}`` + ``ann_dir/{train,val}`` (labeled = train, val = test = val, with a
warning; no unlabelled split). Official scene folders are refused with the prepare command to run.

Official splits (as in mmsegmentation's converters): Potsdam train tiles below, the 14 others test;
Vaihingen train areas below, the 17 others test.
"""

from __future__ import annotations

import os
import re
import warnings

from semiearth.data.classes import POTSDAM, VAIHINGEN, convert_colour_mask, convert_index_mask
from semiearth.data.folder import Item, SegmentationDataset
from semiearth.data.io import DataError, Scene, find_mmseg_scenes, list_images

POTSDAM_TRAIN = (
    "2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 6_10 6_11 6_12 6_7 6_8 6_9 7_10 7_11 7_12 7_7 7_8 7_9"
).split()
POTSDAM_TEST = "2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13".split()
VAIHINGEN_TRAIN = [str(a) for a in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)]
VAIHINGEN_TEST = [str(a) for a in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)]

_POTSDAM_IMG = re.compile(r"^top_potsdam_(\d+_\d+)_(RGB|IRRG|RGBIR)\.tif$", re.I)
_POTSDAM_LBL = re.compile(r"^top_potsdam_(\d+_\d+)_label(_noBoundary)?\.tif$", re.I)
_VAIHINGEN = re.compile(r"^top_mosaic_09cm_area(\d+)(_noBoundary)?\.tif$", re.I)


def _walk(src: str, max_depth: int = 3):
    src = os.path.abspath(src)
    base = src.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(src):
        if dirpath.count(os.sep) - base >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        for f in sorted(filenames):
            yield dirpath, f


def _pick_label(full: str | None, eroded: str | None, variant: str, what: str) -> str | None:
    if variant == "full":
        return full
    if variant == "eroded":
        return eroded
    return eroded or full  # auto: eroded boundaries when present (the usual benchmark protocol)


def find_potsdam_scenes(src: str, label_variant: str = "auto", image_variant: str = "RGB", **_) -> list[Scene]:
    """Official Potsdam (2_Ortho_RGB / 3_Ortho_IRRG + 5_Labels_all[_noBoundary]), or mmseg's
    converted layout, or a flat img/ + ann/ pair of mmseg-encoded tiles."""
    images, full, eroded = {}, {}, {}
    for d, f in _walk(src):
        m = _POTSDAM_IMG.match(f)
        if m and m.group(2).upper() == image_variant.upper():
            images[m.group(1)] = os.path.join(d, f)
        m = _POTSDAM_LBL.match(f)
        if m:
            (eroded if m.group(2) else full)[m.group(1)] = os.path.join(d, f)
    if images:
        return _official_scenes("potsdam", images, full, eroded, label_variant, POTSDAM_TRAIN, POTSDAM_TEST)
    scenes = find_mmseg_scenes(src, POTSDAM.index_encoding, {"train": "train", "val": "test"})
    if scenes is None:
        raise FileNotFoundError(
            f"no Potsdam data in {src}: expected top_potsdam_<id>_{image_variant}.tif images with "
            "top_potsdam_<id>_label[_noBoundary].tif labels, or mmseg's img_dir/ + ann_dir/"
        )
    return scenes


def find_vaihingen_scenes(src: str, label_variant: str = "auto", **_) -> list[Scene]:
    """Official Vaihingen (top/ + gts_for_participants/ or *_ground_truth_COMPLETE/ +
    *_eroded_COMPLETE/), or mmseg's converted layout."""
    images, full, eroded = {}, {}, {}
    for d, f in _walk(src):
        m = _VAIHINGEN.match(f)
        if not m:
            continue
        path = os.path.join(d, f)
        if m.group(2):
            eroded[m.group(1)] = path
        elif os.path.basename(d) == "top":
            images[m.group(1)] = path
        else:
            full[m.group(1)] = path
    if images:
        return _official_scenes("vaihingen", images, full, eroded, label_variant, VAIHINGEN_TRAIN, VAIHINGEN_TEST)
    scenes = find_mmseg_scenes(src, VAIHINGEN.index_encoding, {"train": "train", "val": "test"})
    if scenes is None:
        raise FileNotFoundError(
            f"no Vaihingen data in {src}: expected top/top_mosaic_09cm_area<N>.tif images with colour labels "
            "(gts_for_participants/ or *_eroded_COMPLETE/*_noBoundary.tif), or mmseg's img_dir/ + ann_dir/"
        )
    return scenes


def _official_scenes(dataset, images, full, eroded, variant, train_ids, test_ids) -> list[Scene]:
    spec = POTSDAM if dataset == "potsdam" else VAIHINGEN
    colours = dict(spec.colour_encoding)
    scenes = []
    for key in sorted(images, key=lambda k: [int(x) for x in k.split("_")]):
        label = _pick_label(full.get(key), eroded.get(key), variant, dataset)
        if label is None:
            role = "unlabeled"
        elif key in train_ids:
            role = "train"
        elif key in test_ids:
            role = "test"
        else:
            role = "pool"
        enc = (
            colours if label is None or label != full.get(key) else {c: t for c, t in colours.items() if c != (0, 0, 0)}
        )
        # full labels have no boundary colour: black there would be an unknown colour, not ignore
        scenes.append(Scene(key if dataset == "potsdam" else f"area{key}", images[key], label, role, "colour", enc))
    return scenes


def detect_layout(root: str) -> str | None:
    if os.path.isdir(os.path.join(root, "img_dir")) and os.path.isdir(os.path.join(root, "ann_dir")):
        return "mmseg"
    return None


def _looks_official(root: str) -> bool:
    for _, f in _walk(root, 2):
        if _POTSDAM_IMG.match(f) or _VAIHINGEN.match(f):
            return True
    return False


def decode_mmseg(raw, path: str):
    mask, _ = convert_index_mask(raw, POTSDAM.index_encoding, source=path)
    return mask


def decode_colour(raw, path: str):
    if raw.ndim == 2:
        raise DataError(f"{path}: expected an ISPRS colour label (RGB), got a single-channel image")
    mask, _ = convert_colour_mask(raw, POTSDAM.colour_encoding, source=path)
    return mask


class _ISPRS(SegmentationDataset):
    prepare_name = ""
    detect_layout = staticmethod(detect_layout)
    decode_raw = staticmethod(decode_mmseg)

    def detect_official(self) -> str | None:
        layout = super().detect_official()
        if layout is None and _looks_official(self.root):
            raise DataError(
                f"{self.root} holds the official {type(self).__name__} scenes, which are too large to train on "
                f"directly: run `semiearth-prepare {self.prepare_name} --src {self.root} --out DIR` and set "
                "data.root=DIR"
            )
        return layout

    def official_items(self, layout: str, split: str) -> list[Item]:
        if split == "unlabeled":
            raise DataError(
                f"mmseg layout at {self.root} has no unlabelled split: run `semiearth-prepare "
                f"{self.prepare_name} --src {self.root} --out DIR` for labelled/unlabelled partitions"
            )
        sub = "train" if split == "labeled" else "val"
        if split == "test":
            warnings.warn(
                f"{type(self).__name__} mmseg layout: split 'test' reads ann_dir/val, the same images as 'val'",
                stacklevel=4,
            )
        img_dir, ann_dir = os.path.join(self.root, "img_dir", sub), os.path.join(self.root, "ann_dir", sub)
        items = []
        for p in list_images(img_dir):
            stem = os.path.splitext(os.path.basename(p))[0]
            mask = os.path.join(ann_dir, stem + ".png")
            if not os.path.isfile(mask):
                raise FileNotFoundError(f"mask not found for {p}: {mask}")
            items.append(Item(p, mask, stem))
        return items


class Potsdam(_ISPRS):
    """ISPRS Potsdam, 6 classes (RGB images by default; IRRG with ``--image-variant IRRG``)."""

    spec = POTSDAM
    prepare_name = "potsdam"
    find_scenes = staticmethod(find_potsdam_scenes)


class Vaihingen(_ISPRS):
    """ISPRS Vaihingen, 6 classes, IRRG images."""

    spec = VAIHINGEN
    prepare_name = "vaihingen"
    find_scenes = staticmethod(find_vaihingen_scenes)
