"""The models a run needs: its ``[model]``, ``[oracle]`` and ``[svae]``,
each loaded from a checkpoint or trained on first use and cached (under
``$LABELFLIP_CACHE/models``, else the per-user cache)."""

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

from labelflip._text import slug
from labelflip.config import ModelConfig, OracleConfig, SVAETableConfig


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
        # ECOC beside one-hot on the same data; a multi-label dataset only has one encoding
        kind = "-ecoc" if encoding == "ecoc" else ""
        path = (
            model_cache_dir()
            / f"{slug(data.dataset)}-{slug(arch)}{kind}-seed{seed}-e{settings.epochs}"
            ".safetensors"
        )
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
        digest = hashlib.sha256(
            json.dumps(dataclasses.asdict(settings), sort_keys=True).encode()
        ).hexdigest()[:10]
        path = model_cache_dir() / f"{slug(data.dataset)}-svae-{digest}.safetensors"
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
