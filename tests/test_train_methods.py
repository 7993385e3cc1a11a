"""The method seam: FixMatch unchanged by it, every method trains with and without VLM-PP, resumes
exactly, names itself in its checkpoint and refuses another method's."""

import os

import pytest
import torch
from helpers import TINY_RUN

from semiearth.config import ConfigError, load_config
from semiearth.train.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*(torch reference|upper bound).*")
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "fixmatch_reference.pt")
METHODS = ("supervised", "fixmatch", "mean_teacher", "unimatch_v2", "cps")
ORACLE = ["purify.method=oracle", "purify.every=1", "purify.max_regions=4"]
QUICK = [*TINY_RUN, "train.iters=2", "train.eval_every=0", "train.ckpt_every=0", "train.panel_every=0"]


@pytest.mark.parametrize("case", ["none", "oracle"])
def test_fixmatch_weights_are_bit_identical_to_the_pre_seam_trainer(tmp_path, case):
    """tests/data/fixmatch_reference.pt: final weights of 6-iteration runs recorded with the trainer
    of commit e9e60fa (FixMatch-EMA wired in), on the CPU, deterministic, one thread."""
    from semiearth.train import train

    ref = torch.load(REFERENCE, weights_only=True)
    train(load_config(None, [*ref["overrides"], *ref["cases"][case], f"out_dir={tmp_path}"]))
    weights = load_checkpoint(str(tmp_path / "latest.pth"))["weights"]
    for net in ("student", "teacher"):
        for name, expected in ref["weights"][case][net].items():
            got = weights[net][name]
            assert torch.equal(got, expected), f"{net}.{name}: max |diff| {(got.float() - expected.float()).abs().max()}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("purify", ["none", "oracle"])
def test_every_method_trains_with_and_without_vlmpp(tmp_path, method, purify):
    from semiearth.train import train

    extra = ORACLE if purify == "oracle" else []
    cfg = load_config(None, [*QUICK, f"train.method={method}", *extra, f"out_dir={tmp_path}"])
    result = train(cfg)
    assert not result["interrupted"] and 0 <= result["test"]["mIoU"] <= 1
    ckpt = load_checkpoint(str(tmp_path / "latest.pth"))
    assert ckpt["method"] == method and ckpt["default_weights"] in ckpt["weights"] or ckpt["ensembles"]
    purified = (tmp_path / "purify.jsonl").read_text().strip()
    assert bool(purified) == (purify == "oracle" and method != "supervised")
