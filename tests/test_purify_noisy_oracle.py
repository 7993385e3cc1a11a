"""The noisy oracle (a simulated VLM of known region accuracy) and the abstaining wrapper."""

import math

import pytest
import torch

from semiearth.purify import NoisyTeacher, UniformClassifier, VLMPurifier
from semiearth.purify.classifiers.abstain import AbstainingClassifier, isotonic
from semiearth.purify.classifiers.classes import DATASET_CLASSES
from semiearth.purify.classifiers.noisy_oracle import NoisyOracleClassifier, confusion_matrix
from semiearth.purify.classifiers.registry import classifier_class

pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")


def block_scene(b=4, size=128, c=6, block=16, seed=0):
    """gt [B,H,W] of random class blocks and the seeded noisy teacher's logits [B,C,H,W]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, c, (b, size // block, size // block), generator=g)
    gt = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    return gt, NoisyTeacher()(gt, c, seed=seed)


def test_registered_and_confusion_rows():
    assert classifier_class("noisy_oracle") is NoisyOracleClassifier
    names = DATASET_CLASSES["potsdam"]
    m = confusion_matrix(names, "potsdam")
    torch.testing.assert_close(m.sum(1), torch.ones(6))
    assert bool((m.diagonal() == 0).all())
    assert int(m[names.index("tree")].argmax()) == names.index("low vegetation")
    lov = DATASET_CLASSES["loveda"]
    assert int(confusion_matrix(lov, "loveda")[lov.index("agriculture")].argmax()) == lov.index("background")


@pytest.mark.parametrize("accuracy", [0.3, 0.7, 1.0])
def test_region_accuracy_is_what_was_asked(accuracy):
    """Realised accuracy over the purifier's regions within 4 binomial standard errors of `accuracy`."""
    c = 6
    truth, pred = [], []
    for seed in range(6):
        gt, logits = block_scene(c=c, seed=seed)
        clf = NoisyOracleClassifier(c, accuracy, DATASET_CLASSES["potsdam"], "potsdam", gt=gt, seed=seed)
        out = VLMPurifier(clf, c, max_regions=64, cell=16)(gt.new_zeros(gt.shape[0], 3, *gt.shape[1:]).byte(), logits)
        assert out.num_regions > 0
        torch.testing.assert_close(out.q.sum(1), torch.ones(out.num_regions))
        labelled = clf.last_truth >= 0
        truth.append(clf.last_truth[labelled])
        pred.append(clf.last_pred[labelled])
        top1 = out.q.argmax(1).cpu()[labelled]
        assert torch.equal(top1, clf.last_pred[labelled])  # q's argmax is the drawn class
    truth, pred = torch.cat(truth), torch.cat(pred)
    n = truth.numel()
    assert n > 500
    realised = float((truth == pred).float().mean())
    assert abs(realised - accuracy) <= 4 * math.sqrt(accuracy * (1 - accuracy) / n) + 1e-9


def test_confidence_spreads_and_tracks_correctness():
    clf = NoisyOracleClassifier(7, 0.7, DATASET_CLASSES["loveda"], "loveda")
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 7, (4000,), generator=g)
    z, pred = clf._logits(truth, g)
    conf = torch.softmax(z / clf.temperature, 1).amax(1)
    right = pred == truth
    assert float(conf.std()) > 0.05  # a spread, not one value
    assert float(conf[right].mean()) > float(conf[~right].mean()) + 0.1
    assert abs(float(conf.mean()) - 0.7) < 0.1  # calibrated in the mean


def test_segment_calibration_claims_the_purity_not_certainty():
    """At accuracy 1 the per-pixel calibrated q is confident about as much as the segments are pure."""
    c = 6
    gt, logits = block_scene(c=c, seed=2, block=12)  # blocks across cells: mixed segments
    clf = NoisyOracleClassifier(c, 1.0, gt=gt, seed=0)
    images = torch.zeros(gt.shape[0], 3, *gt.shape[1:], dtype=torch.uint8)
    out = VLMPurifier(clf, c, max_regions=64, cell=16)(images, logits)
    lab = clf.last_truth >= 0
    assert torch.equal(clf.last_pred[lab], clf.last_truth[lab])
    conf = out.q.amax(1)[lab]
    assert 0.4 < float(conf.mean()) < 0.99
    labels = NoisyOracleClassifier(c, 1.0, gt=gt, seed=0, calibration="labels")
    out2 = VLMPurifier(labels, c, max_regions=64, cell=16)(images, logits)
    assert float(out2.q.amax(1)[lab].mean()) > float(conf.mean())  # calibrated on labels: more confident


