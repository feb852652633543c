"""What :func:`labelflip.evaluate` is given, made into what a run takes.

- The model: a labelflip checkpoint path or zoo name (then the run's
  ``[model]`` names it, as in a TOML config), or a live ``nn.Module`` or
  :class:`~labelflip.models.Classifier`. A live model is wrapped (bounds and
  normalisation inside, as every labelflip model), its weights are saved
  with safetensors and a JSON sidecar in the model cache under a digest of
  the weights and the wrapper (so the run records a real checkpoint and its
  SHA-256), and the run uses the live object itself.
- The data: a dataset name, tensors or arrays ``(x, y)``, a torch
  ``Dataset`` or a ``DataLoader`` yielding ``(x, y)``. Samples given in
  Python become a :class:`~labelflip.data.Dataset` named
  ``python:<digest>`` (a digest of ``x``, ``y`` and the class names), so a
  resumed run can tell that it was given the same samples.

Every problem with what was given is one :class:`LabelflipError` line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelflip._text import slug
from labelflip.config import PYTHON_DATA
from labelflip.data import Dataset, load_dataset
from labelflip.errors import LabelflipError
from labelflip.models import CheckpointMeta, Classifier, read_meta, save_checkpoint
from labelflip.models.checkpoint import checkpoint_paths, sha256_file
from labelflip.run.models import Loaded, model_cache_dir

COLLECT_BATCH = 256  # rows per batch when a torch Dataset is read


# ---------------------------------------------------------------- data


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as e:
        raise LabelflipError(f"{what} is not an array: {_first_line(e)}") from None


def _collect(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` read from a torch ``Dataset`` or ``DataLoader`` in its order."""
    from torch.utils.data import DataLoader, RandomSampler

    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise LabelflipError(
                "the DataLoader shuffles (shuffle=True): give one with shuffle=False, labelflip "
                "chooses the samples itself (samples=, seed=)"
            )
        loader, what = data, "the DataLoader"
    else:
        loader, what = DataLoader(data, batch_size=COLLECT_BATCH, shuffle=False), "the Dataset"
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    try:
        for batch in loader:
            if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                kind = type(batch).__name__
                raise LabelflipError(f"{what} must yield (x, y) pairs, got a {kind}")
            xs.append(_tensor(batch[0], "x"))
            ys.append(_tensor(batch[1], "y").reshape(-1))
    except LabelflipError:
        raise
    except Exception as e:  # noqa: BLE001 - user data can fail in any way
        raise LabelflipError(
            f"reading {what} failed: {type(e).__name__}: {_first_line(e)}"
        ) from None
    if not xs:
        raise LabelflipError(f"{what} yields no samples")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as e:
        raise LabelflipError(
            f"{what} yields batches of different shapes: {_first_line(e)}"
        ) from None


def class_names_of(data: Any) -> list[str] | None:
    """A torch dataset's class names (torchvision's ``classes``), if it has them."""
    ds = getattr(data, "dataset", data)
    names = getattr(ds, "classes", None)
    if isinstance(names, Sequence) and names and all(isinstance(c, str) for c in names):
        return list(names)
    return None


