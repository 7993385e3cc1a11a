"""The classifier protocol and the checks shared by the classifiers and the purifier.

A classifier is a callable `classifier(crops [N,3,S,S] float32, regions [N,6]) -> q [N,C]` whose rows
are class probabilities (non-negative, summing to 1), with attributes:

- `input_size` (S, the crop side it wants), `mean` and `std` (3 values each: the normalisation it
  expects of RGB in [0, 1]; crop_batch applies it), `num_classes` (C) and optionally `class_names`.
- optional hook `observe(stats, regions, seg_table)`: VLMPurifier calls it before every
  classification with the batch's PurifyStats and region table (the oracle reads the segments
  from it; a VLM has no use for it).
- optional hook `set_gt(gt)`: VLMPurifier hands it the batch's ground truth [B,H,W] when its
  caller passes `gt=` (the oracle upper bound reads it; every other classifier ignores it).
- optional `mask_crops` (default True): False asks crop_batch for plain crops, without masking the
  pixels of other classes.
- optional classmethod `from_config(ctx)` (ctx: registry.ClassifierContext): how the trainer builds
  it from the config; the classifier is named by `purify.method` through registry.CLASSIFIERS.
"""

import torch

from semiearth.ops._checks import require_zero


def check_crops(name: str, crops, regions, size: int | None = None) -> None:
    if not isinstance(crops, torch.Tensor) or crops.dim() != 4 or crops.shape[1] != 3:
        shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
        raise ValueError(f"{name}: crops must be a tensor [N,3,S,S], got {shape}")
    if not isinstance(regions, torch.Tensor) or regions.dim() != 2 or regions.shape[1] != 6:
        shape = tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions).__name__
        raise ValueError(f"{name}: regions must be a tensor [N,6] (batch, x1, y1, x2, y2, class), got {shape}")
    if crops.shape[0] != regions.shape[0]:
        raise ValueError(f"{name}: {crops.shape[0]} crops but {regions.shape[0]} regions")
    if size is not None and tuple(crops.shape[2:]) != (size, size):
        raise ValueError(f"{name}: crops must be {size} x {size} (input_size), got {tuple(crops.shape[2:])}")


def check_probabilities(name: str, q, n: int, c: int, atol: float = 1e-3) -> torch.Tensor:
    """q as float32 [n,c] with finite, non-negative rows summing to 1, or a ValueError saying what is wrong.

    The shape and dtype are checked at once; the values with `semiearth.ops._checks.require_zero`:
    at once (one host-device sync), or, inside `deferred_checks()` (the trainer), when the caller
    reads its deferred checks."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor [N,C] of class probabilities, got {type(q).__name__}")
    if tuple(q.shape) != (n, c):
        raise ValueError(
            f"{name} returned q of shape {tuple(q.shape)} but {n} regions and {c} classes need ({n}, {c}); "
            "the classifier's classes must match the teacher's"
        )
    if not q.is_floating_point():
        raise TypeError(f"{name} must return floating-point probabilities, got {q.dtype}")
    q = q.float()
    if n == 0:
        return q
    finite = torch.isfinite(q).all(dim=1)
    negative = (q < 0).any(dim=1)
    sums = q.sum(dim=1)
    bad = ~finite | negative | ((sums - 1).abs() > atol)

    def error(count: int) -> ValueError:  # called only when a row failed (reading the values is then fine)
        if count < 0:  # under torch.compile: a message without the values
            return ValueError(f"{name} returned probabilities that are not finite, non-negative rows summing to 1")
        if not bool(finite.all()):
            return ValueError(f"{name} returned NaN or inf probabilities")
        if bool(negative.any()):
            return ValueError(f"{name} returned negative probabilities")
        rows = bad.nonzero().flatten()[:3]
        return ValueError(
            f"{name} returned rows that do not sum to 1 (rows {rows.tolist()}: sums {sums[rows].tolist()}); "
            "return softmax probabilities, not logits"
        )

    # At once, or deferred to the trainer's logging step inside semiearth.ops._checks.deferred_checks().
    require_zero(bad.sum(), error)
    return q


def as_triple(name: str, value) -> tuple[float, float, float]:
    t = torch.as_tensor(value, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a number or 3 per-channel values, got {value!r}")
    return tuple(float(x) for x in t)


class UniformClassifier:
    """q = 1/C for every region: the no-information VLM (under rule "bayes" it changes nothing)."""

    def __init__(self, num_classes: int, input_size: int = 32, class_names=None):
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)
        self.class_names = list(class_names) if class_names is not None else None

    @classmethod
    def from_config(cls, ctx) -> "UniformClassifier":
        return cls(ctx.data.num_classes, class_names=ctx.data.class_names, **ctx.purify.classifier_options)

    def __call__(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        check_crops("UniformClassifier", crops, regions)
        return torch.full((crops.shape[0], self.num_classes), 1.0 / self.num_classes, device=crops.device)
