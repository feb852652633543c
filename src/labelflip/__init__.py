"""labelflip: where do adversarial examples land, and why there?

The public API (docs/api.md lists it):

- :func:`evaluate`: your model and data, a list of attacks, one call; a :class:`Run`.
- :func:`run_experiment`: a run config (TOML path, :func:`load_config`) from Python.
- :func:`open_run`: a run directory for analysis (:class:`Run`).
- :class:`Classifier`, :class:`AttackResult`, :func:`run_attack`: attacks one batch at a time.
- :class:`LabelflipError`: every error a user can cause, with a one-line message.

The names are imported on first use, so ``import labelflip`` stays light
(the CLI's ``--version`` does not import torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from labelflip.errors import LabelflipError

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "evaluate": "labelflip.api",
    "run_experiment": "labelflip.api",
    "open_run": "labelflip.results",
    "Run": "labelflip.results",
    "load_config": "labelflip.config",
    "RunConfig": "labelflip.config",
    "Classifier": "labelflip.models",
    "AttackResult": "labelflip.attacks",
    "run_attack": "labelflip.attacks",
}

__all__ = ["LabelflipError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labelflip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
