"""HFVLMClassifier on tiny random Qwen2-VL / Qwen2.5-VL models saved to a folder and loaded through the
real loading path (offline, CPU): q, a brute-force likelihood check, invariances, budget, views,
the missing-weights error and a 3-iteration training run with purify.method: vlm."""

import json
import os
import sys
import time

import pytest
import torch
from helpers import TINY_RUN

transformers = pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from vlm_timing import save_random_vlm, time_vlm_call  # noqa: E402

from semiearth.config import load_config  # noqa: E402
from semiearth.purify import HFVLMClassifier, VLMPurifier  # noqa: E402
from semiearth.purify.classifiers.hf_vlm import budget_indices  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")

ARCHS = ["tiny-qwen2-vl"] + (["tiny-qwen2.5-vl"] if hasattr(transformers, "Qwen2_5_VLForConditionalGeneration") else [])
CLASSES = ["building", "tree", "car"]
SYNONYMS = {"building": ["roof"], "tree": ["trees"], "car": ["parked car"]}  # 12 answers keep brute force quick
S = 56  # 4 x 4 patches of 14 px -> 4 image tokens


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {arch: save_random_vlm(str(root / arch), arch) for arch in ARCHS}


@pytest.fixture(scope="module", params=ARCHS)
def clf(request, folders):
    return HFVLMClassifier(folders[request.param], CLASSES, synonyms=SYNONYMS, input_size=S, batch_size=4)


def crops_and_regions(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    crops = torch.randn(n, 3, S, S, generator=g)
    regions = torch.tensor([[i % 2, 0.0, 0.0, 64.0, 64.0, 0.0] for i in range(n)])
    return crops, regions


def brute_force_scores(clf, pixels):
    """[N,C] log sum over phrasings of P(answer): per crop, one uncached forward of the full
    conversations with every answer (right-padded batch), answer tokens counted from the text."""
    tok = clf.processor.tokenizer
    prefix_len = len(tok(clf.prefix, add_special_tokens=False)["input_ids"])
    words = [(c, v) for c, name in enumerate(CLASSES) for w in (name, *SYNONYMS[name]) for v in (w, w.capitalize())]
    texts = [clf.prefix + w + "<|im_end|>" for _, w in words]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) - prefix_len for t in texts]
    scores = torch.full((pixels.shape[0], len(CLASSES)), float("-inf"))
    for n in range(pixels.shape[0]):
        inputs = clf.processor(
            text=texts, images=[pixels[n]] * len(texts), return_tensors="pt", padding=True, do_rescale=False
        )
        logp = clf.model(**inputs).logits.float().log_softmax(-1)
        for i, ((c, _), length) in enumerate(zip(words, lengths, strict=True)):
            ids, t = inputs["input_ids"][i], int(inputs["attention_mask"][i].sum())
            ll = sum(logp[i, t - length - 1 + k, ids[t - length + k]] for k in range(length))
            scores[n, c] = torch.logaddexp(scores[n, c], ll)
    return scores


def test_q_sums_to_one_and_equals_brute_force_likelihood(clf):
    crops, regions = crops_and_regions(3)
    q = clf(crops, regions)
    assert q.shape == (3, 3) and torch.allclose(q.sum(1), torch.ones(3), atol=1e-6)
    assert clf.answers == ["building", "Building", "roof", "Roof", "tree", "Tree", "trees", "Trees"] + [
        "car",
        "Car",
        "parked car",
        "Parked car",
    ]
    pixels = clf.pixels(crops, regions)
    expected = brute_force_scores(clf, pixels)
    assert torch.allclose(clf.class_scores(pixels), expected, atol=1e-4)
    assert torch.allclose(q, torch.softmax(expected / clf.temperature, 1), atol=1e-5)


def test_batch_size_and_order_do_not_change_q(clf):
    crops, regions = crops_and_regions(4, seed=1)
    q = clf(crops, regions)
    perm = torch.tensor([3, 0, 2, 1])
    clf.batch_size = 3  # batches of 3 and 1 against one of 4
    try:
        assert torch.allclose(clf(crops, regions), q, atol=1e-5)
        assert torch.allclose(clf(crops[perm], regions[perm]), q[perm], atol=1e-5)
    finally:
        clf.batch_size = 4


def test_empty_batch(clf):
    q = clf(torch.zeros(0, 3, S, S), torch.zeros(0, 6))
    assert q.shape == (0, 3)


