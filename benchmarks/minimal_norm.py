"""Minimal-norm attacks side by side (AttackBench-style, Cinà et al. 2024):
labelflip's native attacks against adv_lib and Foolbox 3 in one run, on the
same model, inputs and budget.

Not a test: it prints (and optionally writes as JSON) one row per attack,
library and norm with the time, throughput, success rate, the median norm
with failures counted as ∞, the median per-sample ratio to the smallest
adversarial any row of that norm found, how often the row lands in the class
of that smallest adversarial, and model passes per image. Success, norms and
landing classes are computed the same way for every library: the model is
evaluated on each library's returned, bounds-clipped output.

Passes per image for the peers are counted by a wrapper around the model:
``fwd`` = rows the model saw / images, ``grad`` = rows it saw with gradients
enabled / images (each followed by one backward pass in these attacks). For
labelflip the counts come from the ``AttackResult``.

Rows (``--rows``, comma list of groups):

- ``fmn``: FMN (Pintor et al. 2021) in every ``--norms`` norm: labelflip's
  ``fmn``, adv_lib 0.2.8's ``fmn`` and Foolbox 3.3.4's ``L{0,1,2,Inf}FMNAttack``,
  all with ``--fmn-steps`` steps and the authors' other defaults (which all
  three share: α_0 = 1, α_K = α_0/100, γ_0 = 0.05, γ_K = 0.001).
- ``l2``: the untargeted L2 minimal-norm attacks (``--attacks``, comma list
  of families): ``deepfool`` (labelflip, adv_lib ``df``, Foolbox
  ``L2DeepFoolAttack``, torchattacks ``DeepFool``; 50 steps, overshoot 0.02,
  10 candidates where the library has them), ``superdeepfool`` (labelflip,
  adv_lib ``sdf``; their defaults: 100 iterations of at most 100 DeepFool
  steps, 10 bisection steps), ``ddn`` (labelflip, adv_lib without its 8-bit
  rounding, as labelflip's default), ``alma`` (labelflip, adv_lib with
  ``distance='l2'``) with ``--l2-steps`` steps each, and ``cw-l2``
  (labelflip, adv_lib, Foolbox: 5 binary-search rounds of ``--l2-steps``/5
  Adam steps; torchattacks' ``CW`` has no search: c = 1, ``--l2-steps``
  steps). Together with the ``fmn`` group's L2 rows, every row of a norm is
  compared with the smallest adversarial any of them found.

Usage (the figures in docs/benchmarks.md)::

    labelflip train --dataset mnist --arch cw-mnist --epochs 2 --out ckpts/cw-mnist-e2
    OMP_NUM_THREADS=1 python benchmarks/minimal_norm.py \\
        --checkpoint ckpts/cw-mnist-e2.safetensors --data-dir ../shared/datasets \\
        -n 200 --rows fmn --fmn-steps 100 --threads 1 --chunk 50
    OMP_NUM_THREADS=1 python benchmarks/minimal_norm.py \\
        --checkpoint ckpts/cw-mnist-e2.safetensors --data-dir ../shared/datasets \\
        -n 200 --rows l2,fmn --norms l2 --fmn-steps 1000 --l2-steps 1000 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/minimal_norm.py \\
        --checkpoint src/labelflip/models/zoo/cw-mnist.safetensors --data-dir ../shared/datasets \\
        -n 100 --rows l2,fmn --norms l2 --attacks deepfool,superdeepfool,ddn,alma \\
        --fmn-steps 1000 --l2-steps 1000 --alma-decay-steps 200 --threads 1 --chunk 50

Peers: ``pip install foolbox==3.3.4`` and ``pip install --no-deps
adv-lib==0.2.8 torchattacks==3.5.1``. adv_lib's package imports torchvision (LPIPS) and visdom
(its logger) for features not used here; where they do not import, stand-in
modules are put in ``sys.modules`` by this script (only here, never in the
package). A missing peer is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from labelflip.attacks import get_attack
from labelflip.attacks.fmn import fmn
from labelflip.data import load_dataset
from labelflip.models import Classifier, load_checkpoint

NORM_ORDER = {"l0": 0.0, "l1": 1.0, "l2": 2.0, "linf": math.inf}


@dataclass
class Row:
    attack: str
    library: str
    norm: str
    images: int
    seconds: float
    images_per_s: float
    success: float
    median_norm: float  # failures count as inf
    median_ratio_to_best: float  # per-sample norm / smallest any row of this norm found
    lands_with_best: float  # share of samples whose class is that of the smallest found
    fwd_per_image: float
    grad_per_image: float


@dataclass
class Outcome:
    """A row's per-sample results, judged by one evaluation of the model."""

    norms: torch.Tensor  # float64, inf where not adversarial
    pred: torch.Tensor
    seconds: float
    fwd: float
    grad: float


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


