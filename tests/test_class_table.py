"""The dataset spec is the one class table (issue 23, item 1): a toy dataset registered from this file
(no other edit) gets its classes in the config, its palette in the training panels, the VLM-PP
render and semiearth-predict's colour preview, and its synonyms in the zero-shot prompts; a config
that disagrees with the dataset is one line naming both."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from semiearth.config import ConfigError, load_config
from semiearth.data.classes import DatasetSpec, palette_of
from semiearth.data.registry import DATASET_OPTIONS, DATASET_SPECS, DATASETS, register_dataset

SPEC = DatasetSpec(
    name="toy3",
    class_names=("meadow_x", "roof_y", "pond_z"),
    palette=((10, 200, 30), (40, 50, 160), (170, 80, 90)),
    synonyms={"roof_y": ("red roof", "tiled roof")},
)
COLOURS = {tuple(c) for c in SPEC.palette}


class Toy3(torch.utils.data.Dataset):
    """Three-class stripes, 32 px (only its `spec` matters here)."""

    spec = SPEC
    NEEDS_ROOT = False

    def __init__(self, cfg, split):
        self.split = split

    def __len__(self):
        return 2

    def __getitem__(self, i):
        mask = (torch.arange(32) // 11).expand(32, 32).long()
        return {"image": mask.float().expand(3, 32, 32) / 2, "mask": mask, "name": f"toy3_{i}"}


@pytest.fixture
def toy3():
    register_dataset("toy3", Toy3)
    yield load_config(None, ["data.name=toy3", "data.options={}", "purify.method=oracle"])
    for table in (DATASETS, DATASET_OPTIONS, DATASET_SPECS):
        table.pop("toy3", None)


def colours_in(path) -> set:
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(pixels, axis=0)}


def test_config_takes_the_class_table_from_the_spec(toy3):
    assert toy3.data.num_classes == 3
    assert toy3.data.class_names == ["meadow_x", "roof_y", "pond_z"]
    assert [tuple(c) for c in toy3.data.palette] == list(SPEC.palette) == palette_of(toy3.data)
    stated = load_config(None, ["data.name=toy3", "data.num_classes=3", "data.class_names=[meadow_x, roof_y, pond_z]"])
    assert stated.data.palette == toy3.data.palette  # agreeing with the spec is fine


@pytest.mark.parametrize(
    "override, words",
    [
        ("data.num_classes=4", ["data.num_classes: the config says 4 but dataset toy3 has 3", "--set data.num_classes=4"]),
        ("data.class_names=[a, b, c]", ["data.class_names: the config says ['a', 'b', 'c']",
                                        "dataset toy3 has ['meadow_x', 'roof_y', 'pond_z']"]),
        ("data.palette=[[0,0,0],[1,1,1],[2,2,2]]", ["data.palette: the config says", "dataset toy3 has"]),
    ],
)  # fmt: skip
def test_a_config_that_disagrees_with_the_dataset_is_one_line(toy3, override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.name=toy3", override])
    text = str(err.value)
    assert "\n" not in text
    for word in words:
        assert word in text, (word, text)


def test_panels_and_the_vlmpp_render_draw_the_spec_palette(toy3, tmp_path):
    from semiearth.purify import OracleClassifier, VLMPurifier
    from semiearth.train.log import write_panels

    g = torch.Generator().manual_seed(0)
    gt = (torch.arange(64) // 22).expand(2, 64, 64).contiguous()
    logits = torch.nn.functional.one_hot(gt, 3).permute(0, 3, 1, 2).float() * 2 + torch.randn(2, 3, 64, 64, generator=g)
    images = torch.rand(2, 3, 64, 64, generator=g)
    oracle = OracleClassifier(3, gt=gt, class_names=toy3.data.class_names)
    out = VLMPurifier(oracle, 3, cell=16, low_thresh=1.0)(images, logits)
    label, conf = logits.argmax(1), logits.softmax(1).amax(1)
    pseudo = SimpleNamespace(images=images, output=out, teacher_label=label, label=out.label,
                             teacher_conf=conf, conf=out.conf)  # fmt: skip
    write_panels(str(tmp_path), 7, pseudo, toy3)
    assert COLOURS <= colours_in(tmp_path / "panels" / "iter_000007.png")
    assert COLOURS <= colours_in(tmp_path / "panels" / "iter_000007_vlmpp.png")


def test_predict_previews_in_the_spec_palette(toy3, tmp_path):
    from semiearth.cli.predict import predict_files
    from semiearth.models import build_model

    cfg = load_config(None, ["data.name=toy3", "model.name=tiny", "model.pretrained=false", "model.decoder_channels=8"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.num_classes).eval()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    written = predict_files(model, cfg, [(str(tmp_path / "a.png"), "a")], str(tmp_path / "out"), 32, 0.5,
                            progress=False)  # fmt: skip
    index = np.asarray(Image.open(written[0]))
    preview = np.asarray(Image.open(tmp_path / "out" / "a_colour.png").convert("RGB"))
    expected = np.array(SPEC.palette, np.uint8)[index]
    assert np.array_equal(preview, expected)


def test_prompts_come_from_the_spec(toy3):
    from semiearth.purify.classifiers.classes import DATASET_CLASSES, SYNONYMS, prompts_for, resolve_class_names
    from semiearth.purify.classifiers.hf_vlm import class_phrasings

    assert DATASET_CLASSES["toy3"] == ["meadow x", "roof y", "pond z"] == resolve_class_names("toy3")
    assert SYNONYMS["roof_y"] == SYNONYMS["roof y"] == ["red roof", "tiled roof"]
    assert "an aerial image of red roof." in prompts_for("roof_y")  # OpenClipClassifier's prompts
    assert prompts_for("meadow_x")[0] == "a satellite photo of meadow x."  # no synonyms: the name as words
    phrasings = class_phrasings(toy3.data.class_names)  # HFVLMClassifier's answers
    assert phrasings[1] == ["roof y", "Roof y", "red roof", "Red roof", "tiled roof", "Tiled roof"]
    assert SYNONYMS["impervious surface"][0] == "road"  # the built-in datasets' prompts, from their specs
