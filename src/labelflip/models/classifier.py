"""The :class:`Classifier` wrapper every attack works on (design notes, "Contracts").

Inputs live in the box ``bounds`` (default ``[0, 1]``) and normalisation
``(x - mean) / std`` happens inside the wrapper, so every epsilon an attack
uses is in input units. The wrapped model is always in eval mode; the wrapper
follows the device of its input.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from labelflip.errors import LabelflipError, LabelflipWarning
from labelflip.models.encoding import OutputEncoding


class Classifier(nn.Module):
    """A trained model plus what attacks need to know about it.

    ``forward(x)`` returns the class scores for inputs ``x`` of shape
    ``(N, *input_shape)`` with values inside ``bounds``: the logits of a
    one-hot model, the codeword correlations ``tanh(z)·c_k`` of an ECOC model,
    the per-label logits of a multi-label model (see
    :mod:`labelflip.models.encoding`); :meth:`outputs` returns the network's
    raw outputs ``z`` and :meth:`predict` the decisions. Gradients flow
    through it (attacks differentiate it); it never switches to training mode.

    ``class_names`` names the ``num_classes`` classes (one-hot, ECOC) or, for
    a multi-label ``encoding``, the ``num_classes`` labels; then
    :attr:`label_names` keeps them and :attr:`num_classes` becomes the number
    of label vectors, ``2**labels`` (decisions are bitmasks).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        input_shape: Sequence[int] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        encoding: OutputEncoding | None = None,
    ) -> None:
        super().__init__()
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise LabelflipError(f"bounds must satisfy lower < upper, got ({lo}, {hi})")
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise LabelflipError(
                f"{len(class_names)} class names given for a model with {num_classes} classes"
            )
        if encoding is None:
            encoding = OutputEncoding.onehot(num_classes)
        named = encoding.num_outputs if encoding.kind == "multilabel" else encoding.num_classes
        if named != num_classes:
            raise LabelflipError(
                f"{encoding.kind} encoding has {named} classes, but {num_classes} were named"
            )
        self.model = model
        self.encoding = encoding
        self.num_outputs = encoding.num_outputs
        self.num_classes = encoding.num_classes
        self.label_names = tuple(str(c) for c in class_names)
        self._class_names: tuple[str, ...] | None = (
            self.label_names if encoding.kind != "multilabel" else None
        )
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape else None
        self.bounds = (lo, hi)
        channels = self.input_shape[0] if self.input_shape else None
        self.register_buffer("mean", _channel_vector(mean, 0.0, channels, "mean"))
        self.register_buffer("std", _channel_vector(std, 1.0, channels, "std"))
        if bool((self.std <= 0).any()):
            raise LabelflipError("normalisation std must be positive")
        super().train(False)

    @property
    def class_names(self) -> tuple[str, ...]:
        """One name per decision class (for multi-label: per label vector,
        e.g. ``3+7``, built on first use)."""
        if self._class_names is None:
            self._class_names = tuple(
                self.encoding.class_name(i, self.label_names) for i in range(self.num_classes)
            )
        return self._class_names

    @property
    def multilabel(self) -> bool:
        return self.encoding.kind == "multilabel"

    def train(self, mode: bool = True) -> Classifier:
        """Refuse training mode: attacks must see the deterministic eval model."""
        if mode:
            warnings.warn(
                "Classifier stays in eval mode (dropout and batch-norm statistics frozen); "
                "train the underlying model directly instead",
                stacklevel=2,
            )
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding.scores(self.outputs(x))

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's raw outputs ``z`` (the logits before tanh/sigmoid/softmax)."""
        if self.model.training:
            self._force_eval()
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise LabelflipError(
                f"input shape {tuple(x.shape[1:])} does not match the model's "
                f"input shape {self.input_shape}"
            )
        if self.mean.device != x.device:
            self.to(x.device)
        return self.model((x - self.mean) / self.std)

    def _force_eval(self) -> None:
        """Switch every submodule to eval mode, even past a ``train()`` override
        that keeps the model stochastic (e.g. Monte-Carlo dropout); say so once."""
        if not getattr(self, "_warned_train_mode", False):
            self._warned_train_mode = True
            warnings.warn(
                f"the wrapped model ({type(self.model).__name__}) was in train mode; "
                "switched to eval (dropout off, batch-norm statistics frozen)",
                LabelflipWarning,
                stacklevel=3,
            )
        for m in self.model.modules():
            m.training = False

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Decision per input (class index, or label bitmask for multi-label),
        computed in batches without gradients."""
        if len(x) == 0:
            return torch.empty(0, dtype=torch.long, device=x.device)
        return torch.cat(
            [self.decode(self(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )

    def decode(self, scores: torch.Tensor) -> torch.Tensor:
        """Decisions from the scores ``forward`` returned."""
        return self.encoding.decode(scores)

    def check_inputs(self, x: torch.Tensor, atol: float = 1e-6) -> None:
        """Raise a one-line error if ``x`` has NaN/Inf or leaves ``bounds``."""
        if not bool(torch.isfinite(x).all()):
            raise LabelflipError("inputs contain NaN or Inf values")
        lo, hi = self.bounds
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - atol or xmax > hi + atol:
            raise LabelflipError(
                f"inputs span [{xmin:g}, {xmax:g}], outside the model's bounds [{lo:g}, {hi:g}]"
            )

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` clipped into ``bounds``."""
        return x.clamp(*self.bounds)


@torch.no_grad()
def checked_logits(
    clf: Classifier, x: torch.Tensor, batch_size: int = 512, what: str = "the model"
) -> torch.Tensor:
    """The logits of ``x`` (computed in batches on the classifier's device,
    returned on the CPU), checked as a model's first contact with data: a
    model that fails on the inputs, or whose outputs are not ``(N, classes)``
    finite logits, is a one-line :class:`LabelflipError`."""
    dev = clf.mean.device
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size].to(dev)
        try:
            logits = clf(batch)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise LabelflipError(
                f"{what} fails on inputs of shape {tuple(batch.shape[1:])}: {first}"
            ) from None
        check_logits(logits, clf.encoding.num_scores, what, finite=False)
        out.append(logits.cpu())
    logits = torch.cat(out) if out else torch.empty(0, clf.encoding.num_scores)
    check_logits(logits, clf.encoding.num_scores, what)
    return logits


def check_logits(
    logits: torch.Tensor, num_classes: int, what: str = "the model", *, finite: bool = True
) -> None:
    """Raise a one-line error unless ``logits`` is ``(N, num_classes)`` (and finite)."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise LabelflipError(
            f"{what} returns outputs of shape {tuple(logits.shape[1:])} per input, expected "
            f"{num_classes} logits (one per class)"
        )
    if not finite:
        return
    bad = ~torch.isfinite(logits).all(dim=1)
    if bool(bad.any()):
        raise LabelflipError(
            f"{what} returns NaN or Inf logits for {int(bad.sum())} of {len(logits)} inputs "
            f"(first at position {int(bad.nonzero()[0])}); check its weights and normalisation"
        )


def _channel_vector(
    values: Sequence[float] | None, default: float, channels: int | None, what: str
) -> torch.Tensor:
    if values is None:
        v = torch.tensor([default], dtype=torch.float32)
    else:
        v = torch.as_tensor(list(values), dtype=torch.float32).flatten()
    if channels is not None and v.numel() not in (1, channels):
        raise LabelflipError(f"{what} has {v.numel()} values for inputs with {channels} channels")
    return v.view(1, -1, 1, 1)
