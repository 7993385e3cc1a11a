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
"""

from __future__ import annotations

import importlib
import os

from semiearth.config import ConfigError, DataConfig

SPLITS = ("labeled", "unlabeled", "val", "test")

DATASETS: dict[str, str] = {
    "synthetic": "semiearth.data.synthetic:SyntheticAerial",
    "loveda": "semiearth.data.loveda:LoveDA",
    "potsdam": "semiearth.data.isprs:Potsdam",
    "vaihingen": "semiearth.data.isprs:Vaihingen",
    "openearthmap": "semiearth.data.openearthmap:OpenEarthMap",
    "folder": "semiearth.data.folder:FolderDataset",
}


def register_dataset(name: str, target: str) -> None:
    """Register `name` -> "module:Class" (for datasets outside this package)."""
    DATASETS[name] = target


def dataset_class(name: str) -> type:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset '{name}'; known datasets: {', '.join(sorted(DATASETS))}")
    module_name, _, attr = DATASETS[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def build_dataset(cfg: DataConfig, split: str):
    """The `split` of the dataset `cfg.name`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    return dataset_class(cfg.name)(cfg, split)


def check_data_config(cfg: DataConfig) -> None:
    """Fail before any work, naming the config key: an unknown dataset, a missing or unset data.root,
    keys in data.options that the dataset does not read. A dataset class may declare `OPTIONS` (the
    data.options keys it reads) and `NEEDS_ROOT = False` (it needs no files)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {cfg.name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    cls = dataset_class(cfg.name)
    allowed = getattr(cls, "OPTIONS", None)
    unknown = sorted(set(cfg.options) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ConfigError(
            f"unknown key 'data.options.{unknown[0]}' for dataset {cfg.name}; allowed keys in data.options: "
            f"{', '.join(allowed) or '(none)'}"
        )
    if not getattr(cls, "NEEDS_ROOT", True):
        return
    prepare = f"semiearth-prepare {cfg.name} --src DOWNLOAD/ --out DIR" if cfg.name != "folder" else "a folder"
    if not cfg.root:
        raise ConfigError(f"data.root is not set for dataset {cfg.name}: --set data.root=DIR ({prepare} makes one)")
    if not os.path.isdir(os.path.expanduser(cfg.root)):
        raise ConfigError(
            f"data.root: folder {cfg.root} does not exist; --set data.root=DIR to point at your data "
            f"({prepare} makes one)"
        )
