"""Teacher-student training with the VLM-PP hook: `train(cfg)` for one run, `run(cfg)` for the
configured experiment (with `compare_baseline`, a supervised-only baseline first)."""

from semiearth.train.trainer import run, train

__all__ = ["run", "train"]
