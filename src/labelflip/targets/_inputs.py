"""Checks of the target strategies' inputs (logits, labels, class distances,
the output encoding), each a one-line error."""

from __future__ import annotations

import torch

from labelflip.attacks.primitives import check_labels
from labelflip.errors import LabelflipError
from labelflip.models.encoding import OutputEncoding


def _check_logits(logits: object, encoding: OutputEncoding | None = None) -> torch.Tensor:
    """``logits`` as a detached finite float ``(N, k)`` tensor: ``k >= 2``
    class scores, or ``k >= 1`` label logits for a multi-label ``encoding``;
    with an ``encoding``, ``k`` must be its number of scores."""
    if not isinstance(logits, torch.Tensor):
        raise LabelflipError(f"logits must be a torch tensor, got {type(logits).__name__}")
    if encoding is not None and encoding.kind == "multilabel":
        if logits.ndim != 2 or logits.shape[1] < 1:
            raise LabelflipError(
                f"logits of a multi-label model must have shape (N, labels), "
                f"got {tuple(logits.shape)}"
            )
    elif logits.ndim != 2 or logits.shape[1] < 2:
        raise LabelflipError(
            f"logits must have shape (N, k) with k >= 2 classes, got {tuple(logits.shape)}"
        )
    if encoding is not None and logits.shape[1] != encoding.num_scores:
        what = "labels" if encoding.kind == "multilabel" else "classes"
        raise LabelflipError(
            f"logits have {logits.shape[1]} columns, but the {encoding.kind} model has "
            f"{encoding.num_scores} {what}"
        )
    if not logits.dtype.is_floating_point:
        raise LabelflipError(f"logits must be floating-point, got dtype {logits.dtype}")
    if logits.shape[0] and not bool(torch.isfinite(logits).all()):
        raise LabelflipError("logits contain NaN or Inf values")
    return logits.detach()


def _check_labels(labels: object, n: int, k: int, device: torch.device) -> torch.Tensor | None:
    if labels is None:
        return None
    return check_labels("labels", labels, n, k, device, match="the logits")


def check_distances(strategy: str, distances: object, k: int, device: torch.device) -> torch.Tensor:
    """``distances`` as a finite float64 ``(k, k)`` tensor on ``device`` (a
    one-line error if it is missing or malformed)."""
    if distances is None:
        raise LabelflipError(
            f"target strategy '{strategy}' needs a class-distance matrix (distances=...)"
        )
    try:
        d = torch.as_tensor(distances)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LabelflipError(f"distances must be a (k, k) matrix of numbers ({exc})") from None
    if d.dtype == torch.bool or d.dtype.is_complex:
        raise LabelflipError(f"distances must be real numbers, got dtype {d.dtype}")
    if tuple(d.shape) != (k, k):
        raise LabelflipError(
            f"distances must have shape ({k}, {k}) for {k} classes, got {tuple(d.shape)}"
        )
    d = d.detach().to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(d).all()):
        raise LabelflipError("distances contain NaN or Inf values")
    return d


def _masked_argmin(score: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Per row, the lowest index of the smallest ``score`` among the allowed classes."""
    inf = torch.tensor(float("inf"), dtype=score.dtype, device=score.device)
    return torch.where(allowed, score, inf).argmin(1)


def _masked_argmax(score: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Per row, the lowest index of the largest ``score`` among the allowed classes."""
    inf = torch.tensor(float("-inf"), dtype=score.dtype, device=score.device)
    return torch.where(allowed, score, inf).argmax(1)