def test_isotonic_is_monotone_and_pools_violators():
    xs, fit = isotonic(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert xs.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert fit.tolist() == pytest.approx([0.0, 0.5, 0.5, 1.0])


class FixedQ:
    """A classifier returning given rows in order (crop contents ignored)."""

    def __init__(self, q):
        self.q, self.num_classes, self.input_size = q, q.shape[1], 8
        self.mean, self.std = (0.0,) * 3, (1.0,) * 3

    def __call__(self, crops, regions):
        return self.q[: crops.shape[0]]


def test_abstention_returns_exactly_uniform_rows_below_threshold():
    q = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33]])
    clf = AbstainingClassifier(FixedQ(q), min_accuracy=0.75)
    conf = torch.tensor([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    right = torch.tensor([0, 0, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    clf.set_threshold(conf, right.float())
    assert clf.threshold == pytest.approx(0.7)  # isotonic: 0,0,.5,.5,1,1,1,1 -> first >= .75 at 0.7
    out = clf(torch.zeros(4, 3, 8, 8), torch.zeros(4, 6))
    assert clf.last_keep.tolist() == [True, False, True, False]
    torch.testing.assert_close(out[[0, 2]], q[[0, 2]])  # temperature 1: q itself
    assert torch.equal(out[1], torch.full((3,), 1.0 / 3)) and torch.equal(out[3], torch.full((3,), 1.0 / 3))
    unfitted = AbstainingClassifier(FixedQ(q))
    assert torch.equal(unfitted(torch.zeros(4, 3, 8, 8), torch.zeros(4, 6)), torch.full((4, 3), 1.0 / 3))


def test_abstaining_everywhere_is_an_exact_no_op_under_bayes():
    c = 6
    gt, logits = block_scene(c=c, seed=3)
    images = torch.zeros(gt.shape[0], 3, *gt.shape[1:], dtype=torch.uint8)
    wrapped = AbstainingClassifier(NoisyOracleClassifier(c, 0.5, gt=gt, seed=1), min_accuracy=1.0)
    out = VLMPurifier(wrapped, c, max_regions=32, cell=16)(images, logits)
    ref = VLMPurifier(UniformClassifier(c), c, max_regions=32, cell=16)(images, logits)
    assert out.num_regions > 0 and not bool(wrapped.last_keep.any())
    assert torch.equal(out.label, ref.label) and torch.equal(out.conf, ref.conf) and out.relabelled == 0


def test_abstaining_fit_on_purifier_regions_of_labelled_images():
    """fit(logits=...) scores the inner classifier on the purifier's own regions of labelled images."""
    c = 6
    gt, logits = block_scene(c=c, seed=5)
    images = torch.zeros(gt.shape[0], 3, *gt.shape[1:], dtype=torch.uint8)
    inner = NoisyOracleClassifier(c, 0.8, gt=gt, seed=2)
    wrapped = AbstainingClassifier(inner, min_accuracy=0.6)
    purifier = VLMPurifier(wrapped, c, max_regions=32, cell=16)
    wrapped.fit(images, gt, purifier, logits=logits)
    q, target = wrapped.fit_outcomes
    assert q.shape[0] > 50 and q.shape == target.shape
    torch.testing.assert_close(target.sum(1), torch.ones(q.shape[0]))
    right = target.gather(1, q.argmax(1, keepdim=True))  # pixel share of the top-1 class
    assert 0.55 < float(right.mean()) < 0.95
    assert math.isfinite(wrapped.threshold) and wrapped.calibration and wrapped.temperature > 0
