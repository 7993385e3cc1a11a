"""Teacher-student training with the VLM-PP hook: `train(cfg)` for one run, `run(cfg)` for the
configured experiment (with `compare_baseline`, a supervised-only baseline first)."""

from semiearth.train.runs import run
from semiearth.train.trainer import train

__all__ = ["run", "train"]
