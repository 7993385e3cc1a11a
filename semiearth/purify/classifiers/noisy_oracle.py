"""NoisyOracleClassifier: a simulated VLM of known region accuracy, to find how good a VLM must be.

Per region, the true class t is the majority ground-truth class of the segment's candidate pixels
(what purification may change; the oracle's histogram). With probability `accuracy` the predicted
class k is t; otherwise k is a wrong class drawn from a realistic confusion table (tree <-> low
vegetation, building <-> impervious surface <-> clutter, LoveDA agriculture <-> background <->
forest, ...; CONFUSION below, by class name, so it serves every dataset of classes.py).

q is the softmax of noisy logits whose argmax is k, so its confidence spreads like a real
classifier's: every class gets Gaussian noise (std `noise`), a wrong answer keeps the true class as
a likely runner-up (`runner_up` added to its logit), and k leads the best other class by a
log-normal margin, larger when right (`margin_right`) than when wrong (`margin_wrong`), so that
confidence carries information about correctness. The logits are divided by a temperature, so
the simulated classifier is calibrated as a real one is after temperature scaling:

- calibration "segments" (default): per call, the temperature minimising the cross-entropy of q
  against each segment's ground-truth class histogram, i.e. calibrated per pixel. A segment is
  rarely pure (its candidates share a pseudo-label, not a true class), so even an always-right
  top-1 must not claim certainty: at accuracy 1 q's confidence is about the segment's purity.
- calibration "labels": the temperature minimising the log loss of the top-1 label alone (found
  once by simulation): confident like a classifier calibrated on pure segments.

Draws are seeded; each call advances the generator (wrap it in a cache to give two rules the same q).
"""

import math

import torch

from semiearth.purify.classifiers._base import check_crops
from semiearth.purify.classifiers._shared import best_temperature
from semiearth.purify.classifiers.oracle import OracleClassifier
from semiearth.purify.regions import segment_histogram

# class name -> {confused class name: relative weight}; every other class gets BASE_WEIGHT.
CONFUSION = {
    # ISPRS Potsdam / Vaihingen
    "impervious surface": {"building": 1.0, "clutter": 1.0, "car": 0.4, "low vegetation": 0.3},
    "building": {"impervious surface": 1.0, "clutter": 1.0, "tree": 0.2},
    "low vegetation": {"tree": 2.0, "impervious surface": 0.3, "clutter": 0.3},
    "tree": {"low vegetation": 2.0, "building": 0.2},
    "car": {"impervious surface": 1.0, "clutter": 1.0, "building": 0.3},
    "clutter": {"impervious surface": 1.0, "building": 1.0, "low vegetation": 0.3},
    # LoveDA
    "background": {"agriculture": 1.5, "forest": 1.0, "barren": 0.5, "building": 0.2},
    "road": {"building": 0.7, "background": 0.7, "barren": 0.5},
    "water": {"background": 0.5, "forest": 0.3, "agriculture": 0.3},
    "barren": {"background": 1.0, "agriculture": 1.0, "road": 0.3},
    "forest": {"agriculture": 1.0, "background": 1.0},
    "agriculture": {"background": 1.5, "forest": 1.0, "barren": 0.5},
    # OpenEarthMap
    "bareland": {"rangeland": 1.0, "developed space": 0.7, "agriculture land": 0.7},
    "rangeland": {"agriculture land": 1.0, "bareland": 1.0, "tree": 0.7},
    "developed space": {"road": 1.0, "building": 1.0, "bareland": 0.5},
    "agriculture land": {"rangeland": 1.5, "bareland": 0.7},
}
# LoveDA's building and road and OpenEarthMap's share names with ISPRS classes; those rows are
# overridden per dataset where the neighbours differ.
DATASET_CONFUSION = {
    "loveda": {"building": {"road": 0.7, "background": 0.7, "barren": 0.3}},
    "openearthmap": {
        "building": {"developed space": 1.0, "road": 0.7},
        "road": {"developed space": 1.0, "building": 0.7},
        "tree": {"rangeland": 1.0, "agriculture land": 0.5},
        "water": {"rangeland": 0.3, "tree": 0.3},
    },
}
BASE_WEIGHT = 0.05


def confusion_matrix(class_names, dataset: str | None = None) -> torch.Tensor:
    """[C,C] float32: row t = probabilities of each wrong class when class t is mistaken (diagonal 0).

    Classes are looked up by name (dataset-specific rows first); unknown names confuse uniformly.
    """
    names = list(class_names)
    c = len(names)
    table = {**CONFUSION, **DATASET_CONFUSION.get(dataset or "", {})}
    m = torch.full((c, c), BASE_WEIGHT)
    for i, name in enumerate(names):
        for j, other in enumerate(names):
            m[i, j] += table.get(name, {}).get(other, 0.0)
    m.fill_diagonal_(0.0)
    return m / m.sum(dim=1, keepdim=True).clamp(min=1e-12)


