"""Classifiers: open_clip (random-init and saved local checkpoints, offline errors), prototypes, oracle."""

import json
import os
import time

import pytest
import torch

from semiearth.ops import purify_stats
from semiearth.purify import (
    OpenClipClassifier,
    OracleClassifier,
    PrototypeClassifier,
    VLMPurifier,
    select_regions,
)
from semiearth.purify.classifiers import DATASET_CLASSES, check_probabilities, model_for_checkpoint, prompts_for

pytestmark = pytest.mark.filterwarnings("ignore:.*torch reference:RuntimeWarning")
DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
TINY = "SemiEarthTinyCLIP"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """Registers a tiny open_clip architecture (32 px ViT, 2-layer text tower) for fast tests."""
    import open_clip

    d = tmp_path_factory.mktemp("clipcfg")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (d / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / f"{TINY}.json")
    return TINY


def rand_crops(n, s, seed=0):
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_open_clip_random_init_probabilities_and_text_cache(tiny_clip):
    clf = OpenClipClassifier(tiny_clip, None, class_names="loveda", batch_size=3)
    assert clf.input_size == 32 and clf.num_classes == 7 and len(clf.mean) == 3
    calls = []
    encode_text = clf.model.encode_text
    clf.model.encode_text = lambda t: calls.append(t.shape[0]) or encode_text(t)
    q = clf(rand_crops(5, 32), torch.zeros(5, 6))
    assert q.shape == (5, 7)
    torch.testing.assert_close(q.sum(1), torch.ones(5))
    n_prompts = sum(calls)
    assert n_prompts == sum(len(prompts_for(n)) for n in DATASET_CLASSES["loveda"])
    q2 = clf(rand_crops(5, 32), torch.zeros(5, 6))
    assert sum(calls) == n_prompts and clf.text_encodings == 1  # texts encoded once
    torch.testing.assert_close(q, q2)
    assert clf(rand_crops(0, 32), torch.zeros(0, 6)).shape == (0, 7)
    with pytest.raises(ValueError, match="32 x 32"):
        clf(rand_crops(2, 24), torch.zeros(2, 6))


@pytest.mark.parametrize("wrap", ["plain", "skyclip"])
def test_open_clip_loads_a_saved_local_checkpoint(tiny_clip, tmp_path, wrap):
    src = OpenClipClassifier(tiny_clip, None, class_names=["road", "tree", "water"], templates=("{}",))
    sd = src.model.state_dict()
    path = tmp_path / "ckpt" / "epoch_20.pt"
    path.parent.mkdir()
    torch.save(sd if wrap == "plain" else {"epoch": 20, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    t = time.perf_counter()
    loaded = OpenClipClassifier(tiny_clip, str(path), class_names=["road", "tree", "water"], templates=("{}",))
    assert time.perf_counter() - t < 30
    x = rand_crops(3, 32, seed=1)
    torch.testing.assert_close(loaded(x, torch.zeros(3, 6)), src(x, torch.zeros(3, 6)))


def test_checkpoint_file_names_map_to_architectures():
    assert model_for_checkpoint("RemoteCLIP-ViT-B-32.pt") == "ViT-B-32"
    assert model_for_checkpoint("/w/RemoteCLIP-ViT-L-14.pt") == "ViT-L-14"
    assert model_for_checkpoint("RemoteCLIP-RN50.pt") == "RN50"
    assert model_for_checkpoint("RS5M_ViT-B-32.pt") == "ViT-B-32"
    assert model_for_checkpoint("RS5M_ViT-L-14-336.pt") == "ViT-L-14-336"
    assert model_for_checkpoint("RS5M_ViT-H-14.pt") == "ViT-H-14"
    assert model_for_checkpoint("SkyCLIP_ViT_L14_top30pct/epoch_20.pt") == "ViT-L-14"
    assert model_for_checkpoint("SkyCLIP_ViT_B32_top50pct/epoch_20.pt") == "ViT-B-32"
    with pytest.raises(ValueError, match="pass model="):
        model_for_checkpoint("my_weights.pt")


def test_open_clip_offline_errors_are_fast_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="RemoteCLIP-ViT-B-32.pt does not exist"):
        OpenClipClassifier("auto", str(tmp_path / "RemoteCLIP-ViT-B-32.pt"))
    with pytest.raises(
        FileNotFoundError, match="not available offline.*ViT-B-32/openai|ViT-B-32/openai.*not available"
    ):
        OpenClipClassifier("ViT-B-32", "openai", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hf-hub:nobody/nothing"):
        OpenClipClassifier("hf-hub:nobody/nothing", cache_dir=str(tmp_path))
    assert time.perf_counter() - t < 15
    with pytest.raises(ValueError, match="neither a file nor a pretrained tag"):
        OpenClipClassifier("ViT-B-32", "no-such-tag")
    with pytest.raises(ValueError, match="unknown dataset"):
        OpenClipClassifier("ViT-B-32", None, class_names="mars")


def test_open_clip_vit_b_32_random_init_end_to_end():
    """The real architecture, random weights: purifier -> crops 224 -> open_clip -> q."""
    clf = OpenClipClassifier("ViT-B-32", None, class_names=["road", "tree"], templates=("a satellite photo of {}.",))
    logits = torch.zeros(1, 2, 48, 48)
    logits[0, 0, :, :24] = 0.4  # low confidence everywhere, two classes
    logits[0, 1, :, 24:] = 0.4
    out = VLMPurifier(clf, 2, cell=24, max_regions=2)(torch.rand(1, 3, 48, 48), logits)
    assert out.num_regions == 2 and out.q.shape == (2, 2)
    torch.testing.assert_close(out.q.sum(1), torch.ones(2))
    assert out.timings["classify"] > 0


# --- prototypes ------------------------------------------------------------------------------------


COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9]])


