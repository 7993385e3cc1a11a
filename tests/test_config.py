import pytest

from semiearth.config import Config, ConfigError, config_from_dict, config_to_dict, load_config, save_config


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=0.01", "data.mean=[0.5,0.5,0.5]", "purify=none", "train.iters=7"])
    assert isinstance(cfg, Config)
    assert cfg.train.lr == 0.01 and cfg.train.iters == 7
    assert cfg.data.mean == [0.5, 0.5, 0.5]
    assert cfg.purify.method == "none"
    assert cfg.data.ignore_index == 255 and cfg.data.value_scale == 255.0


def test_yaml_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  crop_size: 64\nmodel:\n  name: tiny\npurify: none\ntrain:\n  lr: 1\n")
    cfg = load_config(str(path), ["purify.every=3"])
    assert cfg.data.crop_size == 64 and cfg.model.name == "tiny"
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # ints are fine for floats
    assert cfg.purify.method == "none" and cfg.purify.every == 3
    save_config(cfg, str(tmp_path / "saved.yaml"))
    assert config_to_dict(load_config(str(tmp_path / "saved.yaml"))) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"train": {"lrr": 1}}, ["train.lrr", "allowed", "lr", "iters"]),
        ({"bogus": 1}, ["bogus", "allowed", "data", "train"]),
        ({"data": {"splits": {"training": "a.txt"}}}, ["data.splits.training", "labeled"]),
        ({"train": {"iters": "many"}}, ["train.iters", "int"]),
        ({"train": {"iters": 1.5}}, ["train.iters", "int"]),
        ({"train": {"hflip": "yes"}}, ["train.hflip", "bool"]),
        ({"model": {"name": "resnet"}}, ["model.name", "effnet_lite0_fpn"]),
        ({"data": {"mean": "0.5"}}, ["data.mean", "list"]),
        ({"data": {"class_names": ["a"]}}, ["class_names", "num_classes"]),
        ({"purify": {"methd": "x"}}, ["purify.methd", "method"]),
        ({"purify": "magic"}, ["purify.method", "prototype"]),
    ],
)
def test_errors_name_the_key(data, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    for word in words:
        assert word in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(None, ["train.nope=1"])


def test_demo_config_loads():
    cfg = load_config("demo")
    assert cfg.compare_baseline and cfg.model.name == "effnet_lite0_fpn" and cfg.purify.method == "prototype"
