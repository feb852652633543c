"""Canonical JSON of the store (sorted keys; numpy arrays and scalars as lists
and numbers)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from labelflip.errors import LabelflipError


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def to_json(value: Any, what: str) -> str:
    """Canonical JSON (sorted keys; numpy arrays and scalars as lists/numbers)."""
    try:
        return json.dumps(value, sort_keys=True, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise LabelflipError(f"{what} is not JSON-serialisable: {exc}") from None
