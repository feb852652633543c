"""Training losses of the output encodings (JMA paper, §III): cross-entropy
for one-hot, the hinge for ECOC codewords, per-label binary cross-entropy for
multi-label models; and which encoding a training uses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labelflip.data import Dataset
from labelflip.errors import LabelflipError
from labelflip.models.encoding import ENCODINGS, OutputEncoding, hadamard_codebook, index_to_bits


def resolve_encoding(
    encoding: str | OutputEncoding | None,
    dataset: Dataset,
    *,
    code_length: int | None = None,
) -> OutputEncoding:
    """The output encoding to train on ``dataset`` (JMA paper, §III).

    ``None`` means the dataset's own: ``multilabel`` for a multi-label
    dataset, else ``onehot``. ``"ecoc"`` uses the Hadamard codebook of
    :func:`~labelflip.models.encoding.hadamard_codebook` (``code_length``
    bits, default the smallest power of 2 ≥ the number of classes: 16 for
    10). A multi-label dataset trains only with ``multilabel`` and a
    single-label one never does; every mismatch is a one-line error.
    """
    name = dataset.name
    if isinstance(encoding, OutputEncoding):
        if code_length is not None:
            raise LabelflipError("a code length only goes with the name of the encoding 'ecoc'")
        kind = encoding.kind
    else:
        kind = encoding or ("multilabel" if dataset.multilabel else "onehot")
        if kind not in ENCODINGS:
            raise LabelflipError(
                f"unknown output encoding '{kind}' (known: {', '.join(ENCODINGS)})"
            )
        if code_length is not None and kind != "ecoc":
            raise LabelflipError(
                f"a code length only applies to the ecoc encoding, not to '{kind}'"
            )
    if dataset.multilabel and kind != "multilabel":
        raise LabelflipError(
            f"dataset '{name}' is multi-label: it trains with the encoding 'multilabel', "
            f"not '{kind}'"
        )
    if not dataset.multilabel and kind == "multilabel":
        raise LabelflipError(
            f"the encoding 'multilabel' needs a multi-label dataset (e.g. mnist-grid); "
            f"'{name}' has one class per image"
        )
    if isinstance(encoding, OutputEncoding):
        if encoding.num_classes != dataset.num_classes:
            raise LabelflipError(
                f"{kind} encoding has {encoding.num_classes} classes but dataset '{name}' "
                f"has {dataset.num_classes}"
            )
        return encoding
    if kind == "ecoc":
        return OutputEncoding.ecoc(hadamard_codebook(dataset.num_labels, code_length))
    if kind == "multilabel":
        return OutputEncoding.multilabel(dataset.num_labels)
    return OutputEncoding.onehot(dataset.num_labels)


def ecoc_hinge_loss(z: torch.Tensor, y: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The ECOC hinge loss of the JMA paper, §III-B, averaged over the batch:
    ``L(x, y) = Σ_i max(1 − c_{y i} f_i(x), 0)`` with ``f = tanh(z)``, ``z``
    the ``(N, n)`` network outputs and ``c_y`` the true class's ±1 codeword
    (row ``y`` of the ``(l, n)`` ``codebook``)."""
    code = codebook.to(device=z.device, dtype=z.dtype)[y]
    return (1.0 - code * torch.tanh(z)).clamp_min(0.0).sum(1).mean()


def multilabel_bce_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The multi-label binary cross-entropy of the JMA paper, §III-C, averaged
    over the batch: ``L = −Σ_i [b_i log σ(z_i) + (1 − b_i) log(1 − σ(z_i))]``
    with ``b`` the label vector of the bitmask ``y`` (computed from the
    logits ``z`` (N, n), numerically stable)."""
    bits = index_to_bits(y, z.shape[1]).to(z.dtype)
    return F.binary_cross_entropy_with_logits(z, bits, reduction="none").sum(1).mean()


def ecoc_loss_scale(encoding: OutputEncoding) -> float:
    """The factor the optimiser's loss is multiplied by: ``1 / √n`` for an
    ECOC model with codewords of length ``n`` (see the module docstring), 1
    otherwise."""
    return 1.0 / math.sqrt(encoding.num_outputs) if encoding.kind == "ecoc" else 1.0


def encoding_loss(encoding: OutputEncoding, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss of network outputs ``z`` for decisions ``y``:
    cross-entropy (one-hot), the ECOC hinge loss or the multi-label BCE."""
    if encoding.kind == "ecoc":
        assert encoding.codebook is not None
        return ecoc_hinge_loss(z, y, encoding.codebook)
    if encoding.kind == "multilabel":
        return multilabel_bce_loss(z, y)
    return F.cross_entropy(z, y)
