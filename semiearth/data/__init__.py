"""Datasets: the registry (`build_dataset`, `dataset_spec`) and the built-in synthetic aerial scenes.

Importing this package imports the tables only (semiearth/data/registry.py), not the datasets."""

from semiearth.data.registry import DATASETS, SPLITS, build_dataset, dataset_class, dataset_spec, register_dataset

__all__ = ["DATASETS", "SPLITS", "build_dataset", "dataset_class", "dataset_spec", "register_dataset"]
