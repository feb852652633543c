"""The supervised variational autoencoder (SVAE) of the Type I attack paper.

Tang, Huang, Chen, Sun, Yang, "Adversarial Attack Type I: Cheat Classifiers
by Significant Changes" (``papers/type-i-attack.txt``), §III-A:

- encoder ``f_enc``: ``x -> (μ(x), log σ²(x))``, ``q(z|x) = N(μ, σ²)``;
- decoder ``f_dec``: ``z -> x`` in ``[0, 1]`` (sigmoid output);
- latent classifier ``f2``: ``z -> `` class logits, ``p(y|z)`` (the attacker,
  the stand-in for the oracle);
- latent discriminator ``f_dis``: ``z -> `` one logit, ``σ(logit)`` the
  probability that ``z`` is a *real* code ``z ~ q(z|x)`` rather than a draw
  from ``N(0, I)`` (eq. 7).

Training follows Algorithm 1 in two stages. Stage 1 maximises eq. 6,
``J = −(J_KL + J2 + J_dec)``: the three terms are **unweighted** in the
paper (eqs. 5–6 are the evidence lower bound of ``p(x, y)``); the weights
``α`` (discriminator) and ``γ`` (``‖z‖₂``) of §IV belong to the *attack*
objective, eq. 8, not to training (see :mod:`labelflip.attacks.type_i`). Here
``J_dec`` is the Bernoulli log-likelihood (binary cross-entropy summed over
pixels), ``J_KL`` the closed-form KL to ``N(0, I)`` and ``J2`` the
cross-entropy of ``f2`` on a reparameterised ``z``, each summed per sample
and averaged over the batch. Stage 2 trains only ``f_dis`` to tell
``z_true ~ N(μ(x), σ(x))`` (positives) from ``z_fake ~ N(0, I)``
(negatives); eq. 7 is written with probabilities, we maximise its usual
log form (binary cross-entropy on the logit), which has the same optimum.

Two encoder/decoder families (``SVAEConfig.arch``), both sized for a CPU
(MNIST 28×28×1, digits 8×8×1, small image folders); the paper puts its
architecture in a supplement we do not have. ``"mlp"`` (the default, and
what sidecars written before ``arch`` existed hold): MLPs over the flattened
image. ``"conv"``: two stride-2 4×4 convolutions (32, 64 channels) and a
hidden fully connected layer to ``(μ, log σ²)``; the decoder mirrors them
with transposed convolutions (``output_padding`` chosen per layer so that
any ``H, W ≥ 4`` comes back exactly) and a sigmoid. ``f2`` and ``f_dis`` are
MLPs on ``z`` in both. Training is
deterministic under ``seed``: shuffling and every Gaussian draw come from one
explicit ``torch.Generator``; weight initialisation uses the global RNG,
seeded inside ``torch.random.fork_rng`` (as :mod:`labelflip.models.training`).

Checkpoints are ``NAME.safetensors`` plus a ``NAME.json`` sidecar (format
``labelflip-svae/1``) holding the configuration, training record, library
versions and the weights' SHA-256, verified on every load.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from labelflip.data import Dataset
from labelflip.errors import LabelflipError
from labelflip.models.checkpoint import (
    check_writable,
    checkpoint_paths,
    library_versions,
    mismatch_detail,
    read_sidecar,
    read_verified_weights,
    write_weights,
)
from labelflip.models.training import progress_bar

FORMAT = "labelflip-svae/1"
SVAE_ARCHS = ("mlp", "conv")


@dataclass(frozen=True)
class SVAEConfig:
    """What is needed to build the SVAE's networks."""

    input_shape: tuple[int, int, int]
    num_classes: int
    latent_dim: int = 16
    hidden: int = 256
    class_names: tuple[str, ...] = ()
    arch: str = "mlp"

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise LabelflipError(f"SVAE input shape must be (C, H, W), got {self.input_shape}")
        if self.arch not in SVAE_ARCHS:
            raise LabelflipError(
                f"unknown SVAE architecture '{self.arch}' (known: {', '.join(SVAE_ARCHS)})"
            )
        if self.arch == "conv" and min(self.input_shape[1:]) < 4:
            h, w = self.input_shape[1:]
            raise LabelflipError(
                f"the conv SVAE needs inputs of at least 4x4 pixels, got {h}x{w}; "
                "use the mlp SVAE (--svae-arch mlp)"
            )
        if self.num_classes < 2:
            raise LabelflipError(f"SVAE needs at least 2 classes, got {self.num_classes}")
        if self.latent_dim < 1:
            raise LabelflipError(f"SVAE latent dimension must be >= 1, got {self.latent_dim}")
        if self.hidden < 1:
            raise LabelflipError(f"SVAE hidden width must be >= 1, got {self.hidden}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise LabelflipError(
                f"{len(self.class_names)} class names given for an SVAE with "
                f"{self.num_classes} classes"
            )


