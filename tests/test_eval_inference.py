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