def judge(clf: Classifier, x, y, x_adv, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm of x_adv - x, inf where the model keeps y; the model's class)."""
    x_adv = clf.clip(x_adv.detach())
    with torch.no_grad():
        pred = clf.predict(x_adv)
    d = (x_adv - x).flatten(1).double()
    p = NORM_ORDER[norm]
    v = (d != 0).sum(1).double() if p == 0 else d.norm(p=p, dim=1)
    return torch.where(pred != y, v, torch.full_like(v, math.inf)), pred


def run_native(clf, x, y, norm, call: Callable) -> Outcome:
    call(clf, x[:8], y[:8])  # warm-up
    t = time.perf_counter()
    r = call(clf, x, y)
    secs = time.perf_counter() - t
    norms, pred = judge(clf, x, y, r.x_adv, norm)
    n = len(x)
    return Outcome(norms, pred, secs, int(r.forwards.sum()) / n, int(r.backwards.sum()) / n)


def run_peer(clf, x, y, norm, make: Callable) -> Outcome:
    counter = Counting(clf).eval()
    attack = make(counter)
    attack(x[:8], y[:8])  # warm-up
    counter.rows = counter.grad_rows = 0
    t = time.perf_counter()
    x_adv = attack(x, y)
    secs = time.perf_counter() - t
    norms, pred = judge(clf, x, y, x_adv, norm)
    n = len(x)
    return Outcome(norms, pred, secs, counter.rows / n, counter.grad_rows / n)


# ------------------------------------------------------------------------ peers


def import_adv_lib_attacks() -> types.ModuleType:
    """``adv_lib.attacks``, with stand-ins for torchvision and visdom when
    those do not import (adv_lib imports them for LPIPS and its logger)."""
    for name in ("torchvision", "visdom"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            # plain modules: a permissive __getattr__ would also answer
            # attributes such as __file__ that torch's inspect calls read
            stub = types.ModuleType(name)
            sys.modules[name] = stub
            if name == "torchvision":
                stub.models = types.ModuleType("torchvision.models")  # type: ignore[attr-defined]
                sys.modules["torchvision.models"] = stub.models
            else:
                stub.Visdom = object  # type: ignore[attr-defined]
    return importlib.import_module("adv_lib.attacks")


def adv_lib_fmn(norm: str, steps: int) -> Callable:
    attacks = import_adv_lib_attacks()

    def make(model):
        return lambda x, y: attacks.fmn(model, x, y, norm=NORM_ORDER[norm], steps=steps)

    return make


FOOLBOX_FMN = {
    "l0": "L0FMNAttack",
    "l1": "L1FMNAttack",
    "l2": "L2FMNAttack",
    "linf": "LInfFMNAttack",
}


def foolbox_fmn(norm: str, steps: int) -> Callable:
    import foolbox as fb

    attack = getattr(fb.attacks, FOOLBOX_FMN[norm])(steps=steps)

    def make(model):
        fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0))

        def call(x, y):
            _, clipped, _ = attack(fmodel, x, y, epsilons=None)
            return clipped

        return call

    return make


# ------------------------------------------------------------------------- rows


def fmn_rows(args) -> list[tuple[str, str, str, Callable[..., Outcome]]]:
    """(attack, library, norm, run) for every FMN row."""
    out = []
    for norm in args.norms:

        def native(clf, x, y, norm=norm):
            return run_native(
                clf, x, y, norm, lambda c, xx, yy: fmn(c, xx, yy, norm=norm, steps=args.fmn_steps)
            )

        out.append(("fmn", "labelflip", norm, native))
        for library, maker in (("adv_lib", adv_lib_fmn), ("foolbox", foolbox_fmn)):

            def peer(clf, x, y, norm=norm, maker=maker):
                return run_peer(clf, x, y, norm, maker(norm, args.fmn_steps))

            out.append(("fmn", library, norm, peer))
    return out


