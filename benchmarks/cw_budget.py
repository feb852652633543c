"""C&W L2 budgets for the built-in default run: success, median and mean L2
and Adam steps taken, on the 359 test digits and the zoo digits-cnn (the
default run's architecture, recipe and seed), one torch thread.

    python benchmarks/cw_budget.py

The steps taken (``iterations``, summed over samples and binary-search
rounds; abort-early stops a stalled sample) are the cost that does not
depend on the machine's load; the seconds are printed beside them.
"""

from __future__ import annotations

import time

import torch

from labelflip.attacks.carlini_wagner import carlini_wagner_l2
from labelflip.data import load_dataset
from labelflip.models import load_zoo

# (binary_search_steps, steps, stepsize, initial_const): the old default,
# cheaper variants, the new default and a long reference
BUDGETS = [
    (5, 200, 0.01, 0.001),
    (5, 100, 0.02, 0.001),
    (5, 100, 0.02, 1.0),
    (5, 100, 0.05, 1.0),
    (5, 50, 0.1, 1.0),
    (5, 100, 0.1, 1.0),
    (9, 100, 0.05, 1.0),
]


def main() -> None:
    torch.set_num_threads(1)
    clf = load_zoo("digits-cnn")[0]
    test = load_dataset("digits", split="test")
    x, y = test.x, test.y
    print("bss  steps  stepsize  c0      success  med L2  mean L2  Adam steps  seconds")
    for bss, steps, lr, c0 in BUDGETS:
        t = time.perf_counter()
        r = carlini_wagner_l2(
            clf, x, y, binary_search_steps=bss, steps=steps, stepsize=lr, initial_const=c0,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        seconds = time.perf_counter() - t
        l2 = (r.x_adv - x).flatten(1).norm(dim=1)[r.success]
        print(
            f"{bss:<4} {steps:<6} {lr:<9g} {c0:<7g} {r.success.float().mean():.3f}    "
            f"{l2.median():.4f}  {l2.mean():.4f}   {int(r.iterations.sum()):<10}  {seconds:.1f}"
        )


if __name__ == "__main__":
    main()
