"""smp: any segmentation_models_pytorch architecture over any encoder it offers (`model.name: smp`).

    model: {name: smp, arch: DeepLabV3Plus, encoder: resnet50, pretrained: true, weights: resnet50.pth}

`model.arch` is an smp architecture (Unet, UnetPlusPlus, MAnet, Linknet, FPN, PSPNet, DeepLabV3,
DeepLabV3Plus, PAN, UPerNet, Segformer, DPT; any case), `model.encoder` one of smp's encoders or
`tu-<timm model>`. Encoder weights, when `model.pretrained` (the default): `model.weights` (a local
file: the encoder's state dict, an smp model's, or the timm model's for `tu-` encoders), else smp's
ImageNet weights from the Hugging Face hub (or its cache). `model.pretrained: false` is random init
and reads no file (semiearth-predict and semiearth-eval build so, then load the checkpoint).

SemiEarth's model contract (semiearth/models/__init__.py): the smp encoder is `backbone` (the
backbone learning rate; the rest takes `train.head_lr_mult`), and `decoder` receives the encoder
features as its first argument, a list of [B,C,h,w] tensors (the input image itself, which smp
encoders return first, is passed separately), so UniMatch V2's feature dropout acts on encoder
features only. The logits are resized to the input; `size_multiple` is the encoder's output stride.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from semiearth.config import ConfigError


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:
        raise ConfigError(
            f"model.name smp needs segmentation_models_pytorch ({err}): pip install -e .[torchgeo]"
        ) from None
    return smp


def architectures() -> dict[str, type]:
    """smp's architectures by class name (Unet, DeepLabV3Plus, ...)."""
    return {cls.__name__: cls for cls in _smp().MODEL_ARCHITECTURES_MAPPING.values()}


def arch_class(arch: str) -> type:
    """The smp architecture `arch` (case-insensitive), or a one-line ConfigError naming the choices."""
    archs = architectures()
    by_lower = {name.lower(): cls for name, cls in archs.items()}
    if arch.lower() not in by_lower:
        raise ConfigError(
            f"model.arch: unknown segmentation_models_pytorch architecture {arch!r}; choices: {', '.join(archs)}"
        )
    return by_lower[arch.lower()]


def check_encoder(encoder: str) -> None:
    """A one-line ConfigError unless `encoder` is one of smp's encoders or `tu-<timm model>`."""
    import timm

    if encoder.startswith("tu-"):
        if timm.is_model(encoder[3:].split(".")[0]):
            return
        close = difflib.get_close_matches(encoder[3:], timm.list_models(), n=3)
        raise ConfigError(
            f"model.encoder: {encoder!r} is not a timm model{f' (did you mean tu-{close[0]}?)' if close else ''}; "
            "write tu-<name> with a name from timm.list_models()"
        )
    names = _smp().encoders.get_encoder_names()
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"model.encoder: unknown segmentation_models_pytorch encoder {encoder!r}{hint}; choices: "
            f"{', '.join(names)}, or tu-<any timm model>"
        )


def hub_weights(encoder: str) -> str | bool:
    """smp's `encoder_weights` value for pretrained `encoder`: True for `tu-` (timm picks the tag),
    else the encoder's ImageNet weights (or its first pretrained set)."""
    if encoder.startswith("tu-"):
        return True
    settings = _smp().encoders.encoders[encoder]["pretrained_settings"]
    if not settings:
        raise ConfigError(f"model.encoder: {encoder} has no pretrained weights in smp; set model.pretrained=false")
    return "imagenet" if "imagenet" in settings else next(iter(settings))


