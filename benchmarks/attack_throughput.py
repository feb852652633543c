"""Attack throughput: labelflip's native attacks against Foolbox 3 and
torchattacks, side by side in one run, on the same model, inputs and settings.

Not a test: it prints (and optionally writes as JSON) one row per attack and
library with throughput, success rate, median L2/L∞ over the successful
samples, and model passes per image. Success and norms are computed the same
way for every library: the model is evaluated on each library's returned,
bounds-clipped output.

Passes per image for the peers are counted by a wrapper around the model:
``fwd`` = rows the model saw / images, ``grad`` = rows it saw with gradients
enabled / images (each of those is followed by one backward pass in these
attacks). For labelflip the counts come from the ``AttackResult``.

Usage (the figures in docs/benchmarks.md)::

    labelflip train --dataset mnist --arch cw-mnist --data-dir ../shared/datasets
    python benchmarks/attack_throughput.py \
        --checkpoint checkpoints/mnist-cw-mnist-seed0.safetensors \
        --data-dir ../shared/datasets -n 500 --threads 2

Peers: ``pip install foolbox==3.3.4`` and ``pip install --no-deps
torchattacks==3.5.1`` (torchattacks declares torchvision, which would pull a
CUDA build of torch; it imports and runs without it). A missing peer is
reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from labelflip.attacks import _common, deepfool, pgd
from labelflip.data import load_dataset
from labelflip.models import Classifier, load_checkpoint


@dataclass
class Row:
    attack: str
    library: str
    images: int
    seconds: float
    images_per_s: float
    success: float
    median_l2: float
    median_linf: float
    fwd_per_image: float
    grad_per_image: float


class Counting(nn.Module):
    """Counts the rows a model sees, with and without gradients enabled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0
        self.grad_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_rows += len(x)
        return self.model(x)


