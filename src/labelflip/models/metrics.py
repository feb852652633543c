"""Predictions and accuracies of a classifier on a dataset (batched, no
gradients)."""

from __future__ import annotations

import torch

from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier, checked_logits
from labelflip.models.encoding import index_to_bits


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Decisions for ``x`` (moved batch by batch to the classifier's device),
    on the CPU: class indices, or label bitmasks for a multi-label model."""
    return clf.decode(checked_logits(clf, x, batch_size))


def accuracy(clf: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Decision accuracy: the share of ``x`` decided as ``y`` (for a
    multi-label model, the exact-match accuracy of the whole label vector)."""
    if len(x) == 0:
        return float("nan")
    return float((predict(clf, x, batch_size) == y.cpu()).double().mean())


def per_label_accuracy(pred: torch.Tensor, y: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per-label accuracy (``num_labels``,) float64 of the label-vector
    bitmasks ``pred`` against ``y``: the share of samples whose label ``j``
    is decided right (present or absent)."""
    if len(y) == 0:
        return torch.full((num_labels,), float("nan"), dtype=torch.float64)
    diff = pred.cpu().long() ^ y.cpu().long()
    return (index_to_bits(diff, num_labels) == 0).double().mean(0)


def label_accuracy(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> float:
    """Mean per-label accuracy of a multi-label model (JMA paper, §III-C)."""
    if not clf.multilabel:
        raise LabelflipError("per-label accuracy needs a multi-label model")
    pred = predict(clf, x, batch_size)
    return float(per_label_accuracy(pred, y, clf.num_outputs).mean())
