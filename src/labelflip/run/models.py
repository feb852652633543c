"""The models a run needs: its ``[model]``, ``[oracle]`` and ``[svae]``,
each loaded from a checkpoint or trained on first use and cached (under
``$LABELFLIP_CACHE/models``, else the per-user cache).

A cached model is keyed on what made it: the dataset's content (the SHA-256
of its files, :func:`data_digest`), the architecture, the output encoding
and the whole training recipe (seed and epochs included), so a model
trained on one image folder is never reused for another folder of the same
name, nor for the same folder once its files changed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from labelflip._files import write_text_atomic
from labelflip._text import slug
from labelflip.config import ModelConfig, OracleConfig, SVAETableConfig
from labelflip.errors import LabelflipError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_cache_dir() -> Path:
    """Where models trained for runs are cached: $LABELFLIP_CACHE/models, else
    the per-user cache directory."""
    env = os.environ.get("LABELFLIP_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("labelflip")) / "models"


DIGESTS = "data-digests.json"  # in the model cache: stat fingerprint -> content digest
_DIGESTS_KEPT = 256


def _files(location: Path) -> list[Path]:
    if location.is_file():
        return [location]
    return sorted(p for p in location.rglob("*") if p.is_file())


def data_digest(dataset: str, data_dir: str | None) -> str:
    """The content digest of a dataset: SHA-256 over every file under its
    folder (relative path, size and bytes; an image folder's root, a
    registered dataset's own folder), or ``builtin:<name>`` for a dataset
    bundled with a library. Reading the bytes is remembered in the model
    cache by the files' paths, sizes and modification times, so an unchanged
    folder is hashed once."""
    from labelflip.data import get_source, load_dataset, resolve_data_dir

    root = resolve_data_dir(data_dir)
    source = get_source(dataset, root)
    location = getattr(source, "root", None)
    if location is None:
        location = source.status(root).location
        if location is None:
            return f"builtin:{dataset}"
        if not location.exists():  # fetched on first use (training needs it anyway)
            load_dataset(dataset, "train", data_dir)
    location = Path(location).resolve()
    files = _files(location)
    stats = [(str(f.relative_to(location)) if f != location else f.name, f.stat()) for f in files]
    listing = [str(location), [(n, st.st_size, st.st_mtime_ns) for n, st in stats]]
    fingerprint = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    memo_path = model_cache_dir() / DIGESTS
    try:
        memo = json.loads(memo_path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo.get(fingerprint), str):
        return memo[fingerprint]
    h = hashlib.sha256()
    for f, (name, st) in zip(files, stats, strict=True):
        h.update(f"{name}\0{st.st_size}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    digest = h.hexdigest()
    memo[fingerprint] = digest
    try:  # a read-only cache only loses the memo
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo_path, json.dumps(dict(list(memo.items())[-_DIGESTS_KEPT:])))
    except (OSError, LabelflipError):
        pass
    return digest


def _data_key(data: DataRef) -> dict[str, str]:
    """The data part of a cache key: how the dataset is read (an image
    folder, wherever it lies, or the registered name) and its content."""
    from labelflip.data import IMAGEFOLDER_PREFIX

    kind = "imagefolder" if data.dataset.startswith(IMAGEFOLDER_PREFIX) else data.dataset
    return {"dataset": kind, "data": data_digest(data.dataset, data.data_dir)}


def cache_key(**parts: Any) -> str:
    """A short digest of what made a cached model (JSON of ``parts``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Loaded(NamedTuple):
    """A classifier of the run with its checkpoint's sidecar and path."""

    clf: Any
    meta: Any  # CheckpointMeta
    checkpoint: Path


@dataclass(frozen=True)
class DataRef:
    """The fields of ``[data]`` a model needs to be trained on first use."""

    dataset: str
    data_dir: str | None


def obtain_model(
    m: ModelConfig, data: DataRef, seed: int, device: torch.device, progress: bool
) -> Loaded:
    """Load ``[model]``'s checkpoint or zoo model, or train its architecture (cached)."""
    checkpoint = m.checkpoint
    if m.zoo is not None:
        from labelflip.models.zoo import zoo_path

        checkpoint = str(zoo_path(m.zoo))  # verified on load
    return obtain_classifier(
        checkpoint, m.arch, m.epochs, seed, m.encoding, data, device, progress
    )


def obtain_oracle(
    o: OracleConfig | None, data: DataRef, seed: int, device: torch.device, progress: bool
) -> Loaded | None:
    """The ``[oracle]`` classifier (loaded, or trained with its own ``seed``
    and cached), or ``None`` when the config has none."""
    if o is None:
        return None
    return obtain_classifier(o.checkpoint, o.arch, o.epochs, seed, None, data, device, progress)


def cached_model_path(arch: str, settings: Any, encoding: str | None, data: DataRef) -> Path:
    """Where the model ``arch`` trained with ``settings`` (a
    ``TrainSettings``) on ``data`` is cached: a folder named by the digest
    of the data's content, the architecture, the encoding and the recipe."""
    # ECOC beside one-hot on the same data; a multi-label dataset only has one encoding
    kind = "-ecoc" if encoding == "ecoc" else ""
    key = cache_key(
        **_data_key(data),
        arch=arch,
        encoding=encoding,
        recipe=dataclasses.asdict(settings),
    )
    name = f"{slug(data.dataset)}-{slug(arch)}{kind}-seed{settings.seed}-e{settings.epochs}"
    return model_cache_dir() / key / f"{name}.safetensors"


def obtain_classifier(
    checkpoint: str | None,
    arch: str | None,
    epochs: int | None,
    seed: int,
    encoding: str | None,
    data: DataRef,
    device: torch.device,
    progress: bool,
) -> Loaded:
    from labelflip.models import load_checkpoint, recipe_for
    from labelflip.models.fit import train_and_save
    from labelflip.models.training import TrainSettings

    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
    else:
        assert arch is not None
        settings = TrainSettings.from_recipe(recipe_for(arch), epochs=epochs, seed=seed)
        path = cached_model_path(arch, settings, encoding, data)
        if not path.is_file():
            _log(
                f"training {arch} on {data.dataset} ({settings.epochs} epochs, seed "
                f"{seed}{f', {encoding} outputs' if encoding else ''}); cached at {path}"
            )
            path, result, acc = train_and_save(
                arch,
                data.dataset,
                settings,
                path,
                data_dir=data.data_dir,
                device=device,
                progress=progress,
                encoding=encoding,
            )
            _log(f"trained in {result.seconds:.0f} s: test accuracy {acc:.4f}")
    trust = arch if arch and ":" in arch else None
    clf, meta = load_checkpoint(path, device=device, trust_code=trust)
    return Loaded(clf, meta, path)


@dataclass(frozen=True)
class LoadedSVAE:
    svae: Any
    meta: dict[str, Any]
    checkpoint: Path


def obtain_svae(
    sv: SVAETableConfig | None, data: DataRef, seed: int, device: torch.device, progress: bool
) -> LoadedSVAE | None:
    """The ``[svae]`` model: loaded from its checkpoint, or trained on the
    dataset's train split with the table's settings and cached (the cache
    name carries a digest of the settings). ``None`` without an ``[svae]``."""
    from labelflip.models.svae import SVAESettings, load_svae, train_and_save_svae

    if sv is None:
        return None
    if sv.checkpoint is not None:
        path = Path(sv.checkpoint).expanduser()
    else:
        settings = SVAESettings(seed=seed, **sv.training())
        key = cache_key(**_data_key(data), svae=dataclasses.asdict(settings))
        path = model_cache_dir() / key / f"{slug(data.dataset)}-svae.safetensors"
        if not path.is_file():
            _log(
                f"training an svae on {data.dataset} ({settings.epochs}+"
                f"{settings.dis_epochs} epochs, seed {settings.seed}); cached at {path}"
            )
            t = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            path, acc = train_and_save_svae(
                data.dataset,
                settings,
                path,
                data_dir=data.data_dir,
                device=device,
                progress=progress,
            )
            _log(f"trained in {time.perf_counter() - t:.0f} s: f2 test accuracy {acc:.4f}")
    svae, meta = load_svae(path, device=device)
    return LoadedSVAE(svae, meta, path)
