"""Region classifiers for VLM-PP (protocol in _base.py)."""

from semiearth.purify.classifiers._base import UniformClassifier, check_probabilities
from semiearth.purify.classifiers.abstain import AbstainingClassifier
from semiearth.purify.classifiers.classes import DATASET_CLASSES, SYNONYMS, TEMPLATES, prompts_for
from semiearth.purify.classifiers.hf_vlm import HFVLMClassifier
from semiearth.purify.classifiers.noisy_oracle import NoisyOracleClassifier
from semiearth.purify.classifiers.openclip import OpenClipClassifier, model_for_checkpoint
from semiearth.purify.classifiers.oracle import OracleClassifier
from semiearth.purify.classifiers.prototype import PrototypeClassifier, crop_scale_shift

__all__ = [
    "DATASET_CLASSES",
    "SYNONYMS",
    "TEMPLATES",
    "AbstainingClassifier",
    "HFVLMClassifier",
    "NoisyOracleClassifier",
    "OpenClipClassifier",
    "OracleClassifier",
    "PrototypeClassifier",
    "UniformClassifier",
    "check_probabilities",
    "crop_scale_shift",
    "model_for_checkpoint",
    "prompts_for",
]
