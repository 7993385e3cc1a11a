"""model.name smp: segmentation_models_pytorch architectures in SemiEarth's model contract, built
offline (random init or a local weights file), trained 2 iterations with VLM-PP; bad input is a
one-line error naming the fix."""

import pytest
import torch
from helpers import TINY_RUN

pytest.importorskip(
    "segmentation_models_pytorch", reason="the [torchgeo] extra is not installed (pip install -e .[torchgeo])"
)

from semiearth.config import ConfigError, ModelConfig, load_config  # noqa: E402
from semiearth.models import build_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*upper bound.*")
QUICK = [
    *TINY_RUN,
    "train.iters=2",
    "train.eval_every=0",
    "train.ckpt_every=0",
    "train.panel_every=0",
    "train.threads=1",
]
QUICK += ["data.crop_size=32", "data.options={size: 32, labeled: 4, unlabeled: 8, val: 2, test: 2}"]


def smp_config(arch: str, encoder: str, **kw) -> ModelConfig:
    return ModelConfig(name="smp", arch=arch, encoder=encoder, pretrained=kw.pop("pretrained", False), **kw)


@pytest.mark.parametrize(("arch", "encoder"), [("Unet", "resnet18"), ("Segformer", "mit_b0")])
def test_contract_backbone_decoder_features_and_size(arch, encoder):
    model = build_model(smp_config(arch, encoder), 5).eval()
    assert model.size_multiple == 32
    x = torch.randn(2, 3, 64, 96)
    seen = []
    model.decoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5, 64, 96) and torch.isfinite(out).all()
    # the decoder's first argument is the encoder features (the input image is not among them)
    assert isinstance(seen[0], list) and all(f.shape[0] == 2 and f.shape[-1] < 96 for f in seen[0])
    backbone = {id(p) for p in model.backbone.parameters()}
    assert backbone and any(id(p) not in backbone for p in model.parameters())
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 40, 64))


def test_unimatch_feature_dropout_acts_on_smp_encoder_features():
    """UniMatch V2's complementary channel dropout (a pre-hook on `decoder`) changes what the decoder
    sees, and leaves the input image (passed beside the features) alone."""
    from semiearth.train.methods.unimatch_v2 import channel_dropout

    model = build_model(smp_config("Unet", "resnet18"), 3).eval()
    x = torch.randn(1, 3, 64, 64).repeat(2, 1, 1, 1)  # two identical images: rows 0 and 1 of the pair
    seen = []
    model.decoder.register_forward_hook(lambda _m, args, _out: seen.append(args))
    with torch.no_grad():
        plain = model(x)
        with channel_dropout(model, 0, 1, drop_images=1.0):
            dropped = model(x)
    (before, _), (after, image) = seen
    assert torch.equal(image, x)  # the image is passed beside the features, not among them
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(b[0] + b[1], 2 * a[0])  # each channel x2 in one view, 0 in the other
    assert not torch.allclose(after[-1][0], before[-1][0]) and not torch.allclose(plain, dropped)


@pytest.mark.parametrize(
    ("arch", "encoder", "method"),
    [("DeepLabV3Plus", "mobilenet_v2", "fixmatch"), ("Segformer", "mit_b0", "unimatch_v2")],
)
def test_trains_two_iterations_with_vlmpp(tmp_path, arch, encoder, method):
    """VLM-PP (the whole purify stage: stats, regions, crops, fusion) with the oracle classifier, whose
    q costs nothing; small encoders (4 M parameters) keep the run's checkpoint writes fast."""
    from semiearth.train import train

    sets = ["model.name=smp", f"model.arch={arch}", f"model.encoder={encoder}", f"train.method={method}"]
    sets += ["purify.method=oracle", "purify.every=1", "purify.max_regions=2", f"out_dir={tmp_path}"]
    cfg = load_config(None, [*QUICK, *sets])
    result = train(cfg)
    assert not result["interrupted"] and 0 <= result["test"]["mIoU"] <= 1
    assert (tmp_path / "purify.jsonl").read_text().strip()  # VLM-PP ran on the smp teacher's pseudo-labels
    if method == "fixmatch":  # the checkpoint rebuilds the smp model from its config, offline
        from semiearth.cli.evaluate import main

        out = tmp_path / "eval.json"
        assert main(["--checkpoint", str(tmp_path / "latest.pth"), "--json", str(out)]) == 0
        assert out.is_file()


def test_local_encoder_weights_file(tmp_path):
    import segmentation_models_pytorch as smp

    src = smp.Unet("resnet18", encoder_weights=None, classes=3)
    path = tmp_path / "resnet18_smp.pth"
    torch.save(src.state_dict(), path)  # a whole smp model: its encoder.* keys are taken
    model = build_model(smp_config("DeepLabV3Plus", "resnet18", pretrained=True, weights=str(path)), 4)
    torch.testing.assert_close(model.backbone.conv1.weight, src.encoder.conv1.weight)
    torch.save({"nothing": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not hold weights of encoder resnet18"):
        build_model(smp_config("Unet", "resnet18", pretrained=True, weights=str(tmp_path / "other.pth")), 4)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({"arch": "Unett", "encoder": "resnet18"}, ["model.arch", "'Unett'", "Unet, UnetPlusPlus", "DeepLabV3Plus"]),
        ({"arch": "Unet", "encoder": "resnet1"}, ["model.encoder", "'resnet1'", "did you mean", "tu-<any timm model>"]),
        ({"arch": "Unet", "encoder": "tu-resnetx18"}, ["not a timm model", "tu-resnet18"]),
        ({"arch": "Unet", "encoder": ""}, ["model.encoder is not set", "model.encoder=resnet34"]),
        ({"arch": "Unet", "encoder": "resnet18", "pretrained": True}, ["pretrained weights", "model.weights=FILE"]),
    ],
)
def test_bad_model_config_is_one_line_error(monkeypatch, model, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: the hub must not be waited for
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig(name="smp", **{"pretrained": False, **model}), 6)
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_cli_names_the_fix_for_an_offline_pretrained_encoder(tmp_path, capsys, monkeypatch):
    from helpers import cli_args, one_line_error

    from semiearth.cli.train import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sets = ("model.name=smp", "model.arch=Unet", "model.encoder=resnet18", "model.pretrained=true")
    assert main(cli_args(tmp_path / "run", *sets)) == 2
    one_line_error(capsys, "model.weights=FILE", "model.pretrained=false")
