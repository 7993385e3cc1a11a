"""LoveDA (Wang et al., NeurIPS 2021 datasets track): 1024x1024 Google Earth tiles, 0.3 m, 7 classes.

Encoding (raw ``masks_png``): 0 no-data -> ignore, 1 background -> 0, 2 building -> 1, 3 road -> 2,
4 water -> 3, 5 barren -> 4, 6 forest -> 5, 7 agriculture -> 6. No-data is never a class.

``data.root`` may point at:

* a prepared folder (``semiearth-prepare loveda``; masks already in train ids; recommended, with
  labelled/unlabelled partitions, a val split held out from Train and test = the official Val);
* the official layout ``{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/*.png``: labeled =
  Train, val = Val, unlabeled = Test images (LoveDA's Test labels are not public, so the Test images
  are genuinely unlabelled), test = Val (with a warning: selection and test then share images);
* mmsegmentation's converted layout ``img_dir/{train,val,test}`` + ``ann_dir/{train,val}`` (same raw
  encoding): labeled = train, val = val, unlabeled = test, test = val (warned).

Split lists in ``data.splits`` that exist under an official root are read with the raw encoding.

Test submissions (``semiearth-predict --format loveda-submission``, docs/submission.md): the Test
labels are withheld and scored by the benchmark's evaluation server, which takes one single-channel
uint8 PNG per Test image (``<id>.png``, ids 4191..5986, 1024x1024) holding *raw label - 1*
(0 background .. 6 agriculture; the official code reads masks as ``imread(mask) - 1`` and saves the
argmax), zipped flat. :func:`submission_lut` derives that from the spec's encoding.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from semiearth.data.classes import IGNORE_INDEX, LOVEDA, convert_index_mask
from semiearth.data.folder import Item, SegmentationDataset
from semiearth.data.io import DataError, list_images

SCENES = ("Urban", "Rural")
# The evaluation server's test set: Test/{Urban,Rural}/images_png/<id>.png, the last 1796 of the 5987 ids.
TEST_IDS = range(4191, 5987)
TEST_SIZE = (1024, 1024)  # (height, width) of every image and of every submitted prediction
SUBMISSION_RAW_OFFSET = -1  # the server's class id = raw masks_png value - 1
SUBMISSION_URL = "https://codalab.lisn.upsaclay.fr/competitions/421 (LoveDA Semantic Segmentation)"
_OFFICIAL_DIRS = {"labeled": "Train", "val": "Val", "test": "Val", "unlabeled": "Test"}
_MMSEG_DIRS = {"labeled": "train", "val": "val", "test": "val", "unlabeled": "test"}


def official_scene_dirs(root: str, part: str) -> list[tuple[str, str | None, str]]:
    """[(images_png dir, masks_png dir or None, scene)] for part in Train/Val/Test."""
    out = []
    for scene in SCENES:
        img = os.path.join(root, part, scene, "images_png")
        if os.path.isdir(img):
            mask = os.path.join(root, part, scene, "masks_png")
            out.append((img, mask if os.path.isdir(mask) else None, scene))
    return out


def detect_layout(root: str) -> str | None:
    if any(official_scene_dirs(root, part) for part in ("Train", "Val", "Test")):
        return "official"
    if os.path.isdir(os.path.join(root, "img_dir")) and os.path.isdir(os.path.join(root, "ann_dir")):
        return "mmseg"
    return None


def submission_lut() -> np.ndarray:
    """uint8 [256]: train id -> the evaluation server's class id (raw label + SUBMISSION_RAW_OFFSET,
    read from ``LOVEDA.index_encoding``); 255 for values that are no class (ignore, unused ids)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, train_id in LOVEDA.index_encoding.items():
        if train_id != IGNORE_INDEX:
            lut[train_id] = raw + SUBMISSION_RAW_OFFSET
    return lut


