"""The state of an unfinished training, so that it can be continued.

Beside a checkpoint ``OUT`` (``OUT.safetensors`` + ``OUT.json``), a training
in progress keeps ``OUT.partial.safetensors`` and ``OUT.partial.json``:

- safetensors: the model's weights (``model.*``), the best epoch's weights
  so far (``best.*``), the optimiser's tensors (``optim.<param>.<name>``),
  the random states (``rng.data``: the generator that shuffles, augments and
  draws the attacks' random starts; ``rng.torch``: the global CPU generator
  that draws dropout masks; ``rng.cuda``) and, stopped inside an epoch, that
  epoch's sample order (``order``);
- JSON: the format, what the training is (``fingerprint``: architecture,
  data, settings; a different command does not continue it), where it
  stands (epoch, batch, optimiser step), the running sums of the epoch, the
  history, the best epoch, the optimiser's other values (learning rates,
  Adam's betas), the torch thread count, and the SHA-256 of the
  safetensors file, checked before anything is read.

Nothing is pickled. The file is rewritten after every epoch and when a stop
is requested (Ctrl-C) at a batch boundary, and removed once the final
checkpoint is written. Continuing from it gives the same weights, bit for
bit, as an uninterrupted run on the same machine with the same thread count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from labelflip.errors import LabelflipError
from labelflip.models.checkpoint import (
    checkpoint_paths,
    read_sidecar,
    read_verified_weights,
    write_weights,
)

FORMAT = "labelflip-train-state/1"
WHAT = "interrupted-training"


def state_path(out: str | os.PathLike[str]) -> Path:
    """The stem of the training state kept beside checkpoint ``out``."""
    weights, _ = checkpoint_paths(out)
    return weights.with_name(weights.name[: -len(".safetensors")] + ".partial")


def state_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, sidecar)`` of the state at stem ``path``."""
    return checkpoint_paths(path)


def remove_state(path: str | os.PathLike[str]) -> None:
    for p in state_files(path):
        p.unlink(missing_ok=True)


def normalised(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(data))


def pack_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state dict split into tensors and JSON values."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                values.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "values": values}


def unpack_optimizer(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> dict[str, Any]:
    """The optimiser state dict packed by :func:`pack_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in data["values"].items():
        state.setdefault(int(pid), {}).update(entries)
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": data["param_groups"]}


def save_state(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], data: dict[str, Any]
) -> Path:
    """Write the state (``tensors`` and the JSON ``data``) atomically."""

    def sidecar_of(sha256: str) -> dict[str, Any]:
        return {"format": FORMAT, **data, "weights_sha256": sha256}

    return write_weights(path, tensors, sidecar_of, metadata={"format": FORMAT})


def load_state(
    path: str | os.PathLike[str], fingerprint: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The state at stem ``path``, or ``None`` when there is none. A state
    of another training (its fingerprint differs) or a damaged one is a
    one-line error that says how to start afresh."""
    weights, sidecar = state_files(path)
    if not weights.is_file() and not sidecar.is_file():
        return None
    try:
        data = read_sidecar(path, FORMAT, WHAT)
        tensors = read_verified_weights(path, str(data.get("weights_sha256", "")))
    except LabelflipError as e:
        raise LabelflipError(
            f"{e}; to start the training afresh, pass --restart (or delete {weights.name} "
            f"and {sidecar.name})"
        ) from None
    if data.get("fingerprint") != normalised(fingerprint):
        was = data.get("fingerprint") or {}
        raise LabelflipError(
            f"{weights} holds an interrupted training with other settings "
            f"({_difference(was, normalised(fingerprint))}); run its own command to continue "
            "it, or pass --restart to discard it"
        )
    return tensors, data


def _difference(was: dict[str, Any], now: dict[str, Any], prefix: str = "") -> str:
    """The first setting that differs, as ``name: old -> new``."""
    for key in sorted(set(was) | set(now)):
        a, b = was.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return _difference(a, b, f"{prefix}{key}.")
        return f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}"
    return "unknown difference"
