"""Checkpoints: weights in safetensors plus a JSON sidecar.

``model.safetensors`` holds the state dict; ``model.json`` beside it holds
what is needed to rebuild and trust it: architecture, dataset, class names,
input shape, normalisation, bounds, clean test accuracy, seed, library
versions and the SHA-256 of the weights file, verified on every load.

Nothing here unpickles: labelflip's own checkpoints are safetensors, and a
foreign PyTorch state dict can be imported only through
``torch.load(..., weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import platform
import re
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labelflip._files import fsync_dir
from labelflip.errors import LabelflipError, os_error
from labelflip.models.classifier import Classifier
from labelflip.models.encoding import OutputEncoding
from labelflip.models.registry import build_model

FORMAT = "labelflip-checkpoint/1"


@dataclass
class CheckpointMeta:
    """The JSON sidecar of a checkpoint."""

    architecture: str
    dataset: str
    class_names: list[str]
    input_shape: list[int]
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    bounds: list[float] = field(default_factory=lambda: [0.0, 1.0])
    clean_test_accuracy: float | None = None
    seed: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    weights_sha256: str = ""
    format: str = FORMAT
    # Output encoding (labelflip.models.encoding): {"kind": "onehot"} unless
    # an ECOC model ({"kind": "ecoc", "codebook": [[±1, ...], ...]}) or a
    # multi-label model ({"kind": "multilabel"}; class_names are the labels).
    encoding: dict[str, Any] = field(default_factory=lambda: {"kind": "onehot"})

    @property
    def num_classes(self) -> int:
        """Named classes (labels, for a multi-label model)."""
        return len(self.class_names)

    def output_encoding(self) -> OutputEncoding:
        return OutputEncoding.from_dict(self.encoding, self.num_classes)

    @property
    def num_outputs(self) -> int:
        """Outputs of the network (the codeword length of an ECOC model)."""
        return self.output_encoding().num_outputs


def library_versions() -> dict[str, str]:
    import numpy

    import labelflip

    return {
        "labelflip": labelflip.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, sidecar)`` for ``x.safetensors``, ``x.json`` or the stem ``x``."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_durably(folder: Path, name: str, data: bytes) -> Path:
    """``data`` in a new temporary file of ``folder`` (named after ``name``,
    permissions as the umask allows, like any new file), flushed to the disk;
    returns its path."""
    tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail now, with the error a save would give, if the checkpoint ``path``
    cannot be written (its folder cannot be made or written into): called
    before a long training, not to lose it at the end."""
    weights, _ = checkpoint_paths(path)
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        _write_durably(weights.parent, weights.name, b"").unlink()
    except OSError as e:
        raise os_error(f"cannot write checkpoint {weights}", e) from None


def write_weights(
    path: str | os.PathLike[str],
    state: dict[str, torch.Tensor],
    sidecar_of: Any,
    *,
    metadata: dict[str, str],
) -> Path:
    """Write a state dict (safetensors) and its JSON sidecar atomically;
    returns the weights path. ``sidecar_of(sha256)`` builds the sidecar's
    JSON data once the weights' SHA-256 is known. Shared by classifier and
    SVAE checkpoints.

    Both files are written to temporary files in the target folder, flushed
    to the disk (``fsync``) and only then renamed over the old ones, the
    sidecar last. A full or read-only disk is one :class:`LabelflipError`
    line, and leaves no temporary file and any previous checkpoint at
    ``path`` whole."""
    from safetensors.torch import save

    weights, sidecar = checkpoint_paths(path)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    data = save(state, metadata=metadata)
    text = json.dumps(sidecar_of(hashlib.sha256(data).hexdigest()), indent=2) + "\n"
    written: list[Path] = []
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        written.append(_write_durably(weights.parent, weights.name, data))
        written.append(_write_durably(sidecar.parent, sidecar.name, text.encode("utf-8")))
        os.replace(written[0], weights)
        os.replace(written[1], sidecar)
        fsync_dir(weights.parent)
    except OSError as e:
        raise os_error(f"cannot write checkpoint {weights}", e) from None
    finally:
        for tmp in written:
            tmp.unlink(missing_ok=True)
    return weights