def read_state(path: str) -> dict:
    """A state dict from a .safetensors or torch file (weights_only)."""
    if not os.path.isfile(os.path.expanduser(path)):
        raise ConfigError(f"model.weights: no such file {path}; give the encoder's weights file or leave it empty")
    path = os.path.expanduser(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common wrappers of checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_encoder_weights(encoder: nn.Module, path: str, name: str) -> None:
    """Load `path` into the smp encoder: the encoder's own state dict, an smp model's (keys
    `encoder.*`), or, for `tu-` encoders, the timm model's (classifier keys are left out)."""
    state = read_state(path)
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    missing: list[str] = []
    for target in (encoder, getattr(encoder, "model", None)):
        if target is None:
            continue
        own = target.state_dict()
        missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
        if not missing:
            target.load_state_dict({k: state[k] for k in own})
            return
    raise ConfigError(
        f"model.weights: {path} does not hold weights of encoder {name} ({len(missing)} tensors missing or of "
        f"another shape, e.g. {missing[:3]}); give that encoder's state dict, or model.pretrained=false"
    )


def _one_line(err: Exception) -> str:
    return re.sub(r"\s+", " ", f"{type(err).__name__}: {err}").strip()[:300]


@contextlib.contextmanager
def hub_or_cache():
    """While active, the Hugging Face hub is asked only when it is reachable; otherwise its cache
    answers at once (instead of minutes of retries), so an offline machine fails fast."""
    import huggingface_hub.constants as hf

    from semiearth.models.dinov2_dpt import hub_reachable

    before = hf.HF_HUB_OFFLINE
    hf.HF_HUB_OFFLINE = before or not hub_reachable()
    try:
        yield hf.HF_HUB_OFFLINE
    finally:
        hf.HF_HUB_OFFLINE = before


def create_smp(arch: str, encoder: str, num_classes: int, pretrained: bool, weights: str) -> nn.Module:
    """The smp model; when `pretrained`, its encoder weights from `weights` or else the hub or its
    cache; otherwise random init."""
    cls = arch_class(arch)
    check_encoder(encoder)
    use_hub = pretrained and not weights
    offline = False
    try:
        with hub_or_cache() if use_hub else contextlib.nullcontext(False) as offline:
            model = cls(
                encoder_name=encoder, encoder_weights=hub_weights(encoder) if use_hub else None, classes=num_classes
            )
    except ConfigError:
        raise
    except Exception as err:
        if use_hub:
            why = "the Hugging Face hub is unreachable and they are not in its cache" if offline else _one_line(err)
            raise ConfigError(
                f"model.encoder {encoder}: pretrained weights are needed ({why}); set model.weights=FILE (the "
                "encoder's weights, .pth or .safetensors) or model.pretrained=false for random init"
            ) from None
        raise ConfigError(
            f"model: smp {cls.__name__} with encoder {encoder} cannot be built: {_one_line(err)}"
        ) from None
    if pretrained and weights:
        load_encoder_weights(model.encoder, weights, encoder)
    return model


class SMPDecoder(nn.Module):
    """smp's decoder and segmentation head: encoder features (list) -> logits at the decoder's scale.

    `extra` is what the smp decoder needs besides the features: the input image for most
    architectures (smp encoders return it as feature 0), the prefix tokens for DPT."""

    def __init__(self, decoder: nn.Module, head: nn.Module, dpt: bool):
        super().__init__()
        self.decoder, self.head, self.dpt = decoder, head, dpt

    def forward(self, features: list[torch.Tensor], extra) -> torch.Tensor:
        out = self.decoder(features, extra) if self.dpt else self.decoder([extra, *features])
        return self.head(out)


class SMPSegmenter(nn.Module):
    """An smp model in SemiEarth's contract: backbone (smp encoder) + decoder, logits [B,C,H,W]."""

    def __init__(self, arch: str, encoder: str, num_classes: int, pretrained: bool = False, weights: str = ""):
        super().__init__()
        model = create_smp(arch, encoder, num_classes, pretrained, weights)
        dpt = type(model).__name__ == "DPT"
        self.arch, self.encoder_name = type(model).__name__, encoder
        self.backbone = model.encoder
        self.decoder = SMPDecoder(model.decoder, model.segmentation_head, dpt)
        self.size_multiple = int(model.encoder.output_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,H,W] normalised, H and W multiples of size_multiple -> logits [B,C,H,W]."""
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"smp {self.arch}: input {h}x{w} is not a multiple of {self.size_multiple}")
        feats = self.backbone(x)
        if self.decoder.dpt:
            features, extra = feats
        else:
            extra, *features = feats
        logits = self.decoder(list(features), extra)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits
