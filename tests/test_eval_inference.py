import pytest
import torch
from torch import nn

from semiearth.config import DataConfig, EvalConfig
from semiearth.eval import evaluate, predict, predict_sliding, predict_whole


def pointwise_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


@pytest.mark.parametrize(
    "size, window, stride", [((20, 27), 8, 5), ((16, 16), 16, 8), ((9, 30), 12, 7), ((6, 6), 8, 4)]
)
def test_sliding_equals_whole_for_a_pointwise_model(size, window, stride):
    model = pointwise_model()
    x = torch.randn(2, 3, *size)
    whole = predict_whole(model, x)
    slide = predict_sliding(model, x, window, stride)
    assert slide.shape == whole.shape
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(slide.sum(1), torch.ones(2, *size))


def test_whole_resizes_to_the_multiple():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    out = predict_whole(Spy(), torch.zeros(1, 3, 30, 50), multiple=14)
    assert seen == [(28, 56)] and out.shape == (1, 3, 30, 50)
    with pytest.raises(ValueError, match="eval.mode"):
        predict(Spy(), torch.zeros(1, 3, 4, 4), mode="tiles")


def test_evaluate_perfect_model():
    class Oracle(nn.Module):  # predicts class 1 where the red channel is high
        def forward(self, x):
            return torch.cat([-x[:, :1], x[:, :1]], 1) * 10

    items = []
    for i in range(3):
        mask = (torch.rand(8, 8, generator=torch.Generator().manual_seed(i)) > 0.5).long()
        image = torch.zeros(3, 8, 8)
        image[0] = mask.float()
        items.append({"image": image, "mask": mask, "name": str(i)})
    data = DataConfig(num_classes=2, class_names=["a", "b"], mean=[0.5] * 3, std=[0.5] * 3)
    for mode in ("whole", "slide"):
        m = evaluate(Oracle(), items, data, EvalConfig(mode=mode, window=4, stride=3))
        assert m["mIoU"] == 1.0 and m["OA"] == 1.0


def reference_sliding(model, images, window, stride, multiple=1):
    """The whole-image accumulation predict_sliding was before it became a consumer of
    sliding_average (issue 23): every window of the padded batch, sums and counts over the image."""
    b, _, h, w = images.shape
    x = torch.nn.functional.pad(images, (0, max(0, window - w), 0, max(0, window - h)))
    H, W = x.shape[-2:]

    def starts(n):
        return [0] if n <= window else sorted(set(range(0, n - window, stride)) | {n - window})

    probs, count = None, torch.zeros(1, 1, H, W)
    for y in starts(H):
        for xs in starts(W):
            p = predict_whole(model, x[..., y : y + window, xs : xs + window], multiple)
            probs = torch.zeros(b, p.shape[1], H, W) if probs is None else probs
            probs[..., y : y + window, xs : xs + window] += p
            count[..., y : y + window, xs : xs + window] += 1
    return (probs / count)[..., :h, :w]


@pytest.mark.parametrize(
    "size, window, stride, multiple",
    [((20, 27), 8, 5, 1), ((16, 16), 16, 8, 1), ((9, 30), 12, 7, 4), ((6, 6), 8, 4, 4), ((70, 45), 32, 24, 4)],
)
def test_sliding_is_bit_identical_to_the_whole_image_accumulation(size, window, stride, multiple):
    from semiearth.config import ModelConfig
    from semiearth.models import build_model

    torch.manual_seed(0)
    tiny = build_model(ModelConfig(name="tiny", pretrained=False, decoder_channels=8), 5).eval()
    for model in (pointwise_model(), tiny):
        for b in (1, 2):
            x = torch.randn(b, 3, *size)
            assert torch.equal(
                predict_sliding(model, x, window, stride, multiple),
                reference_sliding(model, x, window, stride, multiple),
            )