def read_sidecar(path: str | os.PathLike[str], fmt: str, what: str) -> dict[str, Any]:
    """The JSON sidecar of the ``what`` checkpoint at ``path`` (format
    ``fmt``), after checking both files exist; one-line errors otherwise."""
    weights, sidecar = checkpoint_paths(path)
    _refuse_pickle(Path(path))
    if not weights.is_file():
        raise LabelflipError(f"{what} weights not found: {weights}")
    if not sidecar.is_file():
        raise LabelflipError(
            f"{what} sidecar not found: {sidecar} (it must sit beside {weights.name})"
        )
    try:
        raw = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabelflipError(f"{what} sidecar {sidecar} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        kind = "a labelflip checkpoint" if what == "checkpoint" else f"an {what} checkpoint"
        raise LabelflipError(f"{sidecar} is not {kind} sidecar (format != {fmt})")
    return raw


def read_verified_weights(path: str | os.PathLike[str], expected_sha256: str) -> dict:
    """The state dict at ``path``, after checking its SHA-256 against the sidecar's."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, _ = checkpoint_paths(path)
    digest = sha256_file(weights)
    if digest != expected_sha256:
        raise LabelflipError(
            f"weights {weights} do not match the SHA-256 in their sidecar "
            f"(expected {str(expected_sha256)[:12]}..., got {digest[:12]}...): "
            "modified or corrupted"
        )
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise LabelflipError(f"cannot read weights {weights}: {e}") from None


def save_checkpoint(
    path: str | os.PathLike[str], model: torch.nn.Module, meta: CheckpointMeta
) -> Path:
    """Write ``model``'s weights and ``meta`` atomically; return the weights path.

    ``meta.versions`` is filled in when empty and ``meta.weights_sha256`` is
    always set from the bytes written.
    """
    meta.versions = meta.versions or library_versions()

    def sidecar_of(sha256: str) -> dict[str, Any]:
        meta.weights_sha256 = sha256
        return dataclasses.asdict(meta)

    return write_weights(
        path,
        model.state_dict(),
        sidecar_of,
        metadata={"format": FORMAT, "architecture": meta.architecture},
    )


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read and validate a checkpoint's sidecar (the weights are not touched).

    Every field is checked for its type and shape as strictly as a config
    (:func:`check_sidecar`): a malformed one is one :class:`LabelflipError`
    line naming the field. Keys the format does not know are ignored."""
    raw = read_sidecar(path, FORMAT, "checkpoint")
    _, sidecar = checkpoint_paths(path)
    names = {f.name for f in dataclasses.fields(CheckpointMeta)}
    missing = [
        f.name
        for f in dataclasses.fields(CheckpointMeta)
        if f.name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise LabelflipError(
            f"checkpoint sidecar {sidecar} is incomplete: missing {', '.join(map(repr, missing))}"
        )
    meta = CheckpointMeta(**{k: v for k, v in raw.items() if k in names})
    check_sidecar(meta, f"checkpoint sidecar {sidecar}")
    return meta


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_sidecar(meta: CheckpointMeta, where: str) -> None:
    """Check every field of a sidecar read from JSON (one line naming the
    field, prefixed with ``where``): strings, a non-empty list of distinct
    class names, ``input_shape`` [C, H, W] of positive integers, ``mean`` and
    ``std`` lists of 1 or C finite numbers (``std`` positive), ``bounds``
    [low, high] with low < high, an accuracy in [0, 1], an integer seed and
    an ``encoding`` object with a string ``kind``."""

    def bad(field: str, rule: str) -> LabelflipError:
        return LabelflipError(
            f"{where}: '{field}' must be {rule}, got {_shown(getattr(meta, field))}"
        )

    if not isinstance(meta.architecture, str) or not meta.architecture:
        raise bad("architecture", "a non-empty string")
    for name in ("dataset", "weights_sha256", "format"):
        if not isinstance(getattr(meta, name), str):
            raise bad(name, "a string")
    names = meta.class_names
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise bad("class_names", "a list of strings")
    if not names:
        raise LabelflipError(f"{where}: 'class_names' must not be empty")
    seen: set[str] = set()
    for c in names:
        if c in seen:
            raise LabelflipError(
                f"{where}: 'class_names' repeats '{c}' (every class needs its own name)"
            )
        seen.add(c)
    shape = meta.input_shape
    if not isinstance(shape, list) or len(shape) != 3:
        raise bad("input_shape", "[channels, height, width]")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise bad("input_shape", "[channels, height, width] of positive integers")
    for name in ("mean", "std"):
        values = getattr(meta, name)
        if not isinstance(values, list) or not values or not all(map(_is_number, values)):
            raise bad(name, "a list of numbers")
        if len(values) not in (1, shape[0]):
            channels = f"{shape[0]} channel{'s' if shape[0] != 1 else ''}"
            raise LabelflipError(
                f"{where}: '{name}' has {len(values)} values for inputs with {channels} "
                "(give 1 or one per channel)"
            )
    if any(v <= 0 for v in meta.std):
        raise bad("std", "positive")
    b = meta.bounds
    if not (isinstance(b, list) and len(b) == 2 and all(map(_is_number, b)) and b[0] < b[1]):
        raise bad("bounds", "[low, high] with low < high")
    acc = meta.clean_test_accuracy
    if acc is not None and not (_is_number(acc) and 0 <= acc <= 1):
        raise bad("clean_test_accuracy", "a number in [0, 1] or null")
    if meta.seed is not None and (isinstance(meta.seed, bool) or not isinstance(meta.seed, int)):
        raise bad("seed", "an integer or null")
    for name in ("training", "versions"):
        if not isinstance(getattr(meta, name), dict):
            raise bad(name, "an object")
    enc = meta.encoding
    if not isinstance(enc, dict) or not isinstance(enc.get("kind", "onehot"), str):
        raise bad("encoding", "an object with a 'kind'")
    try:
        meta.output_encoding()
    except LabelflipError as e:
        raise LabelflipError(f"{where}: 'encoding': {e}") from None
    except (TypeError, ValueError) as e:
        raise LabelflipError(f"{where}: 'encoding' is malformed: {e}") from None


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    trust_code: str | None = None,
) -> tuple[Classifier, CheckpointMeta]:
    """Load a checkpoint as a :class:`Classifier`, verifying the weights' SHA-256.

    A checkpoint of a user model (architecture ``module:function``) imports
    user code; that happens only if ``trust_code`` names the same
    ``module:function`` (the CLI passes ``--arch``).
    """
    meta = read_meta(path)
    weights, _ = checkpoint_paths(path)
    state = read_verified_weights(path, meta.weights_sha256)  # before anything trusts it
    if ":" in meta.architecture and trust_code != meta.architecture:
        raise LabelflipError(
            f"checkpoint {weights.name} needs user code '{meta.architecture}'; "
            f"pass --arch {meta.architecture} (in a config: [model] arch = "
            f'"{meta.architecture}") to trust and import it'
        )
    encoding = meta.output_encoding()
    model = build_model(meta.architecture, tuple(meta.input_shape), encoding.num_outputs)
    load_state(model, state, f"checkpoint {weights.name}", meta)
    clf = Classifier(
        model,
        num_classes=meta.num_classes,
        class_names=meta.class_names,
        input_shape=meta.input_shape,
        bounds=(meta.bounds[0], meta.bounds[1]),
        mean=meta.mean,
        std=meta.std,
        encoding=encoding,
    )
    return clf.to(device), meta


def mismatch_detail(e: RuntimeError) -> str:
    """The first informative line of ``load_state_dict``'s error (its first
    line only says that loading failed)."""
    return next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))


