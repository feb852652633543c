"""Private helpers shared by the attacks: input checks, setting checks, losses
and gradients, norms, projections and random starts.

Randomness only ever comes from an explicit ``torch.Generator``; values are
drawn on the generator's device and then moved to the inputs' device, so a
CPU generator gives the same draws whatever device the attack runs on.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier

NORMS = ("linf", "l2")

# Seed of the generator used when the caller passes ``generator=None``: results
# are reproducible by default and the global RNG is never touched.
DEFAULT_SEED = 0


# --------------------------------------------------------------------------- settings


def check_choice(attack: str, name: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LabelflipError(
            f"{attack}: {name} must be one of {', '.join(choices)}, got {value!r}{hint}"
        )


def check_number(
    attack: str,
    name: str,
    value: object,
    *,
    integer: bool = False,
    minimum: float | None = None,
    positive: bool = False,
) -> None:
    """Raise a one-line error unless ``value`` is a finite (integer) number in range."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise LabelflipError(f"{attack}: {name} must be {kind}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v):
        raise LabelflipError(f"{attack}: {name} must be finite, got {value!r}")
    if positive and not v > 0:
        raise LabelflipError(f"{attack}: {name} must be > 0, got {value!r}")
    if minimum is not None and v < minimum:
        raise LabelflipError(f"{attack}: {name} must be >= {minimum:g}, got {value!r}")