L2_FAMILIES = ("deepfool", "superdeepfool", "ddn", "alma", "cw-l2")


def l2_peers(family: str, steps: int) -> list[tuple[str, Callable[[], Callable]]]:
    """(library, maker factory) for the peers of an L2 family; the factory
    imports the library when called (an ImportError then skips the row)."""

    def adv_lib(name: str, **kw) -> Callable[[], Callable]:
        def factory():
            fn = getattr(import_adv_lib_attacks(), name)
            return lambda model: lambda x, y: fn(model, x, y, **kw)

        return factory

    def foolbox(build: Callable) -> Callable[[], Callable]:
        def factory():
            import foolbox as fb

            attack = build(fb.attacks)

            def make(model):
                fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0))
                return lambda x, y: attack(fmodel, x, y, epsilons=None)[1]

            return make

        return factory

    def torchattacks(build: Callable) -> Callable[[], Callable]:
        def factory():
            import torchattacks as ta

            return lambda model: build(ta, model)

        return factory

    rounds = max(1, steps // 5)
    return {
        "deepfool": [
            ("adv_lib", adv_lib("df", steps=50, overshoot=0.02)),
            ("foolbox", foolbox(lambda a: a.L2DeepFoolAttack(steps=50, overshoot=0.02))),
            ("torchattacks", torchattacks(lambda ta, m: ta.DeepFool(m, steps=50, overshoot=0.02))),
        ],
        "superdeepfool": [("adv_lib", adv_lib("sdf"))],
        "ddn": [("adv_lib", adv_lib("ddn", steps=steps, levels=None))],
        "alma": [("adv_lib", adv_lib("alma", distance="l2", num_steps=steps))],
        "cw-l2": [
            (
                "adv_lib",
                adv_lib("carlini_wagner_l2", binary_search_steps=5, max_iterations=rounds),
            ),
            (
                "foolbox",
                foolbox(lambda a: a.L2CarliniWagnerAttack(binary_search_steps=5, steps=rounds)),
            ),
            ("torchattacks", torchattacks(lambda ta, m: ta.CW(m, c=1, steps=steps, lr=0.01))),
        ],
    }[family]


def l2_settings(family: str, steps: int) -> dict:
    """labelflip's settings for an L2 family, matching the peers' budgets."""
    return {
        "deepfool": {},
        "superdeepfool": {},
        "ddn": {"steps": steps},
        "alma": {"steps": steps},
        "cw-l2": {"binary_search_steps": 5, "steps": max(1, steps // 5)},
    }[family]


def l2_rows(args) -> list[tuple[str, str, str, Callable[..., Outcome]]]:
    """(attack, library, "l2", run) for every untargeted L2 minimal-norm row."""
    out = []
    for family in args.attacks:
        settings = l2_settings(family, args.l2_steps)

        def native(clf, x, y, family=family, settings=settings):
            attack = get_attack(family).fn
            return run_native(clf, x, y, "l2", lambda c, xx, yy: attack(c, xx, yy, **settings))

        out.append((family, "labelflip", "l2", native))
        if family == "alma" and args.alma_decay_steps:
            fast = {**settings, "decay_steps": args.alma_decay_steps}

            def native_fast(clf, x, y, settings=fast):
                attack = get_attack("alma").fn
                return run_native(clf, x, y, "l2", lambda c, xx, yy: attack(c, xx, yy, **settings))

            library = f"labelflip, decay_steps {args.alma_decay_steps}"
            out.append((family, library, "l2", native_fast))
        for library, factory in l2_peers(family, args.l2_steps):

            def peer(clf, x, y, factory=factory):
                return run_peer(clf, x, y, "l2", factory())

            out.append((family, library, "l2", peer))
    return out


ROW_GROUPS = {"fmn": fmn_rows, "l2": l2_rows}


def median(v: torch.Tensor) -> float:
    """The usual median (mean of the two middle values for an even count),
    with ∞ allowed (``torch.quantile`` gives NaN between ∞ and a number)."""
    if not len(v):
        return math.nan
    s = v.sort().values
    m = len(s) // 2
    return float(s[m]) if len(s) % 2 else float((s[m - 1] + s[m]) / 2)


def summarise(rows: list[tuple[str, str, str, Outcome]]) -> list[Row]:
    """Rows with the per-norm comparison to the smallest adversarial found."""
    out = []
    for norm in dict.fromkeys(r[2] for r in rows):
        same = [r for r in rows if r[2] == norm]
        stacked = torch.stack([o.norms for *_, o in same])
        best, who = stacked.min(0)
        preds = torch.stack([o.pred for *_, o in same])
        best_pred = preds.gather(0, who.unsqueeze(0)).squeeze(0)
        found = torch.isfinite(best)
        for attack, library, _, o in same:
            n = len(o.norms)
            ratio = o.norms[found] / best[found].clamp_min(1e-12)
            ratio[(best[found] == 0) & (o.norms[found] == 0)] = 1.0
            lands = (o.pred[found] == best_pred[found]) & torch.isfinite(o.norms[found])
            out.append(
                Row(
                    attack,
                    library,
                    norm,
                    n,
                    o.seconds,
                    n / o.seconds,
                    float(torch.isfinite(o.norms).float().mean()),
                    median(o.norms),
                    median(ratio),
                    float(lands.float().mean()) if len(ratio) else math.nan,
                    o.fwd,
                    o.grad,
                )
            )
    return out


def merge(parts: list[Outcome]) -> Outcome:
    """One outcome from those of consecutive chunks of the images."""
    sizes = [len(o.norms) for o in parts]
    n = sum(sizes)
    return Outcome(
        torch.cat([o.norms for o in parts]),
        torch.cat([o.pred for o in parts]),
        sum(o.seconds for o in parts),
        sum(o.fwd * k for o, k in zip(parts, sizes, strict=True)) / n,
        sum(o.grad * k for o, k in zip(parts, sizes, strict=True)) / n,
    )


def run_interleaved(runs, clf, x, y, chunk: int, repeats: int):
    """``--chunk``: every row on every chunk of ``chunk`` images, the rows of
    one attack and norm taking turns on each chunk (in an order that rotates
    from chunk to chunk), so that the load of a shared machine hits every
    library alike; the whole is done ``repeats`` times and each row keeps
    its fastest total time (the attacks are deterministic: the results of
    the first round are kept)."""
    chunks = [slice(i, i + chunk) for i in range(0, len(x), chunk)]
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        groups.setdefault((r[0], r[2]), []).append(r)
    results = []
    for (attack, norm), rows in groups.items():
        keys = [(a, lib, nm) for a, lib, nm, _ in rows]
        first: dict = {}
        best: dict = {}
        skipped: set = set()
        for rep in range(repeats):
            parts: dict = {k: [] for k in keys}
            for ci, c in enumerate(chunks):
                shift = (ci + rep) % len(rows)
                for a, lib, nm, run in rows[shift:] + rows[:shift]:
                    key = (a, lib, nm)
                    if key in skipped:
                        continue
                    try:
                        parts[key].append(run(clf, x[c], y[c]))
                    except ImportError as e:
                        print(f"# skipped {a} ({lib}): {e}")
                        skipped.add(key)
            for key in keys:
                if key in skipped:
                    continue
                o = merge(parts[key])
                print(f"# {attack} {norm} {key[1]} round {rep + 1}: {o.seconds:.1f} s", flush=True)
                first.setdefault(key, o)
                best[key] = min(best.get(key, math.inf), o.seconds)
        for key in keys:
            if key in first:
                first[key].seconds = best[key]
                results.append((*key, first[key]))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="labelflip checkpoint (.safetensors)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=200, help="test images (default 200)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="fmn", help=f"comma list of: {', '.join(ROW_GROUPS)}")
    p.add_argument("--norms", default="l0,l1,l2,linf", help="FMN norms (comma list)")
    p.add_argument("--fmn-steps", type=int, default=100, help="FMN steps for every library")
    p.add_argument(
        "--attacks",
        default=",".join(L2_FAMILIES),
        help=f"the l2 group's families (comma list of: {', '.join(L2_FAMILIES)})",
    )
    p.add_argument(
        "--l2-steps",
        type=int,
        default=1000,
        help="steps of ddn and alma, and C&W's total (5 rounds) in the l2 group",
    )
    p.add_argument(
        "--alma-decay-steps",
        type=int,
        default=None,
        help="also a labelflip alma row with this per-sample decay_steps (the same --l2-steps "
        "budget)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds over all rows (order reversed every round); the fastest time is kept",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="images per attack call, the rows of one attack and norm taking turns on each "
        "chunk (default: all images in one call per row)",
    )
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    args.norms = [s.strip() for s in args.norms.split(",") if s.strip()]
    args.attacks = [s.strip() for s in args.attacks.split(",") if s.strip()]
    for name in args.attacks:
        if name not in L2_FAMILIES:
            p.error(f"unknown --attacks family {name!r} (known: {', '.join(L2_FAMILIES)})")
    for group in args.rows.split(","):
        if group.strip() not in ROW_GROUPS:
            p.error(f"unknown --rows group {group!r} (known: {', '.join(ROW_GROUPS)})")

    if args.threads:
        torch.set_num_threads(args.threads)
    clf, meta = load_checkpoint(args.checkpoint, device=args.device)
    for prm in clf.parameters():  # the same frozen model for every library
        prm.requires_grad_(False)
    ds = load_dataset(args.dataset, "test", args.data_dir)
    x = ds.x[: args.n].to(args.device)
    y = ds.y[: args.n].to(args.device)
    with torch.no_grad():
        acc = float((clf.predict(x) == y).float().mean())
    print(
        f"# {meta.architecture} on {args.dataset}: {len(x)} test images, clean accuracy "
        f"{acc:.4f}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{args.device}, {platform.processor() or platform.machine()}"
    )

    runs = [r for group in args.rows.split(",") for r in ROW_GROUPS[group.strip()](args)]
    if args.chunk:
        results = run_interleaved(runs, clf, x, y, args.chunk, args.repeats)
    outcomes: dict[tuple[str, str, str], Outcome] = {}
    skipped: set[tuple[str, str, str]] = set()
    for rep in range(0 if args.chunk else args.repeats):  # every row once per round, reversed
        for attack, library, norm, run in runs if rep % 2 == 0 else runs[::-1]:
            key = (attack, library, norm)
            if key in skipped:
                continue
            try:
                outcome = run(clf, x, y)
            except ImportError as e:
                print(f"# skipped {attack} ({library}): {e}")
                skipped.add(key)
                continue
            print(f"# {attack} {norm} {library}: {outcome.seconds:.1f} s", flush=True)
            if key in outcomes:  # the attacks are deterministic: keep the fastest time
                outcomes[key].seconds = min(outcomes[key].seconds, outcome.seconds)
            else:
                outcomes[key] = outcome
    if not args.chunk:
        keys = [(attack, library, norm) for attack, library, norm, _ in runs]
        results = [(*key, outcomes[key]) for key in keys if key in outcomes]
    rows = summarise(results)

    head = (
        "| attack | norm | library | s | img/s | success | median norm (failure = ∞) "
        "| per-sample / smallest (median) | lands with smallest | fwd/img | grad/img |"
    )
    print(head)
    print("|" + "---|" * 11)
    for r in rows:
        print(
            f"| {r.attack} | {r.norm} | {r.library} | {r.seconds:.1f} | {r.images_per_s:.1f} "
            f"| {r.success:.3f} | {r.median_norm:.4g} | {r.median_ratio_to_best:.3f} "
            f"| {r.lands_with_best:.2f} | {r.fwd_per_image:.0f} | {r.grad_per_image:.0f} |"
        )
    by = {(r.attack, r.norm, r.library): r for r in rows}
    for (attack, norm, library), r in by.items():
        mine = by.get((attack, norm, "labelflip"))
        if library == "labelflip" or mine is None:
            continue
        both_inf = math.isinf(mine.median_norm) and math.isinf(r.median_norm)
        ratio = "both ∞" if both_inf else f"{mine.median_norm / r.median_norm:.4f}"
        print(
            f"# {attack} {norm}: labelflip / {library}: median norm {ratio}, "
            f"time {mine.seconds / r.seconds:.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
