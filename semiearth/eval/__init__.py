"""Evaluation: metrics (mIoU, per-class IoU, OA, F1) and whole-image / sliding-window inference."""

from semiearth.eval.evaluate import evaluate
from semiearth.eval.inference import predict, predict_sliding, predict_whole
from semiearth.eval.metrics import SegMetric, confusion_matrix, format_table, metrics_from_confusion

__all__ = [
    "SegMetric",
    "confusion_matrix",
    "evaluate",
    "format_table",
    "metrics_from_confusion",
    "predict",
    "predict_sliding",
    "predict_whole",
]