def check_bool(attack: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise LabelflipError(f"{attack}: {name} must be true or false, got {value!r}")


def check_eps(attack: str, eps: float, norm: str, clf: Classifier, x: torch.Tensor) -> None:
    """``eps`` must not exceed the input range: ``hi - lo`` for L∞, the box
    diameter ``sqrt(d) * (hi - lo)`` for L2."""
    lo, hi = clf.bounds
    d = math.prod(x.shape[1:])
    limit = (hi - lo) if norm == "linf" else math.sqrt(d) * (hi - lo)
    if eps > limit * (1 + 1e-9):
        what = "the input range" if norm == "linf" else "the diameter of the input box"
        raise LabelflipError(f"{attack}: eps={eps:g} exceeds {what} ({limit:g}) for norm {norm}")


# ----------------------------------------------------------------------------- inputs


def check_labels(
    name: str, v: object, n: int, num_classes: int, device: torch.device, *, match: str = "x"
) -> torch.Tensor:
    """``v`` as ``n`` integer class labels in ``[0, num_classes)``, a long
    tensor on ``device`` (one-line errors naming ``name``; ``match`` names
    what the length must match)."""
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise LabelflipError(f"{name} must be integer class labels ({exc})") from None
    if v.dtype == torch.bool or v.dtype.is_floating_point or v.dtype.is_complex:
        raise LabelflipError(f"{name} must be integer class labels, got dtype {v.dtype}")
    if tuple(v.shape) != (n,):
        raise LabelflipError(
            f"{name} must have shape ({n},) to match {match}, got {tuple(v.shape)}"
        )
    if n and (int(v.min()) < 0 or int(v.max()) >= num_classes):
        raise LabelflipError(
            f"{name} must lie in [0, {num_classes - 1}], got values in "
            f"[{int(v.min())}, {int(v.max())}]"
        )
    return v.detach().to(device=device, dtype=torch.long)


def prepare_inputs(
    clf: Classifier,
    x: object,
    y: object,
    target: object | None,
    generator: object = None,
    *,
    multilabel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate the attack inputs (and the type of ``generator``); returns
    detached ``x`` and ``y``/``target`` as long tensors on ``x``'s device.
    Nothing the caller owns is modified. Attacks built on class scores refuse
    multi-label models unless ``multilabel`` (labels and targets are then
    label-vector bitmasks)."""
    if getattr(clf, "multilabel", False) and not multilabel:
        raise LabelflipError(
            "this attack needs class scores and does not apply to multi-label models; "
            "use jma or ml-cw"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise LabelflipError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(x, torch.Tensor):
        raise LabelflipError(f"x must be a torch tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise LabelflipError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise LabelflipError(f"x must be a batch (N, ...) of inputs, got shape {tuple(x.shape)}")
    if clf.input_shape is not None and tuple(x.shape[1:]) != clf.input_shape:
        raise LabelflipError(
            f"input shape {tuple(x.shape[1:])} does not match the model's "
            f"input shape {clf.input_shape}"
        )
    n = x.shape[0]
    y_t = check_labels("y", y, n, clf.num_classes, x.device)
    t_t = None if target is None else check_labels("target", target, n, clf.num_classes, x.device)
    if n:
        clf.check_inputs(x)
    return x.detach(), y_t, t_t


def new_counts(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroed (iterations, forwards, backwards) counters."""
    return tuple(torch.zeros(n, dtype=torch.long, device=device) for _ in range(3))  # type: ignore[return-value]


# ------------------------------------------------------------------------- randomness


def generator_or_default(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(DEFAULT_SEED)
    return generator


def uniform(
    shape: Sequence[int], generator: torch.Generator, like: torch.Tensor, low: float, high: float
) -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=like.dtype)
    return (low + (high - low) * u).to(like.device)


def normal(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    g = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=like.dtype)
    return g.to(like.device)


def random_start_linf(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus noise uniform in the L∞ ball of radius ``eps``."""
    return x + uniform(x.shape, generator, x, -eps, eps)


def random_start_l2(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus noise uniform in the L2 ball of radius ``eps``: a uniform
    direction (normalised Gaussian) times the radius ``eps * u**(1/d)``."""
    n = x.shape[0]
    d = math.prod(x.shape[1:])
    direction = normal((n, d), generator, x)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    radius = eps * uniform((n, 1), generator, x, 0.0, 1.0) ** (1.0 / d)
    return x + (radius * direction).view_as(x)


# ---------------------------------------------------------------- losses and gradients


def ce_gradient(clf: Classifier, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. ``x`` of the summed cross-entropy of ``labels`` (one
    forward and one backward pass; on a CPU, per chunk of samples)."""
    (grad,) = map_chunks(lambda xc, lc: (_ce_gradient(clf, xc, lc),), 1, x, labels)
    return grad


def _ce_gradient(clf: Classifier, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(clf(xg), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad


# ------------------------------------------------------------- CPU chunking


# Rows per forward/backward pass on a CPU, where a pass slows down sharply
# once its activations no longer fit the caches. Measured on a 2-core CPU with
# the cw-mnist model on 500 MNIST images: PGD-40 runs at 37-42 img/s in one
# batch, 65-77 in chunks of 256 rows and 100-107 in chunks of 64-128;
# DeepFool at 77-83 img/s in chunks of 256 samples and 93-135 with 64-128.
# Accelerators take the whole batch at once.
CPU_ROWS_PER_PASS = 128


def sample_chunks(n: int, rows_per_sample: int, device: torch.device) -> list[slice]:
    """Slices of ``n`` samples processed per pass: all at once on an
    accelerator, at most ``CPU_ROWS_PER_PASS // rows_per_sample`` on a CPU;
    always at least one (possibly empty) slice."""
    if device.type != "cpu" or n == 0:
        return [slice(0, n)]
    step = max(1, CPU_ROWS_PER_PASS // rows_per_sample)
    return [slice(i, i + step) for i in range(0, n, step)]


def map_chunks(
    fn: Callable[..., tuple[torch.Tensor, ...]],
    rows_per_sample: int,
    x: torch.Tensor,
    *per_sample: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """``fn(x[c], *(t[c] for t in per_sample))`` over :func:`sample_chunks`,
    its tuple of per-sample outputs concatenated."""
    chunks = sample_chunks(len(x), rows_per_sample, x.device)
    parts = []
    for i, c in enumerate(chunks):
        with progress_part(i, len(chunks)):  # what ``fn`` reports is this chunk's share
            parts.append(fn(x[c], *(t[c] for t in per_sample)))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


# ------------------------------------------------------------------- progress

# Who listens to the progress of the attack running in this context (the
# runner's progress bar), as a function of the share of the work done, in
# [0, 1]. Attacks stay pure: they only call report_progress, which does
# nothing without a listener, and what they compute does not depend on it.
_PROGRESS: contextvars.ContextVar[Callable[[float], None] | None] = contextvars.ContextVar(
    "labelflip_attack_progress", default=None
)


@contextlib.contextmanager
def reporting_progress(listener: Callable[[float], None] | None) -> Iterator[None]:
    """Inside the block, attacks report the share of their work done (a
    float in [0, 1], non-decreasing within one attack call) to ``listener``."""
    token = _PROGRESS.set(listener)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def report_progress(done: float, total: float) -> None:
    """``done`` of ``total`` units (steps, rounds x steps) of the current
    attack call are done; a no-op unless someone listens."""
    listener = _PROGRESS.get()
    if listener is not None and total > 0:
        listener(min(max(done / total, 0.0), 1.0))


@contextlib.contextmanager
def progress_part(index: int, parts: int) -> Iterator[None]:
    """Inside the block, what is reported is the share of part ``index`` of
    ``parts`` equal parts of the current work (a chunk of samples, one
    attack of several run one after the other)."""
    outer = _PROGRESS.get()
    if outer is None or parts <= 1:
        yield
        return
    token = _PROGRESS.set(lambda share: outer((index + share) / parts))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


# Device types on which several gradients of one batch share a forward pass
# (compute-bound: replicating the batch would only repeat the forward); on the
# others the batch is replicated into one pass (launch-bound).
SHARED_FORWARD_DEVICES = frozenset({"cpu"})


def output_vjps(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``fn(x)`` (A, n) and, for every sample ``a`` and every ``j < m``,
    the gradient ``∇_x (v[a, j] · fn(x)[a])`` (A, m, *x.shape[1:]); ``v`` is
    (A, m, n). The rows of ``fn`` must be independent (a model in eval mode).

    - On a CPU (compute-bound), per chunk of samples: ONE forward pass and
      ``m`` backward passes through its graph, each over the whole chunk.
      Replicating the chunk would repeat the forward ``m`` times for nothing,
      and PyTorch's batched autograd (``is_grads_batched``) runs
      ``convolution_backward`` once per vector on a CPU anyway (profiled).
    - On an accelerator (launch-bound): ONE forward and ONE backward pass over
      a batch holding ``m`` copies of every sample, copy ``j`` weighted by
      ``v[:, j]``.

    Both give the same numbers (tested); docs/benchmarks.md has the timings."""
    shared = x.device.type in SHARED_FORWARD_DEVICES
    one = _shared_forward_vjps if shared else _replicated_vjps
    return map_chunks(lambda xc, vc: one(fn, xc, vc), 1 if shared else v.shape[1], x, v)


def _shared_forward_vjps(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    m = v.shape[1]
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = fn(xg)
        grads = [
            torch.autograd.grad(out, xg, v[:, j].to(out.dtype), retain_graph=j < m - 1)[0]
            for j in range(m)
        ]
    return out.detach(), torch.stack(grads, 1)


def _replicated_vjps(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    a, m = v.shape[:2]
    shape = x.shape[1:]
    with torch.enable_grad():
        xr = x.detach().unsqueeze(1).expand(a, m, *shape).reshape(a * m, *shape)
        xr.requires_grad_(True)
        out = fn(xr)
        (grads,) = torch.autograd.grad(out, xr, v.reshape(a * m, -1).to(out.dtype))
    return out.view(a, m, -1)[:, 0].detach(), grads.view(a, m, *shape)


# ------------------------------------------------------------ norms and projections


def rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values ``v`` (N,) shaped to broadcast against ``like`` (N, ...)."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def l2_norms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1)


def normalize_l2(g: torch.Tensor) -> torch.Tensor:
    """``g`` scaled to unit L2 norm per sample (zero stays zero)."""
    return g / rows(l2_norms(g).clamp_min(1e-12), g)


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit steepest-ascent direction of ``grad`` in ``norm``: sign for L∞, unit L2 otherwise."""
    return grad.sign() if norm == "linf" else normalize_l2(grad)


def project_linf(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    return x0 + (x - x0).clamp(-eps, eps)


def project_l2(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x`` onto the L2 ball of radius ``eps`` around ``x0`` (shrink only)."""
    d = x - x0
    factor = (eps / l2_norms(d).clamp_min(1e-12)).clamp(max=1.0)
    return x0 + d * rows(factor, d)