class NoisyOracleClassifier(OracleClassifier):
    """q of a simulated classifier that is right on a fraction `accuracy` of the regions.

    Needs the ground truth like OracleClassifier (gt at construction or set_gt per batch; the
    purifier's observe hook gives it the segments). Regions with no labelled candidate pixel get a
    uniform row (nothing to be right about). `last_truth` / `last_pred` [N] keep the latest call's
    true classes (-1 where unlabelled) and predicted classes, to measure the realised accuracy.
    """

    def __init__(
        self,
        num_classes: int,
        accuracy: float,
        class_names=None,
        dataset: str | None = None,
        gt: torch.Tensor | None = None,
        seed: int = 0,
        noise: float = 1.0,
        runner_up: float = 1.0,
        margin_right: float = 2.0,
        margin_wrong: float = 0.7,
        margin_sigma: float = 0.6,
        calibration: str = "segments",
        ignore_index: int = 255,
    ):
        super().__init__(num_classes, gt=gt, ignore_index=ignore_index, class_names=class_names)
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"NoisyOracleClassifier: accuracy must be in [0, 1], got {accuracy!r}")
        if num_classes < 2 and accuracy < 1.0:
            raise ValueError("NoisyOracleClassifier: a wrong class needs at least 2 classes")
        self.accuracy = float(accuracy)
        self.noise, self.runner_up = float(noise), float(runner_up)
        self.margins = (float(margin_right), float(margin_wrong), float(margin_sigma))
        names = class_names if class_names is not None else [str(i) for i in range(num_classes)]
        self.confusion = confusion_matrix(names, dataset)
        self.generator = torch.Generator().manual_seed(seed)
        if calibration not in ("segments", "labels"):
            raise ValueError(f"NoisyOracleClassifier: calibration must be 'segments' or 'labels', got {calibration!r}")
        self.calibration = calibration
        self.temperature = self._calibrated_temperature(seed)
        self.last_truth = self.last_pred = None

    @classmethod
    def from_config(cls, ctx) -> "NoisyOracleClassifier":
        """purify.method: noisy_oracle with classifier_options {accuracy: a, ...}: like the oracle, an
        ablation that reads the unlabelled images' ground truth."""
        if "accuracy" not in ctx.purify.classifier_options:
            raise ValueError("purify.method: noisy_oracle needs purify.classifier_options.accuracy (in [0, 1])")
        return super().from_config(ctx)

    def _logits(self, truth: torch.Tensor, g: torch.Generator):
        """(logits [N,C], predicted class [N]) for true classes truth [N] (all >= 0)."""
        n, c = truth.shape[0], self.num_classes
        right = torch.rand(n, generator=g) < self.accuracy
        wrong = torch.multinomial(self.confusion[truth], 1, generator=g).flatten() if n else truth
        pred = torch.where(right, truth, wrong)
        z = torch.randn(n, c, generator=g) * self.noise
        rows = torch.arange(n)
        z[rows[~right], truth[~right]] += self.runner_up
        z[rows, pred] = float("-inf")
        best_other = z.amax(dim=1)
        m_right, m_wrong, sigma = self.margins
        median = torch.where(right, torch.tensor(m_right), torch.tensor(m_wrong))
        margin = median * torch.exp(sigma * torch.randn(n, generator=g))
        z[rows, pred] = best_other + margin
        return z, pred

    def _calibrated_temperature(self, seed: int, n: int = 20000) -> float:
        """Temperature minimising the log loss of simulated regions (uniform true classes)."""
        g = torch.Generator().manual_seed(seed + 12345)
        truth = torch.randint(0, self.num_classes, (n,), generator=g)
        z, _ = self._logits(truth, g)
        best, best_t = float("inf"), 1.0
        for t in torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 80)).tolist():
            nll = float(-torch.log_softmax(z / t, dim=1)[torch.arange(n), truth].mean())
            if nll < best:
                best, best_t = nll, t
        return best_t

    def __call__(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        check_crops("NoisyOracleClassifier", crops, regions)
        if self.gt is None or self._stats is None:
            raise RuntimeError("NoisyOracleClassifier: needs set_gt(gt) and the purifier's observe() hook")
        n, c = regions.shape[0], self.num_classes
        hist = segment_histogram(self._stats, self._seg_table, self.gt, n, c, self.ignore_index).cpu()
        labelled = hist.sum(dim=1) > 0
        truth = torch.where(labelled, hist.argmax(dim=1), torch.full((n,), -1))
        q = torch.full((n, c), 1.0 / c)
        pred = torch.full((n,), -1)
        if bool(labelled.any()):
            z, p = self._logits(truth[labelled], self.generator)
            target = hist[labelled] / hist[labelled].sum(dim=1, keepdim=True)
            t = best_temperature(z, target) if self.calibration == "segments" else self.temperature
            q[labelled] = torch.softmax(z / t, dim=1)
            pred[labelled] = p
        self.last_truth, self.last_pred = truth, pred
        return q.to(crops.device)