def load_state(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, meta: CheckpointMeta
) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line error on mismatch."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = mismatch_detail(e)
        raise LabelflipError(
            f"{what} does not fit architecture '{meta.architecture}' with input shape "
            f"{tuple(meta.input_shape)} and {_outputs_phrase(meta)}: {detail}"
        ) from None


def _outputs_phrase(meta: CheckpointMeta) -> str:
    kind = meta.encoding.get("kind", "onehot") if isinstance(meta.encoding, dict) else "onehot"
    if kind == "onehot":
        return f"{meta.num_classes} classes"
    return f"{meta.num_outputs} outputs ({kind})"


def import_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a foreign state dict safely.

    ``.safetensors`` files (by name or by content) are read with
    safetensors; PyTorch files (a zip archive, or a pickle for the legacy
    format) go through ``torch.load(..., weights_only=True)``, which refuses
    pickles that would build arbitrary objects or run code. Anything else (a
    text file, say) is refused by its first bytes, before any unpickler sees
    it. Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and
    DataParallel ``module.`` prefixes are unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise LabelflipError(f"weights file not found: {p}")
    kind = _weights_kind(p)
    if kind is None:
        raise LabelflipError(
            f"{p} is not a weights file: neither a PyTorch file (a zip archive or a pickle, "
            "as torch.save writes) nor safetensors"
        )
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p))
        except (SafetensorError, OSError) as e:
            raise LabelflipError(f"cannot read weights {p}: {e}") from None
    else:
        try:
            with warnings.catch_warnings():  # torch's protocol notices: the refusal says enough
                warnings.simplefilter("ignore")
                obj = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise LabelflipError(
                f"refusing to load {p}: not a plain tensor state dict "
                f"(torch.load weights_only=True refused it: {_weights_only_reason(e)}); "
                "save `model.state_dict()` instead of the model: "
                "torch.save(model.state_dict(), path)"
            ) from None
        except Exception as e:  # noqa: BLE001 - a malformed pickle can fail anywhere in torch
            raise LabelflipError(
                f"cannot read {p}: a malformed PyTorch file ({type(e).__name__}: {e})"
            ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LabelflipError(f"{p} does not hold a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def map_state_keys(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    *,
    what: str,
    arch: str,
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """``state`` (the tensors of ``what``) renamed to the keys of
    ``reference`` (the state dict of architecture ``arch``), for a state dict
    of the same network saved under other names (e.g. a C&W net's
    ``conv1.weight ... fc3.bias`` for ``features.0.weight ... classifier.6.bias``).

    The two must line up one to one in order (a state dict lists tensors in
    the order the modules were registered): the same number of tensors and,
    pair by pair, the same shape and the same kind, the last part of a
    dotted name (``weight``, ``bias``, ``running_mean``, ...; compared when
    both names have one). Anything else is ambiguous and refused with one
    line showing both key lists: another number of tensors, a pair whose
    shape or kind differs (e.g. a batch norm's four equal-shaped tensors
    saved in another order), or a name ``reference`` also has paired with
    another of its keys (the names and the order disagree).

    Returns the renamed state dict and the ``(old, new)`` pairs that changed
    (none when the keys already are ``reference``'s, in any order).
    """
    if set(state) == set(reference):
        return dict(state), []
    ours, theirs = list(reference.items()), list(state.items())

    def refuse(reason: str) -> LabelflipError:
        return LabelflipError(
            f"cannot map the keys of {what} onto architecture '{arch}' one to one in order "
            f"({reason}): {what} has {len(theirs)} tensors {_keys_text(theirs)}; "
            f"'{arch}' has {len(ours)} {_keys_text(ours)}"
        )

    if len(theirs) != len(ours):
        raise refuse(f"{len(theirs)} tensors against {len(ours)}")
    pairs = []
    for (old, t), (new, r) in zip(theirs, ours, strict=True):
        if tuple(t.shape) != tuple(r.shape):
            raise refuse(f"'{old}' {_shape(t)} pairs with '{new}' {_shape(r)}")
        kinds = (old.rpartition(".")[2] if "." in old else None, new.rpartition(".")[2])
        if kinds[0] is not None and kinds[0] != kinds[1]:
            raise refuse(f"'{old}' is a {kinds[0]} and pairs with '{new}', a {kinds[1]}")
        if old in reference and old != new:
            raise refuse(f"'{old}' is a name of '{arch}' but pairs with '{new}' by order")
        pairs.append((old, new))
    return {new: state[old] for old, new in pairs}, [(o, n) for o, n in pairs if o != n]


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(map(str, t.shape)) + "]"


def _keys_text(items: list[tuple[str, torch.Tensor]]) -> str:
    return "(" + ", ".join(f"{k} {_shape(v)}" for k, v in items) + ")"


def _weights_kind(p: Path) -> str | None:
    """``"safetensors"``, ``"torch"`` (zip archive or pickle) or ``None``, from
    the file's name and first bytes."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(9)
    except OSError as e:
        raise os_error(f"cannot read {p}", e) from None
    if p.suffix == ".safetensors":
        return "safetensors"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"  # torch.save's zip archive, or a pickle (protocol >= 2)
    return None


def _weights_only_reason(e: Exception) -> str:
    """The gist of torch's (long, multi-line) weights-only refusal."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it would import {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found:
        return found.group(1).strip()[:200]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__


def _refuse_pickle(p: Path) -> None:
    if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"):
        raise LabelflipError(
            f"{p} is a PyTorch/pickle file, not a labelflip checkpoint; convert it with "
            f"'labelflip import-weights {p} --arch ARCH --dataset DATASET --out OUT'"
        )
