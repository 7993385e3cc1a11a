"""VLM-PP: VLM pseudo-label purification (the pipeline and its owners: docs/architecture.md).

from semiearth.purify import VLMPurifier, OracleClassifier
out = VLMPurifier(classifier, num_classes)(images, teacher_logits)
out.label, out.conf, out.records, out.timings

The classifiers are imported on first use (PEP 562): importing the pipeline or the classifier
registry does not import every classifier (open_clip, transformers).
"""

import importlib

from semiearth.purify.noisy_teacher import NoisyTeacher, noisy_teacher_logits
from semiearth.purify.purifier import PurifyOutput, VLMPurifier
from semiearth.purify.regions import select_regions
from semiearth.purify.render import read_records, render, write_records

_CLASSIFIERS = (
    "DATASET_CLASSES",
    "AbstainingClassifier",
    "HFVLMClassifier",
    "NoisyOracleClassifier",
    "OpenClipClassifier",
    "OracleClassifier",
    "PrototypeClassifier",
    "UniformClassifier",
)

__all__ = [
    *_CLASSIFIERS,
    "NoisyTeacher",
    "PurifyOutput",
    "VLMPurifier",
    "noisy_teacher_logits",
    "read_records",
    "render",
    "select_regions",
    "write_records",
]


def __getattr__(name: str):
    if name not in _CLASSIFIERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("semiearth.purify.classifiers"), name)
    globals()[name] = value
    return value