def samples_of(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (float32, N×C×H×W) and ``y`` (int64, N) from tensors or arrays
    ``(x, y)``, a torch ``Dataset`` or a ``DataLoader``, checked."""
    from torch.utils.data import DataLoader, IterableDataset
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(data, (DataLoader, TorchDataset, IterableDataset)):
        x, y = _collect(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _tensor(data[0], "x"), _tensor(data[1], "y")
    else:
        raise LabelflipError(
            "data must be a dataset name, a pair (x, y) of tensors or arrays, a torch Dataset "
            f"or a DataLoader yielding (x, y), got {type(data).__name__}"
        )
    return _checked_x(x), _checked_y(y, len(x))


def _checked_x(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        hint = "; greyscale images need a channel axis: x[:, None]" if x.ndim == 3 else ""
        raise LabelflipError(
            f"x must be a batch of images of shape (N, C, H, W), got shape {tuple(x.shape)}{hint}"
        )
    if len(x) == 0:
        raise LabelflipError("x holds no samples")
    if not torch.is_floating_point(x):
        raise LabelflipError(
            f"x has dtype {x.dtype}: give floats inside the bounds (e.g. x.float() / 255 "
            "for bytes, with the default bounds (0, 1))"
        )
    x = x.to(torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0, 0])
        raise LabelflipError(f"x contains NaN or Inf values (first in sample {bad})")
    return x


def _checked_y(y: torch.Tensor, n: int) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] > 1:
        raise LabelflipError(
            f"y must hold class indices of shape ({n},), got shape {tuple(y.shape)} "
            "(one-hot labels? give y.argmax(1))"
        )
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or len(y) != n:
        raise LabelflipError(
            f"y must hold {n} class indices (one per x), got shape {tuple(y.shape)}"
        )
    if torch.is_floating_point(y) or y.dtype == torch.bool or torch.is_complex(y):
        raise LabelflipError(f"y must hold integer class indices, got dtype {y.dtype}")
    return y.to(torch.int64).contiguous()


def check_labels(y: torch.Tensor, k: int) -> None:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        raise LabelflipError(
            f"labels must be class indices in [0, {k}) for a model with {k} classes, "
            f"got values from {lo} to {hi}"
        )


def check_bounds(x: torch.Tensor, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - 1e-6 or xmax > hi + 1e-6:
        raise LabelflipError(
            f"x spans [{xmin:g}, {xmax:g}], outside the bounds [{lo:g}, {hi:g}]: pass the "
            "range your inputs live in as bounds=(low, high), or give raw inputs and the "
            "normalisation as mean= and std= (it then happens inside the model)"
        )


def data_digest(x: torch.Tensor, y: torch.Tensor, names: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.numpy().tobytes())
    h.update(json.dumps(list(names)).encode())
    return h.hexdigest()


def python_dataset(x: torch.Tensor, y: torch.Tensor, names: Sequence[str]) -> Dataset:
    """Samples given in Python as a :class:`Dataset` named ``python:<digest>``."""
    name = f"{PYTHON_DATA}{data_digest(x, y, names)[:16]}"
    return Dataset(name=name, split="test", x=x, y=y, class_names=tuple(names))


def named_dataset(name: str, split: str, data_dir: str | None) -> Dataset:
    if not isinstance(name, str) or name.startswith(PYTHON_DATA):
        raise LabelflipError(f"'{name}' is not a dataset name (see `labelflip datasets`)")
    return load_dataset(name, split, data_dir)


# ---------------------------------------------------------------- model


def _is_path(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike))


def stored_model_table(model: str | os.PathLike) -> dict[str, Any]:
    """``[model]`` of a checkpoint path or a zoo name."""
    path = Path(model).expanduser()
    weights, sidecar = checkpoint_paths(path)
    if path.suffix in (".safetensors", ".json") or weights.is_file() or sidecar.is_file():
        if not weights.is_file():
            raise LabelflipError(f"checkpoint not found: {weights}")
        return {"checkpoint": str(weights.resolve())}
    try:
        from labelflip.models.zoo import ZOO
    except ImportError:  # pragma: no cover - a labelflip without a zoo
        raise LabelflipError(f"checkpoint not found: {weights}") from None
    if str(model) in ZOO.names():
        return {"zoo": str(model)}
    from labelflip.errors import unknown_name

    known = ZOO.names()
    raise LabelflipError(
        f"model '{model}' is neither a checkpoint file nor a zoo model"
        + (f" ({unknown_name('zoo model', str(model), known)})" if known else "")
    )


def stored_meta(table: dict[str, Any]) -> CheckpointMeta:
    """The sidecar of the ``[model]`` checkpoint or zoo model ``table`` names."""
    if "zoo" in table:
        from labelflip.models.zoo import ZOO

        return read_meta(ZOO.path(table["zoo"]))
    return read_meta(table["checkpoint"])


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU without any)."""
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return torch.device("cpu")


def _outputs(module: nn.Module, x: torch.Tensor, mean: Any, std: Any, bounds: Any) -> int:
    """The number of outputs of ``module`` on one sample (normalised as the
    wrapper will); one line when the module fails on the data."""
    probe = Classifier(
        module, num_classes=1, bounds=bounds, mean=mean, std=std, input_shape=x.shape[1:]
    )
    dev = device_of(module)
    try:
        with torch.no_grad():
            out = probe.outputs(x[:1].to(dev))
    except LabelflipError:
        raise
    except Exception as e:  # noqa: BLE001 - user code can fail in any way
        raise LabelflipError(
            f"the model fails on inputs of shape {tuple(x.shape[1:])}: {type(e).__name__}: "
            f"{_first_line(e)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LabelflipError(
            f"the model must return logits of shape (N, classes), got {shape} for one input"
        )
    return int(out.shape[1])


def wrap_module(
    model: nn.Module | Classifier,
    x: torch.Tensor,
    names: Sequence[str] | None,
    *,
    bounds: tuple[float, float] | None,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> Classifier:
    """A live model as a :class:`Classifier` for inputs like ``x``, with ``names``."""
    if isinstance(model, Classifier):
        given = [k for k, v in (("bounds", bounds), ("mean", mean), ("std", std)) if v is not None]
        if given:
            raise LabelflipError(
                f"a Classifier carries its own bounds and normalisation; do not pass "
                f"{', '.join(given)} with it"
            )
        if names is not None and tuple(names) != tuple(model.label_names):
            raise LabelflipError(
                "class_names differ from the Classifier's class names "
                f"({', '.join(model.label_names[:5])}, ...)"
            )
        if model.input_shape is not None and tuple(model.input_shape) != tuple(x.shape[1:]):
            raise LabelflipError(
                f"the Classifier takes inputs of shape {tuple(model.input_shape)}, the data "
                f"are {tuple(x.shape[1:])}"
            )
        if model.input_shape is None:
            model.input_shape = tuple(int(s) for s in x.shape[1:])
        return model
    bounds = (0.0, 1.0) if bounds is None else bounds
    if not (isinstance(bounds, Sequence) and len(bounds) == 2):
        raise LabelflipError(f"bounds must be a pair (low, high), got {bounds!r}")
    mean = [float(mean)] if isinstance(mean, (int, float)) else mean
    std = [float(std)] if isinstance(std, (int, float)) else std
    k = _outputs(model, x, mean, std, bounds)
    if names is not None and len(names) != k:
        raise LabelflipError(f"{len(names)} class names given for a model with {k} outputs")
    return Classifier(
        model,
        num_classes=k,
        class_names=names,
        input_shape=x.shape[1:],
        bounds=(float(bounds[0]), float(bounds[1])),
        mean=mean,
        std=std,
    )


@dataclass(frozen=True)
class ModelGiven:
    """The model of an evaluation: its ``[model]`` table (for a live model:
    the checkpoint it is saved as and its class's ``module:QualName``), its
    class names, input bounds and kind, the device it runs on, and the live
    model (``None`` for a checkpoint or zoo model)."""

    table: dict[str, Any]
    names: list[str]
    bounds: tuple[float, float]
    multilabel: bool
    device: str
    live: LiveModel | None = None


def given_model(
    model: Any,
    x: torch.Tensor,
    *,
    class_names: Sequence[str] | None,
    data_names: Sequence[str] | None,
    bounds: tuple[float, float] | None,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
    device: str,
) -> ModelGiven:
    """What :func:`labelflip.evaluate` makes of its ``model`` for inputs like
    ``x``: class names are the checkpoint's or Classifier's own (an explicit
    ``class_names`` must equal them), for a bare module ``class_names``, else
    the data's (``data_names``), else ``"0"``, ``"1"``, ..."""
    from labelflip.run import resolve_device

    if isinstance(model, (str, os.PathLike)):
        given = [k for k, v in (("bounds", bounds), ("mean", mean), ("std", std)) if v is not None]
        if given:
            raise LabelflipError(
                f"a checkpoint carries its own bounds and normalisation; do not pass "
                f"{', '.join(given)} with it"
            )
        table = stored_model_table(model)
        meta = stored_meta(table)
        if class_names is not None and list(class_names) != meta.class_names:
            raise LabelflipError("class_names differ from the checkpoint's class names")
        kind = meta.encoding.get("kind", "onehot")
        lo, hi = meta.bounds
        return ModelGiven(table, list(meta.class_names), (lo, hi), kind == "multilabel", device)
    if not isinstance(model, nn.Module):
        raise LabelflipError(
            "model must be an nn.Module, a labelflip Classifier, a checkpoint path or a zoo "
            f"model name, got {type(model).__name__}"
        )
    names = class_names if class_names is not None or isinstance(model, Classifier) else data_names
    clf = wrap_module(model, x, names, bounds=bounds, mean=mean, std=std)
    if device == "auto":
        device = str(device_of(clf))
    else:
        resolve_device(device)  # a bad name: one line, before anything is saved
    live = live_model(clf)
    table = {"checkpoint": str(live.weights), "arch": live.fields["architecture"]}
    return ModelGiven(table, list(clf.label_names), clf.bounds, clf.multilabel, device, live)


def code_name(module: nn.Module) -> str:
    """``module:QualName`` of the module's class (what a config's ``arch``
    names to rebuild it, when the class is importable and takes no arguments)."""
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def _digest(state: dict[str, torch.Tensor], sidecar: dict[str, Any]) -> str:
    """A digest of the weights and of the wrapper's sidecar fields."""
    h = hashlib.sha256(json.dumps(sidecar, sort_keys=True).encode())
    for key in sorted(state):
        t = state[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class LiveModel:
    """A live classifier and the cached checkpoint it is saved as: the
    sidecar fields and the weights path (``<cache>/python/<Class>-<digest>``,
    a digest of the weights and of those fields)."""

    clf: Classifier
    fields: dict[str, Any]
    weights: Path

    def save(self, dataset: str) -> Loaded:
        """Save the checkpoint (safetensors and sidecar) unless it is already
        there whole; the run's model: the live classifier with the sidecar and path."""
        meta = _cached_meta(self.weights, self.fields)
        if meta is None:
            meta = CheckpointMeta(
                dataset=dataset,
                training={
                    "source": "a model given in Python to labelflip.evaluate",
                    "code": self.fields["architecture"],
                },
                **self.fields,
            )
            save_checkpoint(self.weights, self.clf.model, meta)
        return Loaded(self.clf, meta, self.weights)


def live_model(clf: Classifier) -> LiveModel:
    """Where the live ``clf`` is saved (nothing is written yet)."""
    fields = {
        "architecture": code_name(clf.model),
        "class_names": list(clf.label_names),
        "input_shape": [int(s) for s in clf.input_shape or ()],
        "mean": [float(v) for v in clf.mean.flatten().tolist()],
        "std": [float(v) for v in clf.std.flatten().tolist()],
        "bounds": [float(b) for b in clf.bounds],
        "encoding": clf.encoding.to_dict(),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in clf.model.state_dict().items()}
    digest = _digest(state, fields)
    stem = model_cache_dir() / "python" / f"{slug(type(clf.model).__name__)}-{digest[:16]}"
    return LiveModel(clf, fields, checkpoint_paths(stem)[0])


def _cached_meta(path: Path, fields: dict[str, Any]) -> CheckpointMeta | None:
    """The sidecar of the cached checkpoint at ``path`` if it is whole (its
    weights match its SHA-256 and its fields are ``fields``), else ``None``."""
    weights, sidecar = checkpoint_paths(path)
    if not (weights.is_file() and sidecar.is_file()):
        return None
    try:
        meta = read_meta(path)
        whole = sha256_file(weights) == meta.weights_sha256
    except (LabelflipError, OSError):
        return None
    same = all(getattr(meta, k) == v for k, v in fields.items())
    return meta if whole and same else None


__all__ = [
    "check_bounds",
    "check_labels",
    "class_names_of",
    "code_name",
    "device_of",
    "given_model",
    "live_model",
    "LiveModel",
    "ModelGiven",
    "named_dataset",
    "python_dataset",
    "samples_of",
    "stored_meta",
    "stored_model_table",
    "wrap_module",
]
