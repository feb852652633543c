"""Perceptual class distance: Hausdorff distance between classes' feature sets.

LabelFool (Cheng et al., "LabelFool: A Trick in the Label Space", §III-A)
measures the distance between two images by the cosine distance of
features a pre-trained classifier extracts from them,
``d(x, y) = 1 - cos(phi_x, phi_y)``, and the distance between two classes
``i`` and ``j`` by the (symmetric) Hausdorff distance between their sets of
images::

    h(i -> j) = max_{a in i} min_{b in j} d(a, b)
    D[i, j]   = max(h(i -> j), h(j -> i))

By default ``phi`` is the penultimate-layer feature vector: the input of the
model's last ``nn.Linear``.

Cost. Every image is compared with every other, so the matrix costs
``O(n^2 d)`` multiply-adds for ``n`` images with ``d``-dimensional features
(CIFAR-10 train, ``n = 50 000``, ``d = 256``: about ``6.4e11``), while the
full ``n x n`` similarity matrix (10 GB in float32) never exists:
:func:`hausdorff_class_distances` sorts images by class and, for each block
of ``block_rows`` images and each class's column range (in chunks of
``block_cols``), does one matrix product of unit feature vectors and keeps
only its row-wise maximum, the closest image of that class. Memory is
``O(block_rows * block_cols + n * k)``. ``per_class`` in
:func:`perceptual_distance` caps the images per class to trade exactness
for time (the cost falls quadratically with the cap).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from labelflip.errors import LabelflipError
from labelflip.similarity._matrix import ClassDistance

NORMALIZE_EPS = 1e-12


def penultimate_layer(model: nn.Module) -> str:
    """Qualified name of the last ``nn.Linear`` in ``model.named_modules()`` order.

    Its *input* is the penultimate-layer feature vector LabelFool (§III-A)
    extracts perceptual features from. Module order is registration order,
    which for the reference architectures (``CWNet.classifier[-1]``,
    ``PreActResNet18.linear``, ``DigitsCNN.classifier[-1]``) is the output
    layer.
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise LabelflipError(
            f"model {type(model).__name__} has no nn.Linear layer; name a feature layer explicitly"
        )
    return last


def _unwrap(clf: nn.Module) -> nn.Module:
    """The module whose submodules layer names refer to (``clf.model`` for a Classifier)."""
    inner = getattr(clf, "model", None)
    return inner if isinstance(inner, nn.Module) else clf


def _find_layer(root: nn.Module, layer: str) -> nn.Module:
    modules = dict(root.named_modules())
    if layer in modules:
        return modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise LabelflipError(
        f"unknown layer '{layer}' in model {type(root).__name__}{hint} (layers: {shown})"
    )


def _default_device(root: nn.Module, x: torch.Tensor) -> torch.device:
    for p in root.parameters():
        return p.device
    return x.device


