"""VLMPurifier end to end on synthetic batches: exactness, no-ops, inputs untouched, records, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semiearth.ops import crop_batch
from semiearth.purify import NoisyTeacher, OracleClassifier, PurifyOutput, VLMPurifier
from semiearth.purify.classifiers import UniformClassifier

pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def scene(b=2, c=4, h=64, w=80, seed=0):
    """A blocky ground truth, its noisy-teacher logits and matching images normalised with MEAN/STD."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, c, (b, 4, 5), generator=g)
    gt = torch.nn.functional.interpolate(coarse[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    teacher = NoisyTeacher(blobs_per_mpix=2000.0, blob_radius=(4.0, 10.0), warp_scale=16, blur_px=5)
    logits = teacher(gt, c, seed=seed)
    rgb = torch.rand(b, 3, h, w, generator=g)
    images = (rgb - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return images.float(), logits, gt, rgb


def make(classifier, c, **kw):
    kw.setdefault("cell", 16)
    return VLMPurifier(classifier, c, image_mean=MEAN, image_std=STD, **kw)


class Recorder:
    """Records crops and returns a fixed distribution (or a bad output when told)."""

    def __init__(self, c, size=24, out=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        self.num_classes, self.input_size, self.mean, self.std = c, size, mean, std
        self.out = out
        self.calls = []

    def __call__(self, crops, regions):
        self.calls.append((crops.clone(), regions.clone()))
        if self.out is not None:
            return self.out(crops, regions)
        q = torch.zeros(crops.shape[0], self.num_classes)
        q[:, 0] = 1.0
        return q


def test_uniform_bayes_is_exact_noop():
    images, logits, _, _ = scene()
    out = make(UniformClassifier(4), 4, max_regions=8)(images, logits)
    assert isinstance(out, PurifyOutput) and out.num_regions > 0
    assert torch.equal(out.label, logits.argmax(1))
    assert torch.equal(out.conf, out.stats.conf)
    torch.testing.assert_close(out.conf, torch.softmax(logits, 1).amax(1))
    assert out.relabelled == 0 and out.confirmed == 0
    assert out.label.dtype == torch.int64 and out.conf.dtype == torch.float32


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 2),
    c=st.integers(1, 6),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    cell=st.sampled_from([1, 4, 16, 32]),
    seed=st.integers(0, 1000),
)
def test_uniform_exact_property(b, c, h, w, cell, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    images = torch.rand(b, 3, h, w, generator=g)
    out = VLMPurifier(UniformClassifier(c, input_size=4), c, cell=cell, min_pixels=1)(images, logits)
    assert torch.equal(out.label, logits.argmax(1))
    assert torch.equal(out.conf, out.stats.conf)


def test_confident_batch_is_returned_unchanged_without_calling_classifier():
    c = 3
    logits = torch.zeros(2, c, 20, 30)
    logits[:, 1] = 12.0
    rec = Recorder(c)
    out = make(rec, c)(torch.zeros(2, 3, 20, 30), logits)
    assert rec.calls == [] and out.num_regions == 0 and out.records == []
    assert torch.equal(out.label, torch.ones(2, 20, 30, dtype=torch.int64))
    assert set(out.timings) == {"stats", "select", "crop", "classify", "apply"}


def test_inputs_are_not_modified_and_grad_is_off():
    images, logits, gt, _ = scene()
    ignore = torch.zeros(gt.shape, dtype=torch.bool)
    ignore[:, :4] = True
    copies = images.clone(), logits.clone(), ignore.clone()
    logits.requires_grad_(True)
    out = make(OracleClassifier(4, gt=gt), 4)(images, logits, ignore=ignore)
    assert not out.conf.requires_grad
    assert torch.equal(images, copies[0]) and torch.equal(logits.detach(), copies[1]) and torch.equal(ignore, copies[2])


def test_crops_are_renormalised_for_the_classifier():
    images, logits, _, rgb = scene(b=1)
    rec = Recorder(4)
    purifier = make(rec, 4, max_regions=5)
    out = purifier(images, logits)
    crops, regions = rec.calls[0]
    assert crops.shape == (out.num_regions, 3, 24, 24)
    expected = crop_batch(
        rgb, regions, 24, logits.argmax(1), scale=1 / 0.25, shift=-0.5 / 0.25, mask=True, backend="torch"
    )
    torch.testing.assert_close(crops, expected, atol=1e-4, rtol=1e-4)
    # uint8 images are taken as RGB 0..255
    rec8 = Recorder(4)
    make(rec8, 4, max_regions=5)((rgb * 255).round().to(torch.uint8), logits)
    torch.testing.assert_close(rec8.calls[0][0], expected, atol=0.02 / 0.25, rtol=0)


def test_oracle_bayes_improves_and_records_add_up():
    images, logits, gt, _ = scene(b=2, seed=3)
    out = make(OracleClassifier(4, gt=gt), 4, max_regions=12)(images, logits)
    teacher = logits.argmax(1)
    conf0 = torch.softmax(logits, 1).amax(1)
    acc0 = (teacher == gt).float().mean()
    acc1 = (out.label == gt).float().mean()
    assert acc1 > acc0
    assert int((out.conf >= 0.95).sum()) > int((conf0 >= 0.95).sum())
    assert out.relabelled == int((out.label != teacher).sum()) > 0
    assert sum(r["relabelled"] for r in out.records) == out.relabelled
    assert sum(r["confirmed"] for r in out.records) == out.confirmed > 0
    assert len(out.records) == out.num_regions == out.regions.shape[0]
    r = out.records[0]
    assert set(r) >= {"image", "box", "teacher_class", "teacher_conf", "vlm_top3", "pixels", "relabelled", "confirmed"}
    assert len(r["vlm_top3"]) == 3 and sum(t["prob"] for t in r["vlm_top3"]) <= 1 + 1e-3
    assert r["teacher_conf"] < 0.7 and r["pixels"] > 0
    assert out.counts == {"regions": out.num_regions, "relabelled": out.relabelled, "confirmed": out.confirmed}


def test_paper_rule_never_reaches_the_loss_threshold():
    images, logits, gt, _ = scene(seed=5)
    out = make(OracleClassifier(4, gt=gt), 4, rule="paper")(images, logits)
    conf0 = out.stats.conf
    changed = out.conf != conf0
    assert bool(changed.any())
    assert float(out.conf[changed].max()) < 0.7
    assert torch.equal(out.conf >= 0.95, conf0 >= 0.95)


def test_class_names_and_top3_in_records():
    images, logits, gt, _ = scene()
    oracle = OracleClassifier(4, gt=gt, class_names=["a", "b", "c", "d"])
    out = make(oracle, 4)(images, logits)
    r = out.records[0]
    assert r["teacher_name"] in "abcd" and r["vlm_top3"][0]["name"] in "abcd"
    probs = [t["prob"] for t in r["vlm_top3"]]
    assert probs == sorted(probs, reverse=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    images, logits, gt, _ = scene()
    cpu = make(OracleClassifier(4, gt=gt), 4)(images, logits)
    gpu = make(OracleClassifier(4, gt=gt.cuda()), 4)(images.cuda(), logits.cuda())
    assert gpu.label.is_cuda
    assert torch.equal(cpu.label, gpu.label.cpu())
    torch.testing.assert_close(cpu.conf, gpu.conf.cpu())


# --- bad input -------------------------------------------------------------------------------------


def test_class_count_mismatch():
    with pytest.raises(ValueError, match="3 classes but num_classes is 4"):
        VLMPurifier(UniformClassifier(3), 4)
    images, logits, _, _ = scene()
    with pytest.raises(ValueError, match="logits have 4 classes"):
        VLMPurifier(UniformClassifier(5), 5)(images, logits)


def test_wrong_shapes():
    images, logits, _, _ = scene()
    p = make(UniformClassifier(4), 4)
    with pytest.raises(ValueError, match=r"logits must be a tensor \[B,C,H,W\]"):
        p(images, logits[0])
    with pytest.raises(ValueError, match="do not match logits"):
        p(images[:, :, :10], logits)
    with pytest.raises(ValueError, match=r"images must be a tensor \[B,3,H,W\]"):
        p(images[:, :2], logits)
    with pytest.raises(TypeError, match="float32"):
        p(images.double(), logits)


def test_nan_logits():
    images, logits, _, _ = scene()
    logits[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        make(UniformClassifier(4), 4)(images, logits)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda crops, regions: torch.full((crops.shape[0], 4), 0.5), "do not sum to 1"),
        (lambda crops, regions: torch.full((crops.shape[0], 3), 1 / 3), r"shape .* need"),
        (lambda crops, regions: torch.full((crops.shape[0] + 1, 4), 0.25), r"shape .* need"),
        (lambda crops, regions: torch.full((crops.shape[0], 4), float("nan")), "NaN"),
        (lambda crops, regions: torch.tensor([[2.0, -1.0, 0.0, 0.0]]).expand(crops.shape[0], 4), "negative"),
        (lambda crops, regions: [[0.25] * 4], "torch.Tensor"),
    ],
)
def test_bad_classifier_output(bad, match):
    images, logits, _, _ = scene()
    with pytest.raises((ValueError, TypeError), match=match):
        make(Recorder(4, out=bad), 4)(images, logits)


def test_bad_configuration():
    with pytest.raises(ValueError, match="rule"):
        VLMPurifier(UniformClassifier(2), 2, rule="vote")
    with pytest.raises(ValueError, match="trust"):
        VLMPurifier(UniformClassifier(2), 2, trust=-1)
    with pytest.raises(TypeError, match="input_size"):
        VLMPurifier(lambda c, r: None, 2)
    with pytest.raises(ValueError, match="image_std"):
        VLMPurifier(UniformClassifier(2), 2, image_std=(1, 0, 1))
    with pytest.raises(RuntimeError, match="set_gt"):
        images, logits, _, _ = scene()
        make(OracleClassifier(4), 4)(images, logits)
