"""Datasets: the registry (`build_dataset`) and the built-in synthetic aerial scenes."""

from semiearth.data.registry import DATASETS, SPLITS, build_dataset, dataset_class, register_dataset

__all__ = ["DATASETS", "SPLITS", "build_dataset", "dataset_class", "register_dataset"]
