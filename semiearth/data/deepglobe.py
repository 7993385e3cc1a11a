"""DeepGlobe Land Cover (Demir et al., CVPR workshops 2018): 803 labelled 2448x2448 RGB satellite
scenes (DigitalGlobe, 0.5 m), 7 label colours of which 6 are trained classes.

Encoding (official ``<id>_mask.png`` colour masks, RGB): (0,255,255) urban land -> 0, (255,255,0)
agriculture land -> 1, (255,0,255) rangeland -> 2, (0,255,0) forest land -> 3, (0,0,255) water -> 4,
(255,255,255) barren land -> 5, (0,0,0) unknown (clouds and others) -> ignore. The masks are not
always exactly 0/255 (the official README: "binarize each R/G/B channel at threshold 128"), so
every channel is binarised first: value >= 128 -> 255, else 0 (:func:`binarise`). After that a
colour outside the 7 (only pure red (255,0,0) is left) is an unknown colour: an error naming the
file, or ignore with ``semiearth-prepare --on-unknown ignore``.

Official layout (the challenge's "starting kit", also the Kaggle copy)::

    train/<id>_sat.jpg + train/<id>_mask.png      803 labelled scenes
    valid/<id>_sat.jpg                            171 scenes, masks not public
    test/<id>_sat.jpg                             172 scenes, masks not public

``semiearth-prepare deepglobe`` tiles train/ and holds val and test out of it by whole scenes
(``--val-frac`` / ``--test-frac``); valid/ and test/ images become unlabelled data (listed in
``unlabeled_only.txt`` and appended to every ratio's ``unlabeled.txt``), unless a ``<id>_mask.png``
sits beside them, then they are the val / test split. ``data.root`` may also point at the
official layout itself: labeled = train/ (whole 2448 px scenes), unlabeled = valid/ + test/;
val and test need a prepared folder.
"""

from __future__ import annotations

import os
import re

import numpy as np

from semiearth.data.classes import DEEPGLOBE, convert_colour_mask
from semiearth.data.folder import Item, SegmentationDataset
from semiearth.data.io import DataError, Scene

PARTS = {"train": "train", "valid": "val", "test": "test"}  # official folder -> role when masks exist
THRESHOLD = 128
# Scene.label_kind of DeepGlobe scenes: a colour mask binarised at THRESHOLD before the colour lookup
# (semiearth.data.prepare.convert_label reads it)
BINARISED = "colour_binarised"
_SAT = re.compile(r"^(.+)_sat\.(jpg|jpeg|png|tif|tiff)$", re.I)


def binarise(rgb: np.ndarray) -> np.ndarray:
    """Colour mask [H,W,>=3] -> uint8 [H,W,3] with every channel 0 or 255 (>= 128 -> 255), as the
    official README asks (compression leaves values a few steps off 0/255)."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise DataError(f"expected a DeepGlobe colour mask [H,W,3], got shape {tuple(rgb.shape)}")
    return np.where(rgb[..., :3] >= THRESHOLD, 255, 0).astype(np.uint8)


def decode_deepglobe(raw: np.ndarray, path: str, on_unknown: str = "error") -> tuple[np.ndarray, dict]:
    """Raw colour mask -> (train ids [H,W] uint8, unknown colours {RGB: pixels}) after :func:`binarise`."""
    if raw.ndim != 3:
        raise DataError(f"{path}: expected a DeepGlobe colour mask (RGB), got a single-channel image")
    return convert_colour_mask(binarise(raw), DEEPGLOBE.colour_encoding, source=path, on_unknown=on_unknown)


def _decode(raw: np.ndarray, path: str) -> np.ndarray:
    return decode_deepglobe(raw, path)[0]


def official_pairs(root: str, part: str) -> list[tuple[str, str, str | None]]:
    """[(id, image path, mask path or None)] of ``root/part`` (train, valid or test), sorted by id."""
    folder = os.path.join(root, part)
    if not os.path.isdir(folder):
        return []
    out = []
    for f in sorted(os.listdir(folder)):
        m = _SAT.match(f)
        if m:
            mask = os.path.join(folder, f"{m.group(1)}_mask.png")
            out.append((m.group(1), os.path.join(folder, f), mask if os.path.isfile(mask) else None))
    return out


def detect_layout(root: str) -> str | None:
    return "official" if official_pairs(root, "train") else None


def find_scenes(src: str, **_) -> list[Scene]:
    """Source scenes for ``semiearth-prepare deepglobe``: train/ -> the pool (val and test held out
    of it by scene), valid/ and test/ -> unlabelled, or val / test where their masks are present.
    A train image without its mask is an error (the official train/ has all 803)."""
    if detect_layout(src) is None:
        raise FileNotFoundError(
            f"no DeepGlobe Land Cover layout in {src}: expected train/<id>_sat.jpg with train/<id>_mask.png "
            "(and optionally valid/, test/)"
        )
    scenes = []
    for part, role in PARTS.items():
        for key, image, mask in official_pairs(src, part):
            if part == "train" and mask is None:
                raise FileNotFoundError(f"mask not found for {image}: {os.path.join(src, part, key + '_mask.png')}")
            scene_role = ("pool" if part == "train" else role) if mask else "unlabeled"
            scenes.append(Scene(f"{part}_{key}", image, mask, scene_role, BINARISED, DEEPGLOBE.colour_encoding))
    return scenes


class DeepGlobe(SegmentationDataset):
    """DeepGlobe Land Cover, 6 classes + unknown (ignore); see the module doc."""

    spec = DEEPGLOBE
    find_scenes = staticmethod(find_scenes)
    detect_layout = staticmethod(detect_layout)
    decode_raw = staticmethod(_decode)

    def official_items(self, layout: str, split: str) -> list[Item]:
        if split in ("val", "test"):
            part = "valid" if split == "val" else "test"
            pairs = [(k, i, m) for k, i, m in official_pairs(self.root, part) if m]
            if not pairs:
                raise DataError(
                    f"DeepGlobe official layout at {self.root}: no {split} masks (valid/ and test/ masks are not "
                    f"public): run `semiearth-prepare deepglobe --src {self.root} --out DIR` for val/test held out "
                    "of train/, and set data.root=DIR"
                )
            return [Item(i, m, f"{part}_{k}") for k, i, m in pairs]
        if split == "labeled":
            return [Item(i, m, f"train_{k}") for k, i, m in official_pairs(self.root, "train") if m]
        items = [Item(i, None, f"{p}_{k}") for p in ("valid", "test") for k, i, _ in official_pairs(self.root, p)]
        if not items:
            raise DataError(f"DeepGlobe official layout at {self.root}: no valid/ or test/ images for 'unlabeled'")
        return items
