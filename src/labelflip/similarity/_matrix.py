"""The :class:`ClassDistance` container shared by every class-distance matrix.

A class distance is a ``(k, k)`` float64 matrix ``D`` over ``k`` named
classes: finite, non-negative, symmetric, zero on the diagonal. It travels as
JSON (``to_dict``/``save``/``load``) together with ``info``, a JSON-friendly
dict recording how it was made (model layer, split, image counts, timings,
hierarchy, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._files import read_user_text
from labelflip.errors import LabelflipError

SYMMETRY_TOL = 1e-9


@dataclass(frozen=True, eq=False)
class ClassDistance:
    """A validated ``(k, k)`` class-distance matrix with its class names.

    ``matrix`` is stored as a private float64 copy (left writable so that
    ``torch.as_tensor`` takes it without a warning; do not modify it),
    exactly symmetrised
    (``(D + D.T) / 2``, a change of at most ``1e-9``) with an exact zero
    diagonal. ``info`` holds provenance and must be JSON-serialisable for
    :meth:`save`.
    """

    name: str
    matrix: np.ndarray
    class_names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise LabelflipError(
                f"class distance name must be a non-empty string, got {self.name!r}"
            )
        if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
            raise LabelflipError("class_names must be a sequence of strings")
        names = tuple(str(c) for c in self.class_names)
        if len(set(names)) != len(names):
            dup = next(c for c in names if names.count(c) > 1)
            raise LabelflipError(f"class distance '{self.name}': class name '{dup}' appears twice")
        try:
            m = np.array(self.matrix, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise LabelflipError(
                f"class distance '{self.name}': matrix is not numeric ({exc})"
            ) from None
        k = len(names)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise LabelflipError(
                f"class distance '{self.name}': matrix must be square, got shape {m.shape}"
            )
        if m.shape[0] != k:
            raise LabelflipError(
                f"class distance '{self.name}': matrix is {m.shape[0]}x{m.shape[1]} "
                f"but {k} class names were given"
            )
        if k == 0:
            raise LabelflipError(f"class distance '{self.name}' has no classes")
        if not np.all(np.isfinite(m)):
            raise LabelflipError(f"class distance '{self.name}': matrix has NaN or Inf values")
        if np.any(m < 0):
            raise LabelflipError(
                f"class distance '{self.name}': matrix has negative entries (min {m.min():g})"
            )
        asym = float(np.max(np.abs(m - m.T)))
        if asym > SYMMETRY_TOL:
            raise LabelflipError(
                f"class distance '{self.name}': matrix is not symmetric "
                f"(max |D - D^T| = {asym:.3g})"
            )
        diag = float(np.max(np.abs(np.diag(m))))
        if diag > SYMMETRY_TOL:
            raise LabelflipError(
                f"class distance '{self.name}': diagonal must be zero (max |D_ii| = {diag:.3g})"
            )
        m = (m + m.T) / 2
        np.fill_diagonal(m, 0.0)
        if not isinstance(self.info, Mapping):
            raise LabelflipError(f"class distance '{self.name}': info must be a dict")
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "info", dict(self.info))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassDistance):
            return NotImplemented
        return (
            self.name == other.name
            and self.class_names == other.class_names
            and np.array_equal(self.matrix, other.matrix)
            and self.info == other.info
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the matrix as nested lists of floats)."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "matrix": self.matrix.tolist(),
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassDistance:
        """Inverse of :meth:`to_dict`; a malformed dict raises LabelflipError."""
        if not isinstance(d, Mapping):
            raise LabelflipError(f"a class distance must be a JSON object, got {type(d).__name__}")
        missing = [key for key in ("name", "class_names", "matrix") if key not in d]
        if missing:
            raise LabelflipError(f"class distance is missing the key(s) {', '.join(missing)}")
        names = d["class_names"]
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise LabelflipError("class distance 'class_names' must be a list of strings")
        matrix = d["matrix"]
        if not isinstance(matrix, list) or not all(isinstance(row, list) for row in matrix):
            raise LabelflipError("class distance 'matrix' must be a list of rows (lists)")
        if len({len(row) for row in matrix}) > 1:
            raise LabelflipError("class distance 'matrix' rows have different lengths")
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for row in matrix for v in row
        ):
            raise LabelflipError("class distance 'matrix' must hold numbers only")
        info = d.get("info", {})
        if not isinstance(info, Mapping):
            raise LabelflipError("class distance 'info' must be an object")
        matrix_arr = np.array(matrix, dtype=np.float64).reshape(len(matrix), -1)
        return cls(str(d["name"]), matrix_arr, tuple(names), dict(info))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file atomically (``<path>.tmp`` then ``os.replace``)."""
        path = Path(path)
        try:
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise LabelflipError(
                f"class distance '{self.name}': info is not JSON-serialisable ({exc})"
            ) from None
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LabelflipError(f"cannot write class distance file '{path}': {exc}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClassDistance:
        """Read a file written by :meth:`save`; a malformed file raises LabelflipError."""
        path = Path(path)
        text = read_user_text(path, "class distance file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelflipError(
                f"class distance file '{path}' is not valid JSON "
                f"(line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        try:
            return cls.from_dict(data)
        except LabelflipError as exc:
            raise LabelflipError(f"class distance file '{path}': {exc}") from None