def _stats(clf: Classifier, x, y, x_adv) -> tuple[float, float, float]:
    x_adv = clf.clip(x_adv.detach())
    with torch.no_grad():
        ok = clf.predict(x_adv) != y
    d = (x_adv - x).flatten(1).double()
    l2, linf = d.norm(dim=1)[ok], d.abs().amax(1)[ok]

    def med(v: torch.Tensor) -> float:
        return float(v.quantile(0.5)) if len(v) else float("nan")

    return float(ok.float().mean()), med(l2), med(linf)


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_native(name, attack, clf, x, y, batch, library="labelflip") -> Row:
    def go():
        parts = [attack(clf, x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
        return parts

    attack(clf, x[:8], y[:8])  # warm-up
    parts, secs = _timed(go)
    x_adv = torch.cat([p.x_adv for p in parts])
    fwd = sum(int(p.forwards.sum()) for p in parts) / len(x)
    bwd = sum(int(p.backwards.sum()) for p in parts) / len(x)
    s, l2, linf = _stats(clf, x, y, x_adv)
    return Row(name, library, len(x), secs, len(x) / secs, s, l2, linf, fwd, bwd)


def run_peer(name, library, make, clf, x, y, batch) -> Row:
    counter = Counting(clf).eval()
    attack = make(counter)
    attack(x[:8], y[:8])  # warm-up
    counter.rows = counter.grad_rows = 0

    def go():
        return torch.cat(
            [attack(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
        )

    x_adv, secs = _timed(go)
    s, l2, linf = _stats(clf, x, y, x_adv)
    n = len(x)
    return Row(
        name, library, n, secs, n / secs, s, l2, linf, counter.rows / n, counter.grad_rows / n
    )


def replicated_deepfool(name, clf, x, y, batch) -> Row:
    """labelflip's DeepFool with the gradient path it uses on accelerators
    (one replicated batch per step) forced on this device."""
    saved = _common.SHARED_FORWARD_DEVICES
    _common.SHARED_FORWARD_DEVICES = frozenset()
    try:
        return run_native(name, deepfool, clf, x, y, batch, "labelflip-replicated")
    finally:
        _common.SHARED_FORWARD_DEVICES = saved


def foolbox_maker(attack_factory, eps):
    import foolbox as fb

    def make(model):
        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0))
        attack = attack_factory(fb)

        def call(x, y):
            _, clipped, _ = attack(fmodel, x, y, epsilons=eps)
            return clipped

        return call

    return make


def torchattacks_maker(attack_factory):
    import torchattacks

    def make(model):
        attack = attack_factory(torchattacks, model)
        return lambda x, y: attack(x, y)

    return make


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="labelflip checkpoint (.safetensors)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=500, help="test images (default 500)")
    p.add_argument("--batch-size", type=int, default=500, help="images per attack call")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--attacks", default="deepfool,pgd", help="comma list: deepfool,pgd")
    p.add_argument("--eps", type=float, default=0.3, help="L∞ PGD budget (default 0.3)")
    p.add_argument(
        "--trainable",
        action="store_true",
        help="leave the weights' requires_grad on, as a freshly loaded model has it "
        "(Foolbox then also accumulates weight gradients; default: frozen for every library)",
    )
    p.add_argument(
        "--also-replicated",
        action="store_true",
        help="also time labelflip's DeepFool with the accelerator's gradient path "
        "(one replicated batch) on this device",
    )
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    clf, meta = load_checkpoint(args.checkpoint, device=args.device)
    for prm in clf.parameters():  # the same model, frozen unless --trainable, for every library
        prm.requires_grad_(args.trainable)
    ds = load_dataset(args.dataset, "test", args.data_dir)
    x = ds.x[: args.n].to(args.device)
    y = ds.y[: args.n].to(args.device)
    with torch.no_grad():
        acc = float((clf.predict(x) == y).float().mean())
    print(
        f"{meta.architecture} on {args.dataset} test[:{len(x)}] (clean accuracy {acc:.4f}), "
        f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"weights {'trainable' if args.trainable else 'frozen'}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}",
        flush=True,
    )

    eps = args.eps
    plan: list[tuple[str, str, Callable[[], Row]]] = []
    wanted = [a.strip() for a in args.attacks.split(",") if a.strip()]
    b = args.batch_size
    if "deepfool" in wanted:
        name = "DeepFool L2 (50 steps, 10 candidates, overshoot 0.02)"
        plan.append(("labelflip", name, lambda: run_native(name, deepfool, clf, x, y, b)))
        if args.also_replicated:
            plan.append(("labelflip", name, lambda: replicated_deepfool(name, clf, x, y, b)))
        plan += [
            (
                "foolbox",
                name,
                lambda: run_peer(
                    name,
                    "foolbox",
                    foolbox_maker(
                        lambda fb: fb.attacks.L2DeepFoolAttack(
                            steps=50, candidates=10, overshoot=0.02
                        ),
                        None,
                    ),
                    clf,
                    x,
                    y,
                    b,
                ),
            ),
            (
                "torchattacks",
                name,
                lambda: run_peer(
                    name,
                    "torchattacks",
                    torchattacks_maker(lambda ta, m: ta.DeepFool(m, steps=50, overshoot=0.02)),
                    clf,
                    x,
                    y,
                    b,
                ),
            ),
        ]
    if "pgd" in wanted:
        name = f"PGD L∞ ε={eps:g} (40 steps, step 0.01/0.3·ε, random start)"

        def native_pgd(c, xx, yy):
            return pgd(c, xx, yy, eps=eps, norm="linf", steps=40, rel_stepsize=0.01 / 0.3)

        plan += [
            ("labelflip", name, lambda: run_native(name, native_pgd, clf, x, y, b)),
            (
                "foolbox",
                name,
                lambda: run_peer(
                    name,
                    "foolbox",
                    foolbox_maker(lambda fb: fb.attacks.LinfPGD(steps=40), eps),
                    clf,
                    x,
                    y,
                    b,
                ),
            ),
            (
                "torchattacks",
                name,
                lambda: run_peer(
                    name,
                    "torchattacks",
                    torchattacks_maker(
                        lambda ta, m: ta.PGD(
                            m, eps=eps, alpha=eps * 0.01 / 0.3, steps=40, random_start=True
                        )
                    ),
                    clf,
                    x,
                    y,
                    b,
                ),
            ),
        ]

    rows: list[Row] = []
    header = (
        f"{'attack':<55} {'library':<21} {'img/s':>8} {'seconds':>8} {'success':>8} "
        f"{'med L2':>8} {'med L∞':>8} {'fwd/img':>8} {'grad/img':>8}"
    )
    print(header)
    for library, name, job in plan:
        try:
            r = job()
        except ImportError as e:
            print(f"{name:<55} {library:<21} skipped: {e}", flush=True)
            continue
        rows.append(r)
        print(
            f"{r.attack:<55} {r.library:<21} {r.images_per_s:8.1f} {r.seconds:8.1f} "
            f"{r.success:8.3f} {r.median_l2:8.4f} {r.median_linf:8.4f} "
            f"{r.fwd_per_image:8.1f} {r.grad_per_image:8.1f}",
            flush=True,
        )
    for name in dict.fromkeys(r.attack for r in rows):
        ours = [r for r in rows if r.attack == name and r.library == "labelflip"]
        for peer in (r for r in rows if r.attack == name and not r.library.startswith("labelflip")):
            if ours:
                print(
                    f"{name}: labelflip / {peer.library} throughput "
                    f"{ours[0].images_per_s / peer.images_per_s:.1f}x, median L2 ratio "
                    f"{ours[0].median_l2 / peer.median_l2:.4f}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "rows": [asdict(r) for r in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
