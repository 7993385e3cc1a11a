"""OpenEarthMap (Xia et al., WACV 2023): 0.25-0.5 m GeoTIFF tiles from 44 countries, 8 classes.

Encoding (label GeoTIFFs, index): 0 unknown -> ignore, 1 bareland -> 0, 2 rangeland -> 1,
3 developed space -> 2, 4 road -> 3, 5 tree -> 4, 6 water -> 5, 7 agriculture land -> 6,
8 building -> 7. Image nodata (GeoTIFF nodata value, internal mask or alpha) -> ignore.

``data.root`` may point at a prepared folder (``semiearth-prepare openearthmap``) or at the official
layout ``<region>/images/<region>_<n>.tif`` + ``<region>/labels/<region>_<n>.tif`` with the file
lists ``train.txt``, ``val.txt``, ``test.txt`` (one file name per line): labeled = train.txt,
val = val.txt, test = test.txt (its labels must be present). There is no official unlabelled split:
prepare the dataset for labelled/unlabelled partitions. ``data.bands`` selects bands (1-based).
"""

from __future__ import annotations

import os

from semiearth.data.classes import OPENEARTHMAP, convert_index_mask
from semiearth.data.folder import Item, SegmentationDataset
from semiearth.data.io import DataError, Scene

LISTS = {"labeled": "train.txt", "val": "val.txt", "test": "test.txt"}


def index_official(root: str) -> tuple[dict[str, str], dict[str, str]]:
    """{file name: image path}, {file name: label path} over ``root/<region>/{images,labels}``."""
    images, labels = {}, {}
    for region in sorted(os.listdir(root)):
        for sub, table in (("images", images), ("labels", labels)):
            d = os.path.join(root, region, sub)
            if os.path.isdir(d):
                for f in sorted(os.listdir(d)):
                    if f.lower().endswith((".tif", ".tiff")):
                        table[f] = os.path.join(d, f)
    return images, labels


def detect_layout(root: str) -> str | None:
    if not os.path.isdir(root):
        return None
    for region in os.listdir(root):
        if os.path.isdir(os.path.join(root, region, "images")):
            return "official"
    return None


def read_name_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split list not found: {path}")
    with open(path) as f:
        names = [ln.strip().split()[0] for ln in f if ln.strip() and not ln.startswith("#")]
    if not names:
        raise DataError(f"split list is empty: {path}")
    return names


def decode_oem(raw, path: str):
    mask, _ = convert_index_mask(raw, OPENEARTHMAP.index_encoding, source=path)
    return mask


def find_scenes(src: str, **_) -> list[Scene]:
    """Official OpenEarthMap: train.txt -> train pool, val.txt -> val, test.txt -> test (unlabelled only
    where its labels are absent); images in no list -> pool."""
    if detect_layout(src) is None:
        raise FileNotFoundError(f"no OpenEarthMap layout in {src}: expected <region>/images/*.tif (+ labels/)")
    images, labels = index_official(src)
    role_of = {}
    for role, fname in (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt")):
        p = os.path.join(src, fname)
        if os.path.isfile(p):
            for n in read_name_list(p):
                role_of[n] = role
    scenes = []
    for name, img in images.items():
        label = labels.get(name)
        role = role_of.get(name, "pool") if label is not None else "unlabeled"
        scenes.append(Scene(os.path.splitext(name)[0], img, label, role, "index", OPENEARTHMAP.index_encoding))
    return scenes


class OpenEarthMap(SegmentationDataset):
    spec = OPENEARTHMAP
    find_scenes = staticmethod(find_scenes)
    detect_layout = staticmethod(detect_layout)
    decode_raw = staticmethod(decode_oem)

    def official_items(self, layout: str, split: str) -> list[Item]:
        if split == "unlabeled":
            raise DataError(
                f"OpenEarthMap official layout at {self.root} has no unlabelled split: run "
                f"`semiearth-prepare openearthmap --src {self.root} --out DIR` for labelled/unlabelled partitions"
            )
        images, labels = index_official(self.root)
        list_path = os.path.join(self.root, LISTS[split])
        items = []
        for name in read_name_list(list_path):
            if name not in images:
                raise FileNotFoundError(f"{list_path}: image {name} not found under {self.root}/*/images/")
            if name not in labels:
                raise FileNotFoundError(f"{list_path}: label {name} not found under {self.root}/*/labels/")
            items.append(Item(images[name], labels[name], os.path.splitext(name)[0]))
        return items
