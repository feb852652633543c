"""JMA against its comparison attacks on one-hot, ECOC and multi-label MNIST
models, in one run, on the same images and targets (JMA paper, §VI–VII).

Not a test: it prints one markdown table (and optionally JSON) with, per
scenario and attack, the attack success rate (ASR: the decision equals the
target, the whole label vector for multi-label), bASR for multi-label (share
of the bits asked to change that reached their target value), the MSE as the
JMA benchmarks define it (``‖δ‖₂ / √(H·W·C)``, mean over successful samples),
the mean number of iterations over successful samples (JMA: ``(v − 1) + n_bs``
as the paper counts; C&W: Adam steps summed over the binary search), and the
wall time per image.

Protocol (§VI-C): ``-n`` clean-correct test images picked at random (seeded),
one random target each: another class for one-hot and ECOC
(``random`` target strategy), and for the multi-label task the clean label
vector with 1, 2 and all-but-one bits flipped (``flip-bits``).

Usage (the figures in docs/benchmarks.md)::

    python benchmarks/jma_benchmark.py --data-dir ../shared/datasets -n 200 --threads 2 \\
        --onehot /work/ckpts/mnist-cw-mnist-cos15.safetensors \\
        --ecoc /work/ckpts/mnist-cw-mnist-ecoc.safetensors \\
        --multilabel /work/ckpts/mnist-grid-cw-mnist-ml.safetensors

Any of the three checkpoints may be left out; ``--attacks`` restricts the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass

import torch

from labelflip.analysis.multilabel import bit_success_rate
from labelflip.attacks import run_attack
from labelflip.data import load_dataset
from labelflip.models import load_checkpoint
from labelflip.targets import choose_targets

# (label, registry name, settings) per scenario. C&W settings follow the
# paper's (λ, n_bs, n_it,max) = (1e-3, 10, 100) row of Table V, scaled to
# this CPU: 5 binary-search steps of 200 Adam steps.
JMA = [("JMA (0.5, 200)", "jma", {"eps": 0.5, "max_iterations": 200})]
CW = {"initial_const": 1e-3, "binary_search_steps": 5, "steps": 200, "stepsize": 0.01}
ATTACKS = {
    "onehot": [*JMA, ("C&W (1e-3, 5, 200)", "cw-l2", CW)],
    "ecoc": [
        *JMA,
        ("C&W on f·c_i (1e-3, 5, 200)", "cw-l2", CW),
        ("ML-C&W (1e-3, 5, 200)", "ml-cw", CW),
    ],
    "multilabel": [*JMA, ("ML-C&W (1e-3, 5, 200)", "ml-cw", CW)],
}


@dataclass
class Row:
    scenario: str
    attack: str
    images: int
    asr: float
    basr: float | None
    mse: float
    mean_iterations: float
    seconds_per_image: float


def pick(clf, dataset: str, data_dir: str | None, n: int, seed: int):
    """``n`` clean-correct test images chosen at random (seeded)."""
    test = load_dataset(dataset, "test", data_dir)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    x, y = test.x[order[: 4 * n]], test.y[order[: 4 * n]]
    correct = clf.predict(x) == y
    x, y = x[correct][:n], y[correct][:n]
    if len(x) < n:
        sys.exit(f"only {len(x)} clean-correct images among {4 * n} drawn")
    return x, y


def measure(scenario, label, name, settings, clf, x, y, target) -> Row:
    t0 = time.perf_counter()
    res = run_attack(name, clf, x, y, settings, target=target)
    dt = time.perf_counter() - t0
    ok = res.success.cpu().numpy()
    m = math.prod(x.shape[1:])
    l2 = res.l2.cpu().numpy()
    basr = None
    if clf.multilabel:
        basr = bit_success_rate(
            res.clean_pred.cpu().numpy(),
            res.adv_pred.cpu().numpy(),
            target.cpu().numpy(),
            clf.num_outputs,
        )
    its = res.iterations.cpu().numpy()
    return Row(
        scenario,
        label,
        len(x),
        float(ok.mean()),
        basr,
        float((l2[ok] / math.sqrt(m)).mean()) if ok.any() else math.nan,
        float(its[ok].mean()) if ok.any() else math.nan,
        dt / len(x),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onehot", help="one-hot MNIST checkpoint")
    p.add_argument("--ecoc", help="ECOC MNIST checkpoint")
    p.add_argument("--multilabel", help="multi-label mnist-grid checkpoint")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--attacks", default=None, help="comma-separated registry names to keep")
    p.add_argument("--bits", default="1,2,-1", help="multi-label: bits to flip (-1: all but one)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    keep = set(a.attacks.split(",")) if a.attacks else None
    rows: list[Row] = []
    scenarios = [
        ("onehot", a.onehot, "mnist"),
        ("ecoc", a.ecoc, "mnist"),
        ("multilabel", a.multilabel, "mnist-grid"),
    ]
    for kind, ckpt, dataset in scenarios:
        if not ckpt:
            continue
        clf, meta = load_checkpoint(ckpt)
        if clf.encoding.kind != kind:
            sys.exit(f"{ckpt} is a {clf.encoding.kind} model, expected {kind}")
        x, y = pick(clf, dataset, a.data_dir, a.n, a.seed)
        with torch.no_grad():
            scores = clf(x)
        gen = torch.Generator().manual_seed(a.seed + 1)
        if kind == "multilabel":
            settings_list = [int(b) for b in a.bits.split(",")]
            target_sets = [
                (
                    f"{kind}, {b if b > 0 else clf.num_outputs + b} bit(s)",
                    choose_targets(
                        {"strategy": "flip-bits", "bits": b},
                        scores,
                        labels=y,
                        generator=gen,
                        encoding=clf.encoding,
                    ),
                )
                for b in settings_list
            ]
        else:
            target_sets = [
                (
                    kind,
                    choose_targets(
                        "random", scores, labels=y, generator=gen, encoding=clf.encoding
                    ),
                )
            ]
        for scenario, target in target_sets:
            for label, name, settings in ATTACKS[kind]:
                if keep is not None and name not in keep:
                    continue
                row = measure(scenario, label, name, settings, clf, x, y, target)
                rows.append(row)
                print(
                    f"{scenario:24s} {label:30s} ASR {row.asr:.3f}"
                    + (f" bASR {row.basr:.4f}" if row.basr is not None else "")
                    + f" MSE {row.mse:.2e} iters {row.mean_iterations:7.2f}"
                    f" {row.seconds_per_image:.3f} s/img",
                    flush=True,
                )
    print()
    print("| scenario | attack | ASR | bASR | MSE | mean iterations | s / image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        basr = f"{r.basr:.4f}" if r.basr is not None else ""
        print(
            f"| {r.scenario} | {r.attack} | {r.asr:.3f} | {basr} | {r.mse:.2e} | "
            f"{r.mean_iterations:.2f} | {r.seconds_per_image:.3f} |"
        )
    if a.json:
        info = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "n": a.n,
            "seed": a.seed,
        }
        with open(a.json, "w") as f:
            json.dump({"info": info, "rows": [asdict(r) for r in rows]}, f, indent=2)
    if not rows:
        print("no checkpoint given: nothing measured", file=sys.stderr)


if __name__ == "__main__":
    main()
