"""Region classifiers for VLM-PP (protocol in _base.py; the table of names: registry.py).

The names below are imported on first use (PEP 562), so `import semiearth.purify.classifiers.registry`
or one classifier module does not import every classifier (open_clip, transformers).
"""

import importlib

_WHERE = {
    "UniformClassifier": "_base",
    "check_probabilities": "_base",
    "AbstainingClassifier": "abstain",
    "DATASET_CLASSES": "classes",
    "SYNONYMS": "classes",
    "TEMPLATES": "classes",
    "prompts_for": "classes",
    "HFVLMClassifier": "hf_vlm",
    "NoisyOracleClassifier": "noisy_oracle",
    "OpenClipClassifier": "openclip",
    "model_for_checkpoint": "openclip",
    "OracleClassifier": "oracle",
    "PrototypeClassifier": "prototype",
    "crop_scale_shift": "prototype",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_WHERE])