@torch.no_grad()
def extract_features(
    clf: nn.Module,
    x: torch.Tensor,
    *,
    layer: str | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Per-image feature vectors ``(n, d)``, float32 on the CPU.

    ``clf`` is a :class:`~labelflip.models.Classifier` (called as ``clf(x)``
    so its normalisation applies; ``x`` in its bounds) or a plain module.
    ``layer=None`` takes the input of the last ``nn.Linear``
    (:func:`penultimate_layer`) through a forward pre-hook; a layer name takes
    the output of that submodule of ``clf.model`` (of ``clf`` for a plain
    module), flattened per image. Runs without gradients in batches of
    ``batch_size`` on ``device`` (default: the model's parameters' device;
    an explicit ``device`` moves the model there); a plain module is put in
    eval mode for the duration. If the layer runs several times in one
    forward pass, its last call counts. ``progress(done, n)`` is called after
    each batch (images done).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LabelflipError(f"batch_size must be a positive integer, got {batch_size!r}")
    x = torch.as_tensor(x)
    root = _unwrap(clf)
    if layer is None:
        module = _find_layer(root, penultimate_layer(root))
    else:
        module = _find_layer(root, layer)
    dev = torch.device(device) if device is not None else _default_device(root, x)
    if len(x) == 0:
        return torch.empty((0, 0), dtype=torch.float32)

    captured: list[torch.Tensor] = []

    def pre_hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])

    def hook(_m: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        captured.append(output)

    if layer is None:
        handle = module.register_forward_pre_hook(pre_hook)
    else:
        handle = module.register_forward_hook(hook)
    was_training = clf.training
    try:
        if clf is root:
            clf.eval()
        if device is not None:
            clf.to(dev)
        out: list[torch.Tensor] = []
        for start in range(0, len(x), batch_size):
            captured.clear()
            batch = x[start : start + batch_size].to(dev)
            clf(batch)
            if not captured:
                name = layer if layer is not None else penultimate_layer(root)
                raise LabelflipError(f"layer '{name}' was not used in the model's forward pass")
            feats = captured[-1]
            if not isinstance(feats, torch.Tensor):
                raise LabelflipError(
                    f"layer '{layer}' does not output a tensor (got {type(feats).__name__})"
                )
            out.append(feats.detach().reshape(len(batch), -1).float().cpu())
            if progress is not None:
                progress(start + len(batch), len(x))
        return torch.cat(out)
    finally:
        handle.remove()
        if clf is root:
            clf.train(was_training)


def _labels(labels: ArrayLike | torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.ndim != 1 or len(t) != n:
        raise LabelflipError(
            f"labels must be a 1-D array of {n} entries, got shape {tuple(t.shape)}"
        )
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise LabelflipError(f"labels must be integers, got dtype {t.dtype}")
    t = t.long().cpu()
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise LabelflipError(f"labels must lie in [0, {num_classes}), found {bad}")
    return t


def _num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise LabelflipError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise LabelflipError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def _check_missing(counts: Sequence[int]) -> None:
    missing = [c for c, n in enumerate(counts) if n == 0]
    if missing:
        listed = ", ".join(str(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise LabelflipError(
            f"class(es) {listed} have no images; the Hausdorff distance needs every class"
        )


def _features(features: ArrayLike | torch.Tensor) -> torch.Tensor:
    f = torch.as_tensor(features)
    if f.ndim != 2:
        raise LabelflipError(f"features must be a 2-D (n, d) array, got shape {tuple(f.shape)}")
    if not f.is_floating_point():
        f = f.float()
    if not bool(torch.isfinite(f).all()):
        raise LabelflipError("features contain NaN or Inf values")
    return f


def hausdorff_class_distances(
    features: torch.Tensor | ArrayLike,
    labels: torch.Tensor | ArrayLike,
    num_classes: int,
    *,
    block_rows: int = 2048,
    block_cols: int = 8192,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Symmetric Hausdorff distances between classes under ``d = 1 - cos`` (LabelFool §III-A).

    Returns the ``(num_classes, num_classes)`` float64 matrix
    ``D[i, j] = max(h(i -> j), h(j -> i))`` with
    ``h(i -> j) = max_{a in i} min_{b in j} (1 - cos(a, b))``, zero diagonal,
    tiny negative rounding clamped to 0.

    Features are L2-normalised (``F.normalize``, eps ``1e-12``), so an all-zero
    feature vector stays zero: its cosine with everything (itself included) is
    0 and its distance 1. Computation is float32 on ``device`` (default: the
    features' device), without the ``n x n`` matrix: images are sorted by
    label, and for each block of ``block_rows`` images and each class's column
    range (chunks of ``block_cols``) one matrix product gives cosines whose
    row maximum is that image's closest image of the class. Cost
    ``O(n^2 d)``; memory ``O(block_rows * block_cols + n * k)``.
    ``progress(done, n)`` is called after each block of rows (images done).
    """
    k = _num_classes(num_classes)
    for name, value in (("block_rows", block_rows), ("block_cols", block_cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabelflipError(f"{name} must be a positive integer, got {value!r}")
    f = _features(features)
    n = len(f)
    y = _labels(labels, n, k)
    counts = torch.bincount(y, minlength=k)
    _check_missing(counts.tolist())

    dev = torch.device(device) if device is not None else f.device
    order = torch.argsort(y, stable=True)
    f = F.normalize(f.to(dev, torch.float32)[order.to(dev)], dim=1, eps=NORMALIZE_EPS)
    bounds = [0, *torch.cumsum(counts, 0).tolist()]

    # max_cos[a, j]: cosine of image a with its closest image of class j
    max_cos = torch.empty((n, k), dtype=torch.float32, device=dev)
    for r0 in range(0, n, block_rows):
        rows = f[r0 : r0 + block_rows]
        for j in range(k):
            best = None
            for c0 in range(bounds[j], bounds[j + 1], block_cols):
                c1 = min(c0 + block_cols, bounds[j + 1])
                m = (rows @ f[c0:c1].T).amax(dim=1)
                best = m if best is None else torch.maximum(best, m)
            max_cos[r0 : r0 + block_rows, j] = best
        if progress is not None:
            progress(min(r0 + block_rows, n), n)

    # h[i, j] = max over images a of class i of (1 - max_cos[a, j])
    min_dist = 1.0 - max_cos
    h = torch.stack([min_dist[bounds[i] : bounds[i + 1]].amax(dim=0) for i in range(k)])
    d = torch.maximum(h, h.T).double().cpu().numpy()
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, None)


def hausdorff_reference(
    features: torch.Tensor | ArrayLike, labels: torch.Tensor | ArrayLike, num_classes: int
) -> np.ndarray:
    """Naive float64 reference of :func:`hausdorff_class_distances` (for tests).

    Builds the full ``n x n`` matrix ``1 - cos`` in numpy and takes the
    max-min per class pair; ``O(n^2)`` memory, so only for small inputs.
    """
    k = _num_classes(num_classes)
    f = _features(features).double().cpu().numpy()
    y = _labels(labels, len(f), k).numpy()
    _check_missing(np.bincount(y, minlength=k).tolist())
    norms = np.maximum(np.linalg.norm(f, axis=1, keepdims=True), NORMALIZE_EPS)
    u = f / norms
    dist = 1.0 - u @ u.T
    h = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            h[i, j] = dist[np.ix_(y == i, y == j)].min(axis=1).max()
    d = np.maximum(h, h.T)
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, None)


def sample_per_class(
    labels: torch.Tensor | ArrayLike, per_class: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Sorted indices with at most ``per_class`` images of each class.

    Each class with more images keeps a random subset drawn with
    ``torch.randperm(generator=generator)`` (classes in increasing label
    order, so equal generators give equal subsets); ``per_class=None`` keeps
    everything.
    """
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1:
        raise LabelflipError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    y = y.cpu().long()
    if per_class is None:
        return torch.arange(len(y))
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise LabelflipError(f"per_class must be a positive integer or None, got {per_class!r}")
    keep = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        if len(idx) > per_class:
            idx = idx[torch.randperm(len(idx), generator=generator)[:per_class]]
        keep.append(idx)
    if not keep:
        return torch.empty(0, dtype=torch.long)
    return torch.sort(torch.cat(keep)).values


def perceptual_distance(
    clf: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | ArrayLike,
    *,
    class_names: Sequence[str],
    layer: str | None = None,
    per_class: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    split: str = "",
    progress: Callable[[str, int, int], None] | None = None,
) -> ClassDistance:
    """LabelFool's perceptual class distance (§III-A) as a :class:`ClassDistance`.

    Keeps at most ``per_class`` images per class (:func:`sample_per_class`;
    ``generator`` defaults to one seeded with 0), extracts features with
    :func:`extract_features` and computes :func:`hausdorff_class_distances`.
    The paper uses all training images (``per_class=None``); the cost is
    ``O(n^2 d)``. ``info`` records the layer (``layer``, and ``layer_io``:
    whether its input or output was used), ``split``, ``images``,
    ``per_class``, ``images_per_class``, ``feature_dim`` and the seconds each
    stage took. ``progress(stage, done, total)`` follows the two stages
    (``"features"``, ``"Hausdorff"``; images done of the images kept).
    """
    names = tuple(str(c) for c in class_names)
    k = len(names)
    if k == 0:
        raise LabelflipError("class_names is empty")
    x = torch.as_tensor(x)
    labels = _labels(y, len(x), k)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    idx = sample_per_class(labels, per_class, generator)
    xs, ys = x[idx.to(x.device)], labels[idx]
    counts = torch.bincount(ys, minlength=k)
    missing = [names[c] for c in range(k) if counts[c] == 0]
    if missing:
        raise LabelflipError(
            f"class(es) {', '.join(repr(m) for m in missing[:10])} have no images; "
            "the perceptual distance needs every class"
        )

    root = _unwrap(clf)
    resolved = penultimate_layer(root) if layer is None else layer

    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if progress is None else lambda done, total: progress(name, done, total)

    t0 = time.perf_counter()
    feats = extract_features(
        clf, xs, layer=layer, batch_size=batch_size, device=device, progress=stage("features")
    )
    t1 = time.perf_counter()
    dev = device if device is not None else _default_device(root, xs)
    matrix = hausdorff_class_distances(feats, ys, k, device=dev, progress=stage("Hausdorff"))
    t2 = time.perf_counter()
    info: dict[str, Any] = {
        "method": "LabelFool III-A: Hausdorff distance under 1 - cos of features",
        "layer": resolved,
        "layer_io": "input" if layer is None else "output",
        "split": split,
        "images": int(len(idx)),
        "per_class": per_class,
        "images_per_class": counts.tolist(),
        "feature_dim": int(feats.shape[1]),
        "seconds_features": round(t1 - t0, 6),
        "seconds_distances": round(t2 - t1, 6),
    }
    return ClassDistance("perceptual", matrix, names, info)