def decode_loveda(raw, path: str):
    mask, _ = convert_index_mask(raw, LOVEDA.index_encoding, source=path)
    return mask


def find_scenes(src: str, **_) -> list:
    """Source scenes for ``semiearth-prepare loveda``: the official layout (Train -> train pool,
    Val -> test, Test -> unlabelled only), mmseg's img_dir/ann_dir (train, val -> test, test ->
    unlabelled) or a flat img/ + ann/ pair (one pool)."""
    from semiearth.data.io import Scene, find_mmseg_scenes

    if detect_layout(src) == "official":
        scenes = []
        for part, role in (("Train", "train"), ("Val", "test"), ("Test", "unlabeled")):
            for img_dir, mask_dir, scene in official_scene_dirs(src, part):
                for p in list_images(img_dir):
                    stem = os.path.splitext(os.path.basename(p))[0]
                    label = os.path.join(mask_dir, stem + ".png") if mask_dir else None
                    if label is not None and not os.path.isfile(label):
                        raise FileNotFoundError(f"mask not found for {p}: {label}")
                    r = role if label is not None else "unlabeled"
                    scenes.append(Scene(f"{part}_{scene}_{stem}", p, label, r, "index", LOVEDA.index_encoding))
        return scenes
    scenes = find_mmseg_scenes(src, LOVEDA.index_encoding, {"train": "train", "val": "test", "test": "unlabeled"})
    if scenes is None:
        raise FileNotFoundError(
            f"no LoveDA layout in {src}: expected {{Train,Val,Test}}/{{Urban,Rural}}/images_png (+masks_png), "
            "img_dir/ + ann_dir/, or img/ + ann/"
        )
    return scenes


class LoveDA(SegmentationDataset):
    spec = LOVEDA
    find_scenes = staticmethod(find_scenes)
    detect_layout = staticmethod(detect_layout)
    decode_raw = staticmethod(decode_loveda)

    def official_items(self, layout: str, split: str) -> list[Item]:
        need_masks = split != "unlabeled"
        if split == "test":
            warnings.warn(
                f"LoveDA {layout} layout: split 'test' reads the official Val images (Test labels are not "
                "public); val and test then coincide. Prepare the dataset (semiearth-prepare loveda) for a "
                "val split held out from Train.",
                stacklevel=4,
            )
        items = []
        if layout == "official":
            part = _OFFICIAL_DIRS[split]
            dirs = official_scene_dirs(self.root, part)
            if not dirs:
                raise FileNotFoundError(f"folder not found: {os.path.join(self.root, part)}/{{Urban,Rural}}/images_png")
            for img_dir, mask_dir, scene in dirs:
                if need_masks and mask_dir is None:
                    raise FileNotFoundError(f"folder not found: {os.path.join(os.path.dirname(img_dir), 'masks_png')}")
                for p in list_images(img_dir):
                    stem = os.path.splitext(os.path.basename(p))[0]
                    mask = os.path.join(mask_dir, stem + ".png") if (need_masks and mask_dir) else None
                    if mask is not None and not os.path.isfile(mask):
                        raise FileNotFoundError(f"mask not found for {p}: {mask}")
                    items.append(Item(p, mask, f"{part}_{scene}_{stem}"))
        else:  # mmseg
            sub = _MMSEG_DIRS[split]
            img_dir = os.path.join(self.root, "img_dir", sub)
            ann_dir = os.path.join(self.root, "ann_dir", sub)
            for p in list_images(img_dir):
                stem = os.path.splitext(os.path.basename(p))[0]
                mask = os.path.join(ann_dir, stem + ".png") if need_masks else None
                if mask is not None and not os.path.isfile(mask):
                    raise FileNotFoundError(f"mask not found for {p}: {mask}")
                items.append(Item(p, mask, f"{sub}_{stem}"))
        if not items:
            raise DataError(f"LoveDA {layout} layout at {self.root}: no images for split {split!r}")
        return items
