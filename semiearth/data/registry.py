"""Dataset registry: `build_dataset(cfg, split)`.

Contract (shared by every dataset; see docs/data_contract.md):

- A dataset class is constructed as `Class(cfg: DataConfig, split)` with split one of
  `labeled`, `unlabeled`, `val`, `test`. `cfg.splits[split]` is a list-file path relative to
  `cfg.root` (or empty when the dataset defines its own split).
- `dataset[i]` is a dict:
  - `image`: float32 tensor [3, H, W], RGB in [0, 1], not normalised (the trainer normalises
    with `cfg.mean`/`cfg.std`);
  - `mask`: int64 tensor [H, W], train ids 0..C-1 and `cfg.ignore_index` elsewhere (unlabelled
    items may carry a mask filled with `cfg.ignore_index`);
  - `name`: str, unique within the split.
- Cropping, augmentation and normalisation are the trainer's job; datasets return whole tiles.
- Classes are imported lazily, so a dataset with optional dependencies (rasterio) costs nothing
  unless it is used.

This table is the one place that knows the datasets, for training and for `semiearth-prepare`
alike. A dataset = one module with its class plus one line in DATASETS (or `register_dataset`).
The class states its class table as `spec` (a semiearth.data.classes.DatasetSpec: names, palette,
prompt synonyms, label encodings; None when the user gives the classes) and, to be preparable, a
static `find_scenes(src, **options) -> list[Scene]` that lists the source scenes of a download.

The config reads two more tables when it is loaded, without importing a dataset module (nor torch):
DATASET_SPECS (name -> "module:SPEC", a DatasetSpec constant in a light module, or None) and
DATASET_OPTIONS (name -> "module:Model", the pydantic model of `data.options`). A dataset missing
from DATASET_SPECS has its class imported to read `spec`; one missing from DATASET_OPTIONS takes the
class's pydantic `Options` when registered as a class, else any options.
"""

from __future__ import annotations

import os

from semiearth.config import ConfigError, DataConfig
from semiearth.registry import lookup, options_model, register, resolve

SPLITS = ("labeled", "unlabeled", "val", "test")

DATASETS: dict[str, str] = {
    "synthetic": "semiearth.data.synthetic:SyntheticAerial",
    "loveda": "semiearth.data.loveda:LoveDA",
    "potsdam": "semiearth.data.isprs:Potsdam",
    "vaihingen": "semiearth.data.isprs:Vaihingen",
    "openearthmap": "semiearth.data.openearthmap:OpenEarthMap",
    "deepglobe": "semiearth.data.deepglobe:DeepGlobe",
    "folder": "semiearth.data.folder:FolderDataset",
    "torchgeo": "semiearth.data.torchgeo:TorchgeoDataset",
}


DATASET_SPECS: dict[str, object] = {
    "synthetic": "semiearth.data.classes:SYNTHETIC",
    "loveda": "semiearth.data.classes:LOVEDA",
    "potsdam": "semiearth.data.classes:POTSDAM",
    "vaihingen": "semiearth.data.classes:VAIHINGEN",
    "openearthmap": "semiearth.data.classes:OPENEARTHMAP",
    "deepglobe": "semiearth.data.classes:DEEPGLOBE",
    "folder": None,  # the user's classes (data.num_classes, data.class_names, data.palette)
    "torchgeo": None,  # the classes of data.options.dataset, stated in the config
}
DATASET_OPTIONS: dict[str, str | type] = {
    "synthetic": "semiearth.options:SyntheticOptions",
    "loveda": "semiearth.options:SegmentationOptions",
    "potsdam": "semiearth.options:SegmentationOptions",
    "vaihingen": "semiearth.options:SegmentationOptions",
    "openearthmap": "semiearth.options:SegmentationOptions",
    "deepglobe": "semiearth.options:SegmentationOptions",
    "folder": "semiearth.options:FolderOptions",
    "torchgeo": "semiearth.options:TorchgeoOptions",
}


def register_dataset(name: str, target: str | type, options=None, spec=None) -> None:
    """Register `name` -> a class or "module:Class" (for datasets outside this package).

    options: the pydantic model of its `data.options` (or "module:Model"); None: the class's pydantic
    `Options` attribute when `target` is a class, else any options. spec: its DatasetSpec (or
    "module:SPEC"); None: the class's `spec` attribute (a string target is imported to read it)."""
    register(DATASETS, DATASET_OPTIONS, name, target, options)
    if spec is not None:
        DATASET_SPECS[name] = spec
    else:
        DATASET_SPECS.pop(name, None)


def dataset_spec(name: str):
    """The dataset's class table (DatasetSpec), or None when the user states the classes."""
    if name in DATASET_SPECS:
        return resolve(DATASET_SPECS[name])
    return getattr(dataset_class(name), "spec", None)


def dataset_class(name: str) -> type:
    return lookup(DATASETS, name, "dataset")


def preparable_datasets() -> list[str]:
    """Names of the datasets `semiearth-prepare` can read (their class has `find_scenes`), in table order."""
    return [n for n in DATASETS if callable(getattr(dataset_class(n), "find_scenes", None))]


def scene_finder(name: str):
    """The dataset's `find_scenes(src, **options)`, or a ValueError naming the preparable datasets."""
    finder = getattr(dataset_class(name), "find_scenes", None) if name in DATASETS else None
    if not callable(finder):
        raise ValueError(f"unknown dataset {name!r} for semiearth-prepare; expected one of {preparable_datasets()}")
    return finder


def build_dataset(cfg: DataConfig, split: str):
    """The `split` of the dataset `cfg.name`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    return dataset_class(cfg.name)(cfg, split)


def check_data_config(cfg: DataConfig) -> None:
    """Fail before any work, naming the config key: an unknown dataset, a missing or unset data.root,
    keys in data.options that a dataset without an options model does not list in its `OPTIONS`
    (options models and the class table were checked when the config was loaded, semiearth/config.py).
    A dataset class may declare `NEEDS_ROOT = False` (it needs no files)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {cfg.name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    cls = dataset_class(cfg.name)
    allowed = getattr(cls, "OPTIONS", None)  # a dataset without an options model may list its keys
    unknown = sorted(set(cfg.options) - set(allowed)) if allowed is not None else []
    if unknown and options_model(DATASETS, DATASET_OPTIONS, cfg.name) is None:
        raise ConfigError(
            f"unknown key 'data.options.{unknown[0]}' for dataset {cfg.name}; allowed keys in data.options: "
            f"{', '.join(allowed) or '(none)'}"
        )
    if not getattr(cls, "NEEDS_ROOT", True):
        return
    prepare = {"folder": "a folder", "torchgeo": "the folder you give torchgeo as root="}.get(
        cfg.name, f"semiearth-prepare {cfg.name} --src DOWNLOAD/ --out DIR makes one"
    )
    if not cfg.root:
        raise ConfigError(f"data.root is not set for dataset {cfg.name}: --set data.root=DIR ({prepare})")
    if not os.path.isdir(os.path.expanduser(cfg.root)):
        raise ConfigError(
            f"data.root: folder {cfg.root} does not exist; --set data.root=DIR to point at your data ({prepare})"
        )
