"""VLM-PP: VLM pseudo-label purification (the pipeline and its owners: docs/architecture.md).

from semiearth.purify import VLMPurifier, OracleClassifier
out = VLMPurifier(classifier, num_classes)(images, teacher_logits)
out.label, out.conf, out.records, out.timings
"""

from semiearth.purify.classifiers import (
    DATASET_CLASSES,
    AbstainingClassifier,
    HFVLMClassifier,
    NoisyOracleClassifier,
    OpenClipClassifier,
    OracleClassifier,
    PrototypeClassifier,
    UniformClassifier,
)
from semiearth.purify.noisy_teacher import NoisyTeacher, noisy_teacher_logits
from semiearth.purify.purifier import PurifyOutput, VLMPurifier
from semiearth.purify.regions import select_regions
from semiearth.purify.render import read_records, render, write_records

__all__ = [
    "DATASET_CLASSES",
    "AbstainingClassifier",
    "HFVLMClassifier",
    "NoisyOracleClassifier",
    "NoisyTeacher",
    "OpenClipClassifier",
    "OracleClassifier",
    "PrototypeClassifier",
    "PurifyOutput",
    "UniformClassifier",
    "VLMPurifier",
    "noisy_teacher_logits",
    "read_records",
    "render",
    "select_regions",
    "write_records",
]