def colour_scene(b, seed, h=64, w=64):
    """Images whose pixels are the colour of their class (+ noise), and the masks."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 3, (b, 4, 4), generator=g)
    masks = torch.nn.functional.interpolate(coarse[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    rgb = COLOURS[masks].permute(0, 3, 1, 2) + 0.05 * torch.randn(b, 3, h, w, generator=g)
    return rgb.clamp(0, 1), masks


def tiny_encoder():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )


def test_prototypes_classify_by_appearance():
    rgb, masks = colour_scene(4, seed=0)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    images = (rgb - 0.5) / 0.25
    clf = PrototypeClassifier(tiny_encoder(), num_classes=3, input_size=16)
    clf.fit(images, masks, image_mean=mean, image_std=std, cell=16, min_pixels=32)
    assert bool(clf.present.all()) and clf.fitted_temperature > 0
    test_rgb, test_masks = colour_scene(2, seed=1)
    logits = torch.nn.functional.one_hot(test_masks, 3).permute(0, 3, 1, 2).float() * 0.3  # all uncertain
    purifier = VLMPurifier(clf, 3, cell=16, max_regions=64, image_mean=mean, image_std=std)
    out = purifier((test_rgb - 0.5) / 0.25, logits)
    assert out.num_regions > 10
    top = out.q.argmax(1)
    assert float((top == out.regions[:, 5].long()).float().mean()) > 0.9
    torch.testing.assert_close(out.q.sum(1), torch.ones(out.num_regions))
    # fit through the purifier's normalisation gives the same prototypes
    clf2 = PrototypeClassifier(tiny_encoder(), num_classes=3, input_size=16)
    clf2.fit(images, masks, purifier=VLMPurifier(clf, 3, cell=16, image_mean=mean, image_std=std), min_pixels=32)
    torch.testing.assert_close(clf2.prototypes, clf.prototypes)


def test_several_prototypes_per_class_and_multi_scale_crops():
    rgb, masks = colour_scene(4, seed=0)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    images = (rgb - 0.5) / 0.25
    clf = PrototypeClassifier(tiny_encoder(), num_classes=3, input_size=16, prototypes_per_class=3, scales=(1.0, 0.5))
    clf.fit(images, masks, image_mean=mean, image_std=std, cell=16, min_pixels=32)
    assert clf.prototypes.shape[:2] == (3, 3)
    torch.testing.assert_close(clf.prototypes.norm(dim=2), torch.ones(3, 3))
    test_rgb, test_masks = colour_scene(2, seed=1)
    logits = torch.nn.functional.one_hot(test_masks, 3).permute(0, 3, 1, 2).float() * 0.3
    out = VLMPurifier(clf, 3, cell=16, max_regions=64, image_mean=mean, image_std=std)((test_rgb - 0.5) / 0.25, logits)
    assert float((out.q.argmax(1) == out.regions[:, 5].long()).float().mean()) > 0.9
    with pytest.raises(ValueError, match="prototypes_per_class"):
        PrototypeClassifier(tiny_encoder(), num_classes=3, prototypes_per_class=0)


def test_prototype_errors_and_missing_classes():
    clf = PrototypeClassifier(tiny_encoder(), num_classes=4, input_size=16)
    with pytest.raises(RuntimeError, match="fit"):
        clf(torch.zeros(1, 3, 16, 16), torch.zeros(1, 6))
    rgb, masks = colour_scene(2, seed=0)
    with pytest.warns(UserWarning, match=r"no fit segment for classes \[3\]"):
        clf.fit(rgb, masks, cell=16, min_pixels=32)
    q = clf(torch.randn(2, 3, 16, 16), torch.zeros(2, 6))
    torch.testing.assert_close(q.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="masks must be int64"):
        clf.fit(rgb, masks.int())
    with pytest.raises(ValueError, match="unknown encoder"):
        PrototypeClassifier("resnet9000", num_classes=2)


@pytest.mark.skipif(not os.path.isdir(DATA), reason="real tiles not found at ../shared/data (see its README.md)")
def test_prototypes_on_efficientnet_lite0_real_tile():
    import numpy as np
    from PIL import Image

    img = np.array(Image.open(os.path.join(DATA, "potsdam", "img", "2_10_0_0_512_512.png")).convert("RGB"))
    ann = np.array(Image.open(os.path.join(DATA, "potsdam", "ann", "2_10_0_0_512_512.png"))).astype(np.int64)
    images = torch.from_numpy(img).permute(2, 0, 1)[None, :, :256, :256].contiguous()  # uint8
    masks = torch.from_numpy(np.where(ann == 0, 255, ann - 1))[None, :256, :256].contiguous()
    clf = PrototypeClassifier("efficientnet_lite0", num_classes=6, input_size=64)
    assert clf.mean == (0.5, 0.5, 0.5)
    with pytest.warns(UserWarning, match="no fit segment"):
        clf.fit(images, masks, cell=64, min_pixels=256, max_per_class=4)
    q = clf(torch.randn(3, 3, 64, 64), torch.zeros(3, 6))
    assert q.shape == (3, 6)
    torch.testing.assert_close(q.sum(1), torch.ones(3))


# --- oracle ----------------------------------------------------------------------------------------


def test_oracle_q_is_the_ground_truth_of_each_segment():
    logits = torch.zeros(1, 3, 32, 32)
    logits[0, 0] = 0.5  # every pixel: class 0 at low confidence
    gt = torch.zeros(1, 32, 32, dtype=torch.long)
    gt[0, :, 8:16] = 2
    gt[0, :4, :] = 255  # ignored rows do not count
    stats = purify_stats(logits, cell=16, backend="torch")
    regions, seg = select_regions(stats, max_regions=10, min_pixels=1)
    oracle = OracleClassifier(3, gt=gt)
    oracle.observe(stats, regions, seg)
    q = oracle(torch.zeros(regions.shape[0], 3, 16, 16), regions)
    r = int(seg[0, 0, 0, 0])  # top-left cell: 12 labelled rows x (8 class 0 + 8 class 2)
    torch.testing.assert_close(q[r], torch.tensor([0.5, 0.0, 0.5]))
    r = int(seg[0, 1, 1, 0])  # bottom-right cell: all class 0
    torch.testing.assert_close(q[r], torch.tensor([1.0, 0.0, 0.0]))
    smooth = OracleClassifier(3, gt=gt, smoothing=0.3)
    smooth.observe(stats, regions, seg)
    torch.testing.assert_close(smooth(torch.zeros(len(regions), 3, 16, 16), regions)[r], torch.tensor([0.8, 0.1, 0.1]))
    box = OracleClassifier(3, gt=gt, scope="box")
    box.observe(stats, regions, seg)
    qb = box(torch.zeros(len(regions), 3, 16, 16), regions)
    torch.testing.assert_close(qb.sum(1), torch.ones(len(regions)))
    with pytest.raises(RuntimeError, match="observe"):
        OracleClassifier(3, gt=gt)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="scope"):
        OracleClassifier(3, scope="image")


def test_check_probabilities_messages():
    with pytest.raises(ValueError, match="not logits"):
        check_probabilities("clf", torch.rand(2, 3) + 0.5, 2, 3)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        check_probabilities("clf", torch.full((2, 3), 1 / 3), 2, 4)
    with pytest.raises(TypeError, match="floating"):
        check_probabilities("clf", torch.ones(2, 1, dtype=torch.long), 2, 1)


def test_a_shared_class_name_gets_its_own_datasets_phrases(tiny_clip):
    """ "water" is a class of LoveDA and DeepGlobe: each dataset's classifiers prompt with its own spec's
    phrases, not those of the first spec that names the class (SYNONYMS)."""
    from semiearth.purify.classifiers import OpenClipClassifier
    from semiearth.purify.classifiers.classes import SYNONYMS, dataset_synonyms

    assert "sea" in dataset_synonyms("deepglobe")["water"] and "sea" not in SYNONYMS["water"]
    assert dataset_synonyms("folder") is None and dataset_synonyms(["water"]) is None  # SYNONYMS applies
    clf = OpenClipClassifier(tiny_clip, None, class_names="deepglobe", templates=("{}",))
    assert "sea" in clf.synonyms["water"]