@dataclass(frozen=True)
class SVAESettings:
    """Training settings (paper §IV: Adam, learning rate 2e-4)."""

    epochs: int = 10
    dis_epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-4
    dis_lr: float = 2e-4
    latent_dim: int = 16
    hidden: int = 256
    seed: int = 0
    arch: str = "mlp"

    def validate(self) -> None:
        if self.arch not in SVAE_ARCHS:
            raise LabelflipError(
                f"unknown SVAE architecture '{self.arch}' (known: {', '.join(SVAE_ARCHS)})"
            )
        for name in ("epochs", "batch_size", "latent_dim", "hidden"):
            if getattr(self, name) < 1:
                raise LabelflipError(f"SVAE {name} must be >= 1, got {getattr(self, name)}")
        if self.dis_epochs < 0:
            raise LabelflipError(f"SVAE dis_epochs must be >= 0, got {self.dis_epochs}")
        for name in ("lr", "dis_lr"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise LabelflipError(f"SVAE {name} must be a positive number, got {v}")


class SVAE(nn.Module):
    """Encoder, decoder, latent classifier ``f2`` and discriminator ``f_dis``
    (paper §III-A, Fig. 4). Any four modules with the shapes below fit (the
    tests build a hand-made one); :func:`build_svae` makes the default networks.

    - ``encoder``: ``(N, C, H, W) -> (N, 2·latent_dim)`` (``μ`` then ``log σ²``);
    - ``decoder``: ``(N, latent_dim) -> (N, C·H·W)`` or ``(N, C, H, W)``, in ``[0, 1]``;
    - ``classifier``: ``(N, latent_dim) -> (N, num_classes)`` logits;
    - ``discriminator``: ``(N, latent_dim) -> (N, 1)`` logit (real vs. ``N(0, I)``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        classifier: nn.Module,
        discriminator: nn.Module,
        config: SVAEConfig,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = classifier
        self.discriminator = discriminator
        self.eval()

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.config.input_shape

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ(x), log σ²(x))`` of ``q(z|x)`` (eq. 6)."""
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise LabelflipError(
                f"input shape {tuple(x.shape[1:])} does not match the SVAE's "
                f"input shape {tuple(self.input_shape)}"
            )
        h = self.encoder(x)
        mu, logvar = h[:, : self.latent_dim], h[:, self.latent_dim :]
        return mu, logvar.clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``f_dec(z)``: images ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.decoder(z).reshape(z.shape[0], *self.input_shape)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``f2(z)``: class logits (the attacker, eq. 8)."""
        return self.classifier(z)

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        """``f_dis(z)`` as a logit, shape ``(N,)``; ``sigmoid`` of it is the
        probability that ``z`` is a real code (eq. 7)."""
        return self.discriminator(z).reshape(z.shape[0])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """``f2(μ(x))``: the attacker's class for images ``x``, without gradients."""
        out = [
            self.classify(self.encode(x[i : i + batch_size])[0]).argmax(1)
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def _mlp(sizes: Sequence[int], last: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


def _down(size: int) -> int:
    """Output size of a 4×4 convolution with stride 2 and padding 1."""
    return (size + 2 - 4) // 2 + 1


def _conv_nets(config: SVAEConfig) -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder of the ``"conv"`` SVAE (see the module docstring)."""
    c, h, w = config.input_shape
    hid, d = config.hidden, config.latent_dim
    h1, w1 = _down(h), _down(w)
    h2, w2 = _down(h1), _down(w1)
    flat = 64 * h2 * w2
    encoder = nn.Sequential(
        nn.Conv2d(c, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(flat, hid), nn.ReLU(),
        nn.Linear(hid, 2 * d),
    )  # fmt: skip
    # a transposed 4×4 conv, stride 2, padding 1 maps n to 2n + output_padding
    decoder = nn.Sequential(
        nn.Linear(d, hid), nn.ReLU(),
        nn.Linear(hid, flat), nn.ReLU(),
        nn.Unflatten(1, (64, h2, w2)),
        nn.ConvTranspose2d(
            64, 32, 4, stride=2, padding=1, output_padding=(h1 - 2 * h2, w1 - 2 * w2)
        ),
        nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, stride=2, padding=1, output_padding=(h - 2 * h1, w - 2 * w1)),
        nn.Sigmoid(),
    )  # fmt: skip
    return encoder, decoder


def build_svae(config: SVAEConfig) -> SVAE:
    """The default SVAE. ``config.arch == "mlp"``: MLPs ``D–h–h–2d``
    (encoder) and ``d–h–h–D`` + sigmoid (decoder); ``"conv"``: the
    convolutional encoder/decoder of the module docstring. Both: MLPs
    ``d–h/2–h/2–K`` (``f2``) and ``d–h/2–1`` (``f_dis``), with ``D = C·H·W``,
    ``h`` = ``config.hidden``, ``d`` = ``config.latent_dim``."""
    config.validate()
    c, h, w = config.input_shape
    d_in, hid, d = c * h * w, config.hidden, config.latent_dim
    half = max(hid // 2, 8)
    encoder: nn.Module
    decoder: nn.Module
    if config.arch == "conv":
        encoder, decoder = _conv_nets(config)
    else:
        encoder = nn.Sequential(nn.Flatten(), _mlp([d_in, hid, hid, 2 * d]))
        decoder = _mlp([d, hid, hid, d_in], nn.Sigmoid())
    classifier = _mlp([d, half, half, config.num_classes])
    discriminator = _mlp([d, half, 1])
    return SVAE(encoder, decoder, classifier, discriminator, config)


# ----------------------------------------------------------------------------- losses


def stage1_losses(
    svae: SVAE, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The three terms of eq. 6 on a batch, each summed per sample and
    averaged over the batch: ``kl`` (``J_KL``), ``cls`` (``J2``, cross-entropy
    of ``f2`` on ``z = μ + σ·ε``), ``rec`` (``J_dec``, Bernoulli negative
    log-likelihood summed over pixels) and their sum ``total`` (``−J``)."""
    mu, logvar = svae.encode(x)
    eps = torch.randn(mu.shape, generator=generator, device=generator.device).to(mu)
    z = mu + torch.exp(0.5 * logvar) * eps
    x_rec = svae.decode(z).clamp(1e-6, 1 - 1e-6)
    rec = F.binary_cross_entropy(x_rec, x, reduction="none").flatten(1).sum(1).mean()
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()
    cls = F.cross_entropy(svae.classify(z), y)
    return {"total": rec + kl + cls, "rec": rec, "kl": kl, "cls": cls}


def stage2_loss(svae: SVAE, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Negative log form of eq. 7: binary cross-entropy of ``f_dis`` with
    ``z_true ~ N(μ(x), σ(x))`` as positives and ``z_fake ~ N(0, I)`` as
    negatives (the encoder is fixed: no gradient reaches it)."""
    with torch.no_grad():
        mu, logvar = svae.encode(x)
        e1 = torch.randn(mu.shape, generator=generator, device=generator.device).to(mu)
        z_true = mu + torch.exp(0.5 * logvar) * e1
        z_fake = torch.randn(mu.shape, generator=generator, device=generator.device).to(mu)
    logits = torch.cat([svae.discriminate(z_true), svae.discriminate(z_fake)])
    labels = torch.cat([torch.ones(len(mu)), torch.zeros(len(mu))]).to(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


# --------------------------------------------------------------------------- training


@dataclass
class SVAEEpoch:
    """One epoch: ``stage`` 1 (encoder/decoder/f2) or 2 (discriminator), the
    mean losses and, for stage 1, f2's training accuracy on ``μ(x)``."""

    stage: int
    epoch: int
    losses: dict[str, float]
    seconds: float
    train_accuracy: float | None = None


@dataclass
class SVAETraining:
    history: list[SVAEEpoch] = field(default_factory=list)
    seconds: float = 0.0


def train_svae(
    dataset: Dataset,
    settings: SVAESettings,
    progress: bool = True,
    *,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[SVAEEpoch], None] | None = None,
    record: SVAETraining | None = None,
) -> SVAE:
    """Train an SVAE on ``dataset`` in the two stages of Algorithm 1.

    Stage 1 (``settings.epochs`` epochs, Adam ``settings.lr``) minimises
    ``J_KL + J2 + J_dec`` (eq. 6) over encoder, decoder and ``f2``; stage 2
    (``settings.dis_epochs`` epochs, Adam ``settings.dis_lr``) minimises the
    discriminator loss (eq. 7) over ``f_dis`` alone. Deterministic under
    ``settings.seed``; the caller's global RNG state is left untouched. Pass
    ``record`` to receive the per-epoch history."""
    settings.validate()
    if dataset.multilabel:
        raise LabelflipError(f"the SVAE needs one class per image; '{dataset.name}' is multi-label")
    if len(dataset) < 1:
        raise LabelflipError(f"dataset '{dataset.name}' is empty")
    device = torch.device(device)
    record = record if record is not None else SVAETraining()
    gen = torch.Generator().manual_seed(settings.seed)
    config = SVAEConfig(
        input_shape=tuple(dataset.input_shape),  # type: ignore[arg-type]
        num_classes=dataset.num_classes,
        latent_dim=settings.latent_dim,
        hidden=settings.hidden,
        class_names=tuple(dataset.class_names),
        arch=settings.arch,
    )
    config.validate()
    x_all, y_all = dataset.x.to(device), dataset.y.to(device)
    n = len(dataset)
    steps = math.ceil(n / settings.batch_size)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        svae = build_svae(config).to(device)
        # Stage 1: encoder, decoder, f2 (Algorithm 1, first loop).
        params = [
            *svae.encoder.parameters(),
            *svae.decoder.parameters(),
            *svae.classifier.parameters(),
        ]
        opt = torch.optim.Adam(params, lr=settings.lr)
        for epoch in range(1, settings.epochs + 1):
            t0 = time.perf_counter()
            svae.train()
            sums = {"total": 0.0, "rec": 0.0, "kl": 0.0, "cls": 0.0}
            correct = 0
            order = torch.randperm(n, generator=gen)
            bar = progress_bar(steps, f"svae stage 1 epoch {epoch}/{settings.epochs}", progress)
            for i in range(0, n, settings.batch_size):
                idx = order[i : i + settings.batch_size].to(device)
                xb, yb = x_all[idx], y_all[idx]
                losses = stage1_losses(svae, xb, yb, gen)
                if not torch.isfinite(losses["total"]):
                    raise LabelflipError(
                        f"SVAE training diverged at epoch {epoch}; lower the learning rate "
                        f"(now {settings.lr})"
                    )
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                opt.step()
                for k, v in losses.items():
                    sums[k] += float(v.detach()) * len(yb)
                with torch.no_grad():
                    correct += int((svae.classify(svae.encode(xb)[0]).argmax(1) == yb).sum())
                if bar is not None:
                    bar.update(1)
                    seen = min(i + settings.batch_size, n)
                    bar.set_postfix(loss=f"{sums['total'] / seen:.2f}", acc=f"{correct / seen:.3f}")
            if bar is not None:
                bar.close()
            stats = SVAEEpoch(
                1, epoch, {k: v / n for k, v in sums.items()}, time.perf_counter() - t0, correct / n
            )
            record.history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
        # Stage 2: the discriminator alone (Algorithm 1, second loop).
        svae.eval()
        dis_opt = torch.optim.Adam(svae.discriminator.parameters(), lr=settings.dis_lr)
        for epoch in range(1, settings.dis_epochs + 1):
            t0 = time.perf_counter()
            svae.discriminator.train()
            total = 0.0
            order = torch.randperm(n, generator=gen)
            bar = progress_bar(steps, f"svae stage 2 epoch {epoch}/{settings.dis_epochs}", progress)
            for i in range(0, n, settings.batch_size):
                idx = order[i : i + settings.batch_size].to(device)
                loss = stage2_loss(svae, x_all[idx], gen)
                dis_opt.zero_grad(set_to_none=True)
                loss.backward()
                dis_opt.step()
                total += float(loss.detach()) * len(idx)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / min(i + settings.batch_size, n):.4f}")
            if bar is not None:
                bar.close()
            stats = SVAEEpoch(2, epoch, {"dis": total / n}, time.perf_counter() - t0)
            record.history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
        svae.eval()
    record.seconds = time.perf_counter() - start
    return svae


def svae_accuracy(svae: SVAE, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` that ``f2(μ(x))`` classifies as ``y``."""
    if len(x) == 0:
        raise LabelflipError("cannot measure accuracy on an empty set")
    return float((svae.predict(x).cpu() == y.cpu()).double().mean())


def train_and_save_svae(
    dataset: str,
    settings: SVAESettings,
    out: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[SVAEEpoch], None] | None = None,
    on_start: Callable[[Dataset, Dataset], None] | None = None,
) -> tuple[Path, float]:
    """Train an SVAE on ``dataset``'s train split (:func:`train_svae`),
    measure ``f2`` on the test split and save it at ``out`` with the dataset,
    the settings and that accuracy; returns the weights path and the
    accuracy. ``on_start(train_set, test_set)`` runs once the data is loaded.
    Used by ``labelflip train --arch svae`` and by runs that train their
    ``[svae]``."""
    from labelflip.data import check_splits_match, load_dataset

    settings.validate()
    train_set = load_dataset(dataset, "train", data_dir)
    test_set = load_dataset(dataset, "test", data_dir)
    check_splits_match(train_set, test_set, data_dir)
    check_writable(out)
    if on_start is not None:
        on_start(train_set, test_set)
    svae = train_svae(train_set, settings, progress, device=device, on_epoch=on_epoch)
    acc = svae_accuracy(svae, test_set.x.to(device), test_set.y)
    path = save_svae(
        out, svae, {"dataset": dataset, **asdict(settings), "f2_test_accuracy": round(acc, 6)}
    )
    return path, acc


# ------------------------------------------------------------------------- checkpoints


def save_svae(
    path: str | os.PathLike[str], svae: SVAE, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``svae``'s weights (safetensors) and a JSON sidecar atomically;
    returns the weights path. ``extra`` (JSON-serialisable: dataset,
    settings, accuracy...) is stored under ``"training"``."""
    cfg = asdict(svae.config)
    meta = {
        "format": FORMAT,
        "config": {**cfg, "input_shape": list(cfg["input_shape"])},
        "training": extra or {},
        "versions": library_versions(),
    }
    return write_weights(
        path,
        svae.state_dict(),
        lambda sha256: {**meta, "weights_sha256": sha256},
        metadata={"format": FORMAT},
    )


def load_svae(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[SVAE, dict[str, Any]]:
    """Load an SVAE written by :func:`save_svae`, verifying the SHA-256 of
    its weights; returns ``(svae, sidecar)``."""
    meta = read_sidecar(path, FORMAT, "SVAE")
    weights, sidecar = checkpoint_paths(path)
    state = read_verified_weights(path, str(meta.get("weights_sha256")))
    try:
        cfg = dict(meta["config"])
        cfg["input_shape"] = tuple(cfg["input_shape"])
        cfg["class_names"] = tuple(cfg.get("class_names", ()))
        cfg.setdefault("arch", "mlp")  # sidecars written before "arch" existed
        config = SVAEConfig(**cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise LabelflipError(f"SVAE sidecar {sidecar} has a bad config: {e}") from None
    svae = build_svae(config)
    try:
        svae.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise LabelflipError(
            f"SVAE weights {weights.name} do not fit their config: {mismatch_detail(e)}"
        ) from None
    return svae.to(device).eval(), meta
