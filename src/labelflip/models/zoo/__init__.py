"""The model zoo shipped with labelflip: small trained checkpoints, ready to attack.

Each model is a labelflip checkpoint (``NAME.safetensors`` + ``NAME.json``)
in this folder, trained by ``labelflip train`` with the command recorded in
its sidecar (``training.command``). The SHA-256 of both files is written
below, in the package's code: a zoo model loads only if both files match,
so a modified weights file *or* sidecar is refused with one line.

    >>> from labelflip.models import load_zoo
    >>> clf, meta = load_zoo("cw-mnist-fgsm-rs")

In a run config: ``[model] zoo = "cw-mnist"``. ``labelflip models`` lists
the zoo with each model's clean and robust test accuracy; docs/models.md
tells how each was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.checkpoint import (
    CheckpointMeta,
    checkpoint_paths,
    load_checkpoint,
    read_meta,
    sha256_file,
)
from labelflip.models.classifier import Classifier

ZOO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ZooEntry:
    """One shipped model: what it is and the SHA-256 of its two files."""

    description: str
    weights_sha256: str
    sidecar_sha256: str


# The files `labelflip train` wrote (commands in their sidecars and docs/models.md).
ENTRIES: dict[str, ZooEntry] = {
    "digits-cnn": ZooEntry(
        "small CNN on scikit-learn's 8x8 digits, standard training",
        "957639c23661c198cfad1952e1218a4e0f40f7a748674df3ba3d6911e553d557",
        "41dd798faca94e337a3fd44e63dbb95143cb95dfd5fd3f4716228cebae824f00",
    ),
    "digits-cnn-pgd": ZooEntry(
        "digits-cnn, PGD adversarial training (Madry et al. 2018), linf eps 0.1",
        "6526ad5b0fa5ed7c3376c93fe0c26e4efdd828f1ba0101f07c92345cc2645805",
        "62f0db41a413af2981d55bc1847326c8c46744d3b38a29d74b2f4a7c3d8a25ed",
    ),
    "cw-mnist": ZooEntry(
        "Carlini & Wagner's MNIST CNN, standard training (one-cycle, 6 epochs)",
        "9edbeaf65e67a919f822c3791389bf19faa1ff990dea97f13fca8d653ebfdbea",
        "22f81b306854066f136f8155708cde3843f3225386ccdcf336013f5d2eec3db1",
    ),
    "cw-mnist-fgsm-rs": ZooEntry(
        "cw-mnist, FGSM-RS adversarial training (Wong et al. 2020), linf eps 0.3",
        "b612fca7ca1faee0cc0692ddcdaf82c0e2f95c1be519c334d08a01e5143a20b2",
        "8e153a2b6bacb86ac3667fd12a531b212c403d4eec07574b7bd3d29661c7b019",
    ),
    "cw-cifar": ZooEntry(
        "Carlini & Wagner's CIFAR CNN on the whole JPEG CIFAR-10, crop+flip, one-cycle, 30 epochs",
        "1adac895ef5a8a4ad6d402c92f7a20214ae82c74183436614faeec5ac0a718b6",
        "0b8d6cae3489456070f362e123710ae47ed45c574e1abe55ab94f0d50b53b551",
    ),
    "mlp-mnist": ZooEntry(
        "the Type I paper's MLP (128 hidden units) on MNIST, standard training",
        "fe2c1c3b5db104a1fbb9c718e083af1b00f3edf47b7cb8a97c371a4329c01fce",
        "59018c07b24a5a3946a6d0969301607ced749ad26c556d6451837f067adfa80d",
    ),
}


@dataclass(frozen=True)
class Zoo:
    """A folder of checkpoints and the manifest of their hashes."""

    directory: Path
    entries: Mapping[str, ZooEntry]

    def names(self) -> list[str]:
        return list(self.entries)

    def path(self, name: str) -> Path:
        """The weights path of zoo model ``name``, after checking both of its
        files against the manifest (one-line error otherwise)."""
        entry = self.entry(name)
        weights, sidecar = checkpoint_paths(self.directory / name)
        for path, expected in ((weights, entry.weights_sha256), (sidecar, entry.sidecar_sha256)):
            if not path.is_file():
                raise LabelflipError(
                    f"zoo model '{name}' is missing its file {path} (reinstall labelflip)"
                )
            digest = sha256_file(path)
            if digest != expected:
                raise LabelflipError(
                    f"zoo model '{name}': {path.name} does not match the SHA-256 shipped with "
                    f"labelflip (expected {expected[:12]}..., got {digest[:12]}...): modified or "
                    "corrupted; reinstall labelflip"
                )
        return weights

    def entry(self, name: str) -> ZooEntry:
        if name not in self.entries:
            raise unknown_name("zoo model", str(name), self.entries)
        return self.entries[name]

    def meta(self, name: str) -> CheckpointMeta:
        """The verified sidecar of zoo model ``name``."""
        return read_meta(self.path(name))

    def load(
        self, name: str, *, device: str | torch.device = "cpu"
    ) -> tuple[Classifier, CheckpointMeta]:
        """Zoo model ``name`` as a :class:`Classifier` and its sidecar, both files verified."""
        return load_checkpoint(self.path(name), device=device)

    def rows(self) -> list[dict[str, Any]]:
        """One summary per model, for listings: name, description,
        architecture, dataset, training method, clean and robust test
        accuracy, the robust evaluation and the training command."""
        out = []
        for name, entry in self.entries.items():
            meta = self.meta(name)
            training = meta.training
            adv = training.get("adversarial")
            out.append(
                {
                    "name": name,
                    "description": entry.description,
                    "architecture": meta.architecture,
                    "dataset": meta.dataset,
                    "training": "standard" if not adv else _adversarial_text(adv),
                    "clean_test_accuracy": meta.clean_test_accuracy,
                    "robust_test": training.get("robust_test"),
                    "command": training.get("command"),
                    "seconds": training.get("seconds"),
                    "threads": training.get("threads"),
                }
            )
        return out


def _adversarial_text(adv: Mapping[str, Any]) -> str:
    return f"{adv['method']} ({adv['norm']} eps {adv['eps']:g})"


ZOO = Zoo(ZOO_DIR, ENTRIES)


def zoo_names() -> list[str]:
    """The names of the shipped models."""
    return ZOO.names()


def zoo_path(name: str) -> Path:
    """The verified weights path of shipped model ``name``."""
    return ZOO.path(name)


def load_zoo(name: str, *, device: str | torch.device = "cpu") -> tuple[Classifier, CheckpointMeta]:
    """Shipped model ``name`` (e.g. ``"cw-mnist-fgsm-rs"``) as a
    :class:`Classifier` and its sidecar; both files are checked against the
    SHA-256 shipped in the package's code before anything is read."""
    return ZOO.load(name, device=device)


__all__ = ["ENTRIES", "ZOO", "ZOO_DIR", "Zoo", "ZooEntry", "load_zoo", "zoo_names", "zoo_path"]
