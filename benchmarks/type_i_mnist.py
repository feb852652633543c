"""Type I attacks on MNIST (Tang et al., "Adversarial attack type I: cheat
classifiers by significant changes", §IV): success judged by an independent
oracle, the label-stay matrix, and the feature-squeezing detector table.

Not a test: it prints (and optionally writes as JSON) the figures of
docs/type-i.md.

- ``-n`` MNIST test images that the attacked model ``f1`` classifies
  correctly (the first ones); targets ``y' = y + 1 mod 10`` (the paper's
  ``i → i+1``).
- Type I examples from the SVAE (``labelflip train --arch svae``), Algorithm 2,
  with the paper's settings and with a looser clip on ``k_t``.
- Judgement: ``f1`` must keep ``y``; an independent ``oracle`` (a separately
  trained classifier) must see another class (success), ideally ``y'``.
- Label-stay matrix (``labelflip.analysis.label_stay``): original class ×
  class the oracle sees, among the examples ``f1`` still calls ``y``.
- Feature squeezing (1-bit depth + 2×2 median, §IV-C): the threshold flags
  5 % of the clean images (L1 and L2 distances); detection rates on clean
  images, on successful Type II examples (FGSM, PGD, DeepFool, C&W) and on
  successful Type I examples.

Usage (the figures in docs/type-i.md)::

    python benchmarks/type_i_mnist.py --data-dir ../shared/datasets -n 500 \\
        --f1 mnist-cw-mnist-cos15.safetensors --oracle mnist-cw-mnist.safetensors \\
        --svae svae-mnist --threads 2 --json type-i.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from labelflip.analysis import symmetry_score, top_flips
from labelflip.analysis.label_stay import label_stay_matrix, type_i_rates
from labelflip.attacks import run_attack
from labelflip.attacks.type_i import judge, type_i
from labelflip.data import load_dataset
from labelflip.detect import calibrate_threshold, detection_rate, squeeze_scores
from labelflip.models import load_checkpoint
from labelflip.models.svae import load_svae

TYPE_II = [
    ("FGSM ε=0.3", "fgsm", {"eps": 0.3}),
    ("PGD ε=0.3", "pgd", {"eps": 0.3}),
    ("DeepFool L2", "deepfool", {}),
    ("C&W L2 (5×100)", "cw-l2", {"binary_search_steps": 5, "steps": 100, "initial_const": 0.01}),
]
TYPE_I = [
    ("Type I, paper settings (k_max 0.005, η 1e-3)", {}),
    ("Type I, k_max 1, η 0.1", {"k_max": 1.0, "eta": 0.1}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--f1", required=True, help="attacked classifier checkpoint")
    p.add_argument("--oracle", required=True, help="independent classifier checkpoint")
    p.add_argument("--svae", required=True, help="SVAE checkpoint (labelflip train --arch svae)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    f1, _ = load_checkpoint(a.f1)
    oracle, _ = load_checkpoint(a.oracle)
    svae, _ = load_svae(a.svae)
    test = load_dataset("mnist", "test", a.data_dir)
    ok = f1.predict(test.x) == test.y
    x, y = test.x[ok][: a.n], test.y[ok][: a.n]
    target = (y + 1) % 10
    out: dict = {"n": len(x), "type_i": [], "detector": {}}
    print(
        f"{len(x)} clean-correct test images; oracle clean accuracy "
        f"{float((oracle.predict(x) == y).double().mean()):.4f}"
    )

    examples: dict[str, torch.Tensor] = {"clean": x}
    for label, kw in TYPE_I:
        t0 = time.perf_counter()
        r = type_i(f1, svae, x, y, target=target, steps=a.steps, **kw)
        dt = time.perf_counter() - t0
        j = judge(oracle, f1, r.x_adv, y, target)
        f1_adv = f1.predict(r.x_adv).numpy()
        or_adv = oracle.predict(r.x_adv).numpy()
        rates = type_i_rates(y.numpy(), f1_adv, or_adv, target.numpy())
        stay = label_stay_matrix(y.numpy(), f1_adv, or_adv, 10)
        l2 = (r.x_adv - x).flatten(1).norm(dim=1)
        row = {
            "setting": label,
            "f1_keeps": rates.f1_keep_rate,
            "oracle_changed": rates.oracle_change_rate,
            "success": rates.success_rate,
            "oracle_hits_target": rates.target_hit_rate,
            "f2_hits_target": float(r.f2_changed.double().mean()),
            "median_l2_success": float(l2[j.success].median()) if j.success.any() else None,
            "seconds_per_image": dt / len(x),
            "label_stay_matrix": stay.tolist(),
            "symmetry": symmetry_score(stay),
            "top_stays": [(int(i), int(k), int(c)) for i, k, c in top_flips(stay, 5)],
        }
        out["type_i"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "label_stay_matrix"}))
        print(np.asarray(stay))
        examples[label] = r.x_adv[j.success]

    for label, name, settings in TYPE_II:
        res = run_attack(name, f1, x, y, settings)
        examples[label] = res.x_adv[res.success]
        print(f"{label}: success {float(res.success.double().mean()):.3f}")

    for distance in ("l1", "l2"):
        scores = {
            k: squeeze_scores(f1, v, distance=distance).cpu().numpy() for k, v in examples.items()
        }
        zeta = calibrate_threshold(scores["clean"], fpr=0.05)
        table = {
            k: {
                "n": len(s),
                "detected": detection_rate(s, zeta) if len(s) else None,
                "mean_score": float(s.mean()) if len(s) else None,
            }
            for k, s in scores.items()
        }
        out["detector"][distance] = {"threshold": zeta, "rates": table}
        print(f"feature squeezing ({distance}), threshold {zeta:.4f} (5 % of clean flagged)")
        for k, v in table.items():
            det = "–" if v["detected"] is None else f"{v['detected']:.3f}"
            print(f"  {k:48s} n={v['n']:4d} detected {det}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
