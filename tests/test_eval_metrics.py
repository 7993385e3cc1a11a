import math

import torch

from semiearth.eval.metrics import SegMetric, confusion_matrix, format_table, metrics_from_confusion


def test_hand_computed():
    # 3 classes; 255 ignored
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    conf = confusion_matrix(pred, target, 3, 255)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    m = metrics_from_confusion(conf, ["a", "b", "c"])
    # IoU: a 1/(2+2-1)=1/3, b 2/(3+3-2)=1/2, c 1/(2+2-1)=1/3
    assert (
        math.isclose(m["IoU"]["a"], 1 / 3) and math.isclose(m["IoU"]["b"], 0.5) and math.isclose(m["IoU"]["c"], 1 / 3)
    )
    assert math.isclose(m["mIoU"], (1 / 3 + 0.5 + 1 / 3) / 3)
    assert math.isclose(m["OA"], 4 / 7)
    # F1 = 2tp/(gt+pred): a 2/4, b 4/6, c 2/4
    assert math.isclose(m["F1"]["b"], 2 / 3) and math.isclose(m["mF1"], (0.5 + 2 / 3 + 0.5) / 3)


def test_absent_class_is_nan_and_skipped():
    m = metrics_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 3))
    assert math.isnan(m["IoU"]["2"]) and m["mIoU"] == 1.0 and m["mF1"] == 1.0
    assert "nan" in format_table({"r": m}, ["0", "1", "2"])


def test_accumulates_and_ignores_out_of_range():
    metric = SegMetric(2, ignore_index=255)
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    metric.update(torch.tensor([1, 1]), torch.tensor([0, 7]))  # 7 is not a class: skipped
    assert metric.conf.tolist() == [[1, 1], [0, 1]]
    assert math.isclose(metric.compute()["OA"], 2 / 3)
