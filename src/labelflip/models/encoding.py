"""Output encodings: how a model's outputs become a decision (JMA paper, §III).

A classifier's network produces ``n`` outputs ``z`` (the logits, before any
activation). Three encodings turn them into a decision:

- ``onehot``: ``n = l`` classes, the decision is ``argmax z`` (eq. 1).
- ``ecoc``: each of the ``l`` classes has a codeword ``c_k ∈ {-1, +1}^n``
  (rows of the codebook ``C``, by default Hadamard codewords, §III-B); the
  outputs are ``f = tanh(z)`` and the decision is ``argmax_k f·c_k`` (eq. 2:
  ``p_k ∝ max(f·c_k, 0)``, whose argmax is the argmax of ``f·c_k`` whenever
  one correlation is positive; we take the argmax of the correlations in
  every case, which also breaks the all-negative tie of eq. 2).
- ``multilabel``: ``n`` independent labels with sigmoid outputs, each present
  when its score exceeds 0.5, i.e. when ``z_j > 0`` (§III-C). The decision
  is the label *vector*; labelflip stores it as one integer, the bitmask
  ``Σ_j bit_j · 2^j``, so that records, targets and success keep one integer
  per sample (a multi-label model has ``2^n`` decision classes).

:class:`OutputEncoding` is what a :class:`~labelflip.models.Classifier`
carries: ``scores(z)`` is what the classifier's ``forward`` returns (class
scores ``f·c_k`` for ECOC, the logits otherwise) and ``decode(scores)`` is
its prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labelflip._text import label_set_name
from labelflip.errors import LabelflipError

ENCODINGS = ("onehot", "ecoc", "multilabel")

# Label vectors are stored as int64 bitmasks; 2**n decision classes must fit.
MAX_LABELS = 30


def sylvester_hadamard(order: int) -> torch.Tensor:
    """The ``order × order`` Sylvester-Hadamard matrix (entries ±1), ``order`` a power of 2."""
    if order < 1 or order & (order - 1):
        raise LabelflipError(f"a Sylvester-Hadamard matrix needs a power-of-2 order, got {order}")
    h = torch.ones(1, 1)
    while h.shape[0] < order:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_codebook(num_classes: int, length: int | None = None) -> torch.Tensor:
    """The first ``num_classes`` rows of the Sylvester-Hadamard matrix of
    order ``length`` (default: the smallest power of 2 ≥ ``num_classes``,
    16 for 10 classes as in the JMA paper, §VI-A2). Rows are pairwise
    orthogonal, so any two codewords differ in ``length / 2`` bits."""
    if num_classes < 2:
        raise LabelflipError(f"an ECOC codebook needs at least 2 classes, got {num_classes}")
    if length is None:
        length = 1 << (num_classes - 1).bit_length()
    if length < num_classes:
        raise LabelflipError(
            f"a Hadamard codebook of length {length} has fewer than {num_classes} codewords"
        )
    return sylvester_hadamard(length)[:num_classes].clone()


def bits_to_index(bits: torch.Tensor) -> torch.Tensor:
    """Label vectors ``bits`` (N, n), nonzero = present, as int64 bitmasks (N,)."""
    n = bits.shape[-1]
    weights = torch.tensor([1 << j for j in range(n)], dtype=torch.long, device=bits.device)
    return ((bits != 0).long() * weights).sum(-1)


def index_to_bits(index: torch.Tensor, n: int) -> torch.Tensor:
    """Bitmasks ``index`` (N,) as label vectors (N, n) of 0/1 (int64)."""
    shifts = torch.arange(n, device=index.device)
    return (index.long().unsqueeze(-1) >> shifts) & 1


@dataclass(frozen=True, eq=False)
class OutputEncoding:
    """How ``num_outputs`` network outputs decode into a decision.

    ``codebook`` is the ``(l, n)`` ±1 codeword matrix of an ECOC model (None
    otherwise). ``num_classes`` is the number of decision classes: ``l`` for
    one-hot and ECOC, ``2**n`` label vectors for multi-label.
    """

    kind: str
    num_outputs: int
    codebook: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENCODINGS:
            raise LabelflipError(
                f"unknown output encoding '{self.kind}' (known: {', '.join(ENCODINGS)})"
            )
        if self.num_outputs < 1:
            raise LabelflipError(f"an encoding needs at least one output, got {self.num_outputs}")
        if self.kind == "ecoc":
            c = self.codebook
            if c is None or c.ndim != 2 or c.shape[1] != self.num_outputs or c.shape[0] < 2:
                raise LabelflipError(
                    f"an ECOC encoding needs a (classes, {self.num_outputs}) codebook"
                )
            if not bool(((c == 1) | (c == -1)).all()):
                raise LabelflipError("ECOC codewords must have entries -1 or +1")
            if len({tuple(r) for r in c.tolist()}) != c.shape[0]:
                raise LabelflipError("ECOC codewords must be distinct")
        elif self.codebook is not None:
            raise LabelflipError(f"a {self.kind} encoding has no codebook")
        if self.kind == "multilabel" and self.num_outputs > MAX_LABELS:
            raise LabelflipError(
                f"multi-label models support at most {MAX_LABELS} labels, got {self.num_outputs}"
            )

    # ------------------------------------------------------------------ builders

    @classmethod
    def onehot(cls, num_classes: int) -> OutputEncoding:
        return cls("onehot", int(num_classes))

    @classmethod
    def ecoc(cls, codebook: torch.Tensor | Sequence[Sequence[float]]) -> OutputEncoding:
        c = torch.as_tensor(codebook, dtype=torch.float32)
        if c.ndim != 2:
            raise LabelflipError("an ECOC codebook must be a (classes, length) matrix")
        return cls("ecoc", int(c.shape[1]), c)

    @classmethod
    def multilabel(cls, num_labels: int) -> OutputEncoding:
        return cls("multilabel", int(num_labels))

    # -------------------------------------------------------------------- sizes

    @property
    def num_classes(self) -> int:
        if self.kind == "ecoc":
            assert self.codebook is not None
            return int(self.codebook.shape[0])
        if self.kind == "multilabel":
            return 1 << self.num_outputs
        return self.num_outputs

    @property
    def num_scores(self) -> int:
        """Columns of :meth:`scores`: classes for one-hot/ECOC, labels for multi-label."""
        return self.num_outputs if self.kind != "ecoc" else self.num_classes

    # ---------------------------------------------------------------- decisions

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """What the classifier's ``forward`` returns for network outputs ``z``:
        the ECOC correlations ``tanh(z) · c_k`` (N, l), otherwise ``z`` itself."""
        if self.kind == "ecoc":
            assert self.codebook is not None
            return torch.tanh(z) @ self.codebook.to(device=z.device, dtype=z.dtype).T
        return z

    def decode(self, scores: torch.Tensor) -> torch.Tensor:
        """Decisions (N,) int64 from :meth:`scores`: the argmax class, or the
        bitmask of the labels with ``z_j > 0`` (sigmoid score > 0.5)."""
        if self.kind == "multilabel":
            return bits_to_index(scores > 0)
        return scores.argmax(-1)

    def class_name(self, index: int, names: Sequence[str]) -> str:
        """Name of decision ``index`` (``names``: class names, or label names
        for multi-label)."""
        if self.kind == "multilabel":
            return label_set_name(index, names)
        return str(names[index])

    def code(self, classes: torch.Tensor) -> torch.Tensor:
        """The ±1 target code per decision (N, n): the codeword ``c_t`` for
        ECOC, the ±1 label vector for multi-label, ``2·e_t − 1`` for one-hot."""
        if self.kind == "ecoc":
            assert self.codebook is not None
            return self.codebook.to(classes.device)[classes]
        if self.kind == "multilabel":
            return index_to_bits(classes, self.num_outputs).float() * 2 - 1
        eye = torch.eye(self.num_outputs, device=classes.device)
        return eye[classes] * 2 - 1

    # ------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.codebook is not None:
            out["codebook"] = [[int(v) for v in row] for row in self.codebook.tolist()]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, num_labels: int) -> OutputEncoding:
        """The encoding stored in a checkpoint sidecar (``None`` or missing
        means one-hot); ``num_labels`` is the number of class (or label) names."""
        raw = dict(raw or {"kind": "onehot"})
        kind = raw.get("kind", "onehot")
        if kind == "ecoc":
            if "codebook" not in raw:
                raise LabelflipError("an ECOC checkpoint must store its codebook")
            enc = cls.ecoc(raw["codebook"])
            if enc.num_classes != num_labels:
                raise LabelflipError(
                    f"ECOC codebook has {enc.num_classes} codewords for {num_labels} classes"
                )
            return enc
        if kind == "multilabel":
            return cls.multilabel(num_labels)
        if kind == "onehot":
            return cls.onehot(num_labels)
        raise LabelflipError(f"unknown output encoding '{kind}' (known: {', '.join(ENCODINGS)})")
