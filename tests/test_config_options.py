"""Each built-in registry member's options model (semiearth/options.py) matches the member: a
classifier's model names exactly the keyword arguments its constructor takes from YAML (the config
and from_config fill in the others), a method's model is what the method reads, and every entry of the
light tables resolves to a pydantic model. A member registered from outside with its own model is
checked against it at load; one without a model takes any options."""

import inspect

import pytest
from pydantic import BaseModel

from semiearth.config import ConfigError, load_config
from semiearth.data.registry import DATASET_OPTIONS, DATASETS, dataset_class
from semiearth.options import Options
from semiearth.registry import CLASSIFIER_OPTIONS, CLASSIFIERS, CONFIG_ARGS, METHOD_OPTIONS, METHODS, resolve

NOT_FROM_YAML = {"self", "gt", "tokenizer", "processor"}  # tensors and objects, given from code only


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_models_name_the_constructor_arguments(name):
    cls, model = resolve(CLASSIFIERS[name]), resolve(CLASSIFIER_OPTIONS[name])
    params = inspect.signature(cls.__init__).parameters
    taken = {p for p in params if p not in NOT_FROM_YAML and p not in CONFIG_ARGS}
    if name == "prototype":
        taken.add("device")  # from_config passes the trainer's device unless the options say otherwise
    assert set(model.model_fields) == taken, (name, set(model.model_fields) ^ taken)
    assert callable(getattr(cls, "from_config", None))  # the config assumes every built-in can be built


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_models_are_the_methods_options(name):
    assert resolve(METHODS[name]).Options is resolve(METHOD_OPTIONS[name])


@pytest.mark.parametrize("name", sorted(DATASET_OPTIONS))
def test_dataset_models_are_pydantic(name):
    model = resolve(DATASET_OPTIONS[name])
    assert issubclass(model, BaseModel) and name in DATASETS
    if name != "deepglobe":  # its class is another module's; the table names the base class's model
        assert getattr(dataset_class(name), "Options", model) is model


class ToyOptions(Options):
    width: int = 3


class ToyMethodWithModel:
    """Only what the config reads of a method registered as a class: `semi` and `Options`."""

    semi = True
    Options = ToyOptions


def test_a_member_registered_from_outside_declares_or_skips_its_model():
    from semiearth.registry import register

    register(METHODS, METHOD_OPTIONS, "toy_with_model", ToyMethodWithModel)
    register(METHODS, METHOD_OPTIONS, "toy_by_name", "tests.nowhere:Method", options=ToyOptions)
    register(METHODS, METHOD_OPTIONS, "toy_without_model", "tests.nowhere:Method")  # never imported
    try:
        for name in ("toy_with_model", "toy_by_name"):
            cfg = load_config(None, [f"train.method={name}", "train.method_options={width: 5}"])
            assert cfg.train.method_options == {"width": 5}
            with pytest.raises(ConfigError, match=r"unknown key 'train.method_options.height'.*allowed keys in "
                               r"train.method_options: width \(options of train.method toy_"):  # fmt: skip
                load_config(None, [f"train.method={name}", "train.method_options={height: 5}"])
        cfg = load_config(None, ["train.method=toy_without_model", "train.method_options={anything: [1]}"])
        assert cfg.train.method_options == {"anything": [1]}
    finally:
        for name in ("toy_with_model", "toy_by_name", "toy_without_model"):
            METHODS.pop(name), METHOD_OPTIONS.pop(name, None)