def test_max_regions_budget_gives_uniform_rows(folders):
    regions = torch.tensor([[b, 0.0, 0.0, 8.0, 8.0, 0.0] for b in (0, 0, 0, 1, 1, 2)])
    assert budget_indices(regions, None).tolist() == [0, 1, 2, 3, 4, 5]
    assert budget_indices(regions, 4).tolist() == [0, 1, 3, 5]  # each image's first region, then ranks 2
    clf = HFVLMClassifier(folders[ARCHS[0]], CLASSES, synonyms={}, capitalize=False, input_size=S, max_regions=2)
    crops, _ = crops_and_regions(6)
    q = clf(crops, regions)
    assert torch.allclose(q[[1, 2, 4, 5]], torch.full((4, 3), 1 / 3))
    assert not torch.allclose(q[[0, 3]], torch.full((2, 3), 1 / 3))
    assert clf.answers == CLASSES


def test_box_view_outlines_the_cell_on_unmasked_crops(folders):
    clf = HFVLMClassifier(folders[ARCHS[0]], CLASSES, synonyms={}, input_size=S, view="box")
    assert not clf.mask_crops and "red box" in clf.prompt
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 64, 64, generator=g) * 0.3
    purifier = VLMPurifier(clf, 3, cell=32, max_regions=4, mask_crops=clf.mask_crops)
    out = purifier(torch.rand(1, 3, 64, 64, generator=g), logits)
    assert out.num_regions > 0 and torch.allclose(out.q.sum(1), torch.ones(out.num_regions), atol=1e-5)
    seen, cells = clf._cells
    assert torch.equal(seen, out.regions)
    assert ((cells[:, 2] - cells[:, 0]) == 32).all() and ((cells[:, 3] - cells[:, 1]) == 32).all()
    clf.max_regions, asked = 1, []  # under a budget the cells still come from observe()
    cell_boxes = clf._cell_boxes
    clf._cell_boxes = lambda regions: asked.append(regions) or cell_boxes(regions)
    out = purifier(torch.rand(1, 3, 64, 64, generator=g), logits)
    assert torch.equal(asked[0], out.regions) and torch.equal(clf._cells[0], out.regions)
    # A region box [0,0,64,64] with its cell [16,16,48,48]: the outline is red, the centre is not.
    pixels = clf.pixels(torch.zeros(1, 3, S, S), torch.tensor([[0.0, 0.0, 0.0, 64.0, 64.0, 0.0]]))
    red = (pixels[0, 0] == 1) & (pixels[0, 1] == 0) & (pixels[0, 2] == 0)
    assert red[S // 4, S // 2] and red[S // 2, S // 4] and not red[S // 2, S // 2] and not red[2, 2]


def test_missing_weights_offline_fail_fast_with_the_fix(tmp_path):
    cases = [
        (str(tmp_path / "no" / "such" / "folder"), "does not exist"),
        (str(tmp_path), "lacks config.json"),
        ("Qwen/Qwen2.5-VL-3B-Instruct", "not in the Hugging Face cache"),
    ]
    for model, what in cases:
        t = time.perf_counter()
        with pytest.raises(FileNotFoundError, match=what) as err:
            HFVLMClassifier(model, CLASSES, cache_dir=str(tmp_path / "hub"))
        assert time.perf_counter() - t < 1.0
        assert "hf download" in str(err.value) and os.path.expanduser(model) in str(err.value)


def test_train_three_iterations_with_purify_vlm(tmp_path, folders):
    from semiearth.train import train

    overrides = [
        *TINY_RUN,
        f"out_dir={tmp_path}",
        "data.options={size: 64, labeled: 3, unlabeled: 6, val: 2, test: 2}",
        "data.crop_size=64",
        "train.iters=3",
        "train.eval_every=0",
        "purify.method=vlm",
        "purify.max_regions=2",
        f"purify.classifier_options={{model: {folders[ARCHS[0]]}, input_size: {S}, synonyms: {{}}}}",
    ]
    cfg = load_config(None, overrides)
    assert cfg.purify.method == "vlm"
    result = train(cfg)
    assert not result["interrupted"]
    records = [json.loads(line) for line in open(tmp_path / "purify.jsonl")]
    assert records and {"box", "vlm_top3", "iter"} <= set(records[0])
    top = records[0]["vlm_top3"]
    assert len(top) == 3 and top[0]["name"] in cfg.data.class_names and top[0]["prob"] >= top[1]["prob"]


def test_timing_function_runs_on_the_tiny_model():
    row = time_vlm_call("tiny-qwen2-vl", "cpu", regions=4, image_size=256, input_size=S, repeats=1)
    assert row["regions"] == 4 and row["seconds_per_call"] > 0 and set(row["stage_seconds"]) >= {"classify"}
