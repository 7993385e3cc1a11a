"""Score only what can change (purify.topk / purify.prob_floor): the purifier hands classifiers that
take `classes` the candidate classes per region, the VLM scores only those, the unscored get the
neutral q of _base.fill_unscored; restricted scoring agrees with full scoring on the real tiles."""

import os
import sys

import pytest
import torch
from helpers import shared_data

from semiearth.purify import VLMPurifier
from semiearth.purify.classifiers._base import UniformClassifier, accepts_classes, fill_unscored, restrict_q
from semiearth.purify.classifiers.oracle import OracleClassifier

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")

# Tolerances of restricted (topk 3, prob_floor 0.05) against full scoring on the purified pixels of the
# real tiles (measured: docs/classifiers.md "The VLM classifier", bench/purify_quality.py --topk-agreement).
LABEL_DIFF = 0.01  # share of purified pixels whose label differs
CONF_MEAN_DIFF = 0.02  # mean |confidence difference|
ADMIT_DIFF = 0.03  # share whose admission at conf >= 0.95 differs


class Recorder(UniformClassifier):
    def __init__(self, c):
        super().__init__(c, input_size=8)
        self.seen = []

    def __call__(self, crops, regions, classes=None):
        self.seen.append(classes)
        return torch.softmax(
            torch.randn(crops.shape[0], self.num_classes, generator=torch.Generator().manual_seed(0)), 1
        )


def test_fill_unscored_keeps_scored_ratios_and_uses_min():
    scores = torch.tensor([[0.0, 1.0, 2.0, 5.0]])
    classes = torch.tensor([[True, True, False, True]])
    q = fill_unscored(scores, classes)
    full = torch.softmax(scores, 1)
    assert torch.allclose(q.sum(1), torch.ones(1))
    assert torch.allclose(q[0, [1, 3]] / q[0, 0], full[0, [1, 3]] / full[0, 0])
    assert torch.allclose(q[0, 2], q[0, 0])  # the least favoured scored class
    assert torch.equal(fill_unscored(scores, None), full)
    assert torch.allclose(restrict_q(full, classes), q)
    # uniform over the scored classes stays uniform (a no-op under bayes)
    assert torch.allclose(fill_unscored(torch.zeros(1, 4), classes), torch.full((1, 4), 0.25))


def test_purifier_passes_candidates_only_to_classifiers_that_take_them():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 64, 64, generator=g) * 2
    images = torch.rand(2, 3, 64, 64, generator=g)
    rec = Recorder(5)
    assert accepts_classes(rec) and not accepts_classes(OracleClassifier(5))
    out = VLMPurifier(rec, 5, cell=16, topk=2, prob_floor=0.2)(images, logits)
    classes = rec.seen[-1]
    assert classes is not None and classes.shape == (out.num_regions, 5) and out.classes is classes
    assert bool(classes[torch.arange(out.num_regions), out.regions[:, 5].long()].all())  # own class
    assert bool((classes.sum(1) >= 2).all())
    VLMPurifier(rec, 5, cell=16, topk=0)(images, logits)
    assert rec.seen[-1] is None  # topk 0 = all classes, no mask
    rec.topk = 3
    assert VLMPurifier(rec, 5).topk == 3  # the classifier's attribute is the default
    with pytest.raises(ValueError, match="prob_floor"):
        VLMPurifier(rec, 5, prob_floor=1.5)


def agreement_rows(names, vlm: bool):
    sys.path.insert(0, BENCH)
    import argparse

    import purify_quality as pq

    data = shared_data()
    args = argparse.Namespace(data=str(data), seed=0, backend="auto", max_regions=48, cell=32, context=2.0,
                              low_thresh=0.7, topk=3, prob_floor=0.05, no_vlm=not vlm)  # fmt: skip
    units = [u for u in pq.prepare_units(args, pq.NoisyTeacher()) if u["name"] in names]
    rows = []
    for u in units:
        kw = pq.stats_kwargs_for(args, u["c"])
        if vlm:
            clf = pq.tiny_vlm(u["dataset"])
            rows.append(pq.topk_pair(clf, u["images"], u["logits"], kw, 3, 0.05))
            tokens = clf.token_counts
            assert tokens["answer_rows"] > 0
        else:
            for a in (0.5, 0.9):
                clf = pq.NoisyOracleClassifier(u["c"], a, pq.DATASET_CLASSES[u["dataset"]], u["dataset"],
                                               gt=u["gts"], seed=0)  # fmt: skip
                for trust in (1.0, 0.5):
                    rows.append(pq.topk_pair(clf, u["images"], u["logits"], kw, 3, 0.05, "bayes", trust))
    return rows


def check(rows):
    for r in rows:
        assert r["pixels"] > 0 and r["scored_per_region"] < 7
        assert r["label_diff"] <= LABEL_DIFF, r
        assert r["conf_mean_diff"] <= CONF_MEAN_DIFF, r
        assert r["admit_diff"] <= ADMIT_DIFF, r


def test_topk_agrees_with_full_scoring_on_real_tiles_noisy_oracle():
    check(agreement_rows({"potsdam", "potsdam/R", "loveda/1"}, vlm=False))


def test_topk_agrees_with_full_scoring_on_real_tiles_tiny_vlm():
    pytest.importorskip("transformers")
    check(agreement_rows({"potsdam"}, vlm=True))


def test_abstaining_wrapper_passes_classes_only_when_the_inner_takes_them():
    from semiearth.purify.classifiers.abstain import AbstainingClassifier

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 64, 64, generator=g) * 2
    images = torch.rand(2, 3, 64, 64, generator=g)
    rec = Recorder(5)
    rec.topk, rec.prob_floor = 2, 0.2
    wrapped = AbstainingClassifier(rec)
    assert accepts_classes(wrapped) and (wrapped.topk, wrapped.prob_floor) == (2, 0.2)
    wrapped.threshold = 0.0  # keep every inner answer
    p = VLMPurifier(wrapped, 5, cell=16)  # topk / prob_floor read through the wrapper
    assert (p.topk, p.prob_floor) == (2, 0.2)
    out = p(images, logits)
    assert rec.seen[-1] is not None and rec.seen[-1] is out.classes and out.classes.shape == (out.num_regions, 5)
    oracle = AbstainingClassifier(OracleClassifier(5))
    assert not accepts_classes(oracle) and not hasattr(oracle, "topk")
