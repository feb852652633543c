"""Type I attacks on MNIST (Tang et al., "Adversarial attack type I: cheat
classifiers by significant changes", §IV): success judged by an independent
oracle, the label-stay matrix, and the feature-squeezing detector table.

Not a test: it prints (and optionally writes as JSON) the figures of
docs/type-i.md.

- ``-n`` MNIST test images that the attacked model ``f1`` classifies
  correctly (the first ones); targets ``y' = y + 1 mod 10`` (the paper's
  ``i → i+1``).
- Type I examples from the SVAE (``labelflip train --arch svae``), Algorithm 2
  (:func:`labelflip.attacks.type_i.type_i`), once per ``--setting`` (default:
  the paper's settings and a looser clip on ``k_t``).
- Judgement: ``f1`` must keep ``y``; an independent oracle (a separately
  trained classifier, the first ``--oracle``) must see another class
  (success), ideally ``y'``. Further ``--oracle`` checkpoints are reported as
  extra success columns. "f2-judged" success is the SVAE's own verdict
  (``f1`` keeps ``y`` and ``f2`` says ``y'``), what the paper's attacker sees.
- Label-stay matrix (``labelflip.analysis.label_stay``): original class ×
  class the oracle sees, among the examples ``f1`` still calls ``y``.
- Feature squeezing (1-bit depth + 2×2 median, §IV-C), the joint score with
  the L1 and L2 (the paper's Euclidean) distances: thresholds flagging 5 % of
  the clean images, and, for L2, the paper's absolute thresholds
  ζ = 0.2510, 0.6089, 0.9353 (Table I). Rows: clean images, the SVAE's
  plain reconstructions ``f_dec(μ(x))`` of them (decoded, not attacked),
  successful Type II examples (FGSM, PGD, DeepFool, C&W; ``--no-type-ii``
  skips them) and the Type I examples (successful ones; successful ones that
  ``f1`` still gives ``p(y) ≥ 0.99``, the paper's operating point
  ``J1 ≤ Ĵ1 = 0.01``; and every output).

Usage (the figures in docs/type-i.md)::

    python benchmarks/type_i_mnist.py --data-dir /work/shared/datasets -n 500 \\
        --f1 mnist-mlp-mnist.safetensors --oracle mnist-cw-mnist-cos15.safetensors \\
        --svae svae-mnist-conv --threads 2 --json type-i.json

    # tuning Algorithm 2: any keyword of type_i, as JSON, one run per --setting
    python benchmarks/type_i_mnist.py ... -n 200 --no-type-ii \\
        --setting 'k_max 1, eta 0.1={"k_max": 1.0, "eta": 0.1}'
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
PAPER_ZETAS = (0.2510, 0.6089, 0.9353)  # Tang et al., Table I (L2 distance)
CONFIDENT = 0.99  # f1's probability of y at the paper's Ĵ1 = 0.01 (J1 = −log p ≤ Ĵ1)


def _setting(text: str) -> tuple[str, dict]:
    label, sep, kw = text.rpartition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"--setting wants LABEL=JSON, got {text!r}")
    try:
        settings = json.loads(kw)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--setting {label!r}: bad JSON: {e}") from None
    if not isinstance(settings, dict):
        raise argparse.ArgumentTypeError(f"--setting {label!r}: JSON must be an object")
    return label, settings


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--f1", required=True, help="attacked classifier checkpoint")
    p.add_argument(
        "--oracle",
        required=True,
        nargs="+",
        help="independent classifier checkpoint(s); the first judges, the others are extra columns",
    )
    p.add_argument("--svae", required=True, help="SVAE checkpoint (labelflip train --arch svae)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument(
        "--setting",
        action="append",
        type=_setting,
        metavar="LABEL=JSON",
        help="an Algorithm 2 setting (type_i keywords as JSON; repeatable; default: two)",
    )
    p.add_argument("--no-type-ii", action="store_true", help="skip the Type II attacks")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    f1, _ = load_checkpoint(a.f1)
    oracles = [load_checkpoint(path)[0] for path in a.oracle]
    oracle = oracles[0]
    svae, _ = load_svae(a.svae)
    test = load_dataset("mnist", "test", a.data_dir)
    ok = f1.predict(test.x) == test.y
    x, y = test.x[ok][: a.n], test.y[ok][: a.n]
    target = (y + 1) % 10
    with torch.no_grad():
        x_rec = svae.decode(svae.encode(x)[0]).clamp(*f1.bounds)
    out: dict = {
        "n": len(x),
        "f1": a.f1,
        "oracles": a.oracle,
        "svae": a.svae,
        "svae_arch": svae.config.arch,
        "f1_test_accuracy": _acc(f1.predict(test.x), test.y),
        "oracle_clean_accuracy": [_acc(o.predict(x), y) for o in oracles],
        "f2_clean_accuracy": _acc(svae.predict(x), y),
        "reconstruction": {
            "f1_accuracy": _acc(f1.predict(x_rec), y),
            "oracle_accuracy": _acc(oracle.predict(x_rec), y),
            "mean_l2_to_clean": float((x_rec - x).flatten(1).norm(dim=1).mean()),
        },
        "type_i": [],
        "type_ii": [],
        "detector": {},
    }
    print(
        f"{len(x)} clean-correct test images; f1 test accuracy {out['f1_test_accuracy']:.4f}; "
        f"oracle clean accuracy {out['oracle_clean_accuracy']}; "
        f"f2 clean accuracy {out['f2_clean_accuracy']:.4f}"
    )
    print(f"reconstructions f_dec(mu(x)): {json.dumps(out['reconstruction'])}")

    examples: dict[str, torch.Tensor] = {"clean": x, "SVAE reconstruction f_dec(μ(x))": x_rec}
    for label, kw in a.setting or TYPE_I:
        t0 = time.perf_counter()
        r = type_i(f1, svae, x, y, target=target, steps=a.steps, **kw)
        dt = time.perf_counter() - t0
        j = judge(oracle, f1, r.x_adv, y, target)
        f1_adv = f1.predict(r.x_adv).numpy()
        or_adv = oracle.predict(r.x_adv).numpy()
        rates = type_i_rates(y.numpy(), f1_adv, or_adv, target.numpy())
        stay = label_stay_matrix(y.numpy(), f1_adv, or_adv, 10)
        l2 = (r.x_adv - x).flatten(1).norm(dim=1)
        with torch.no_grad():
            conf = torch.softmax(f1(r.x_adv), dim=1).gather(1, y[:, None])[:, 0]
        confident = j.success & (conf >= CONFIDENT)
        row = {
            "setting": label,
            "settings": {"steps": a.steps, **kw},
            "f1_keeps": rates.f1_keep_rate,
            "oracle_changed": rates.oracle_change_rate,
            "success": rates.success_rate,
            "oracle_hits_target": rates.target_hit_rate,
            "success_on_target": float((j.f1_keeps & j.oracle_target).double().mean()),
            "f2_hits_target": float(r.f2_changed.double().mean()),
            "success_f2": float(r.success.double().mean()),
            "extra_oracles_success": [
                float(judge(o, f1, r.x_adv, y, target).success.double().mean()) for o in oracles[1:]
            ],
            "median_l2_success": float(l2[j.success].median()) if j.success.any() else None,
            "median_f1_confidence_success": (
                float(conf[j.success].median()) if j.success.any() else None
            ),
            "success_f1_confident": float(confident.double().mean()),
            "seconds_per_image": dt / len(x),
            "label_stay_matrix": stay.tolist(),
            "symmetry": symmetry_score(stay),
            "top_stays": [(int(i), int(k), int(c)) for i, k, c in top_flips(stay, 5)],
        }
        out["type_i"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "label_stay_matrix"}))
        print(np.asarray(stay))
        examples[f"{label}: successful"] = r.x_adv[j.success]
        examples[f"{label}: successful, f1 p(y) >= {CONFIDENT}"] = r.x_adv[confident]
        examples[f"{label}: all outputs"] = r.x_adv

    if not a.no_type_ii:
        for label, name, settings in TYPE_II:
            t0 = time.perf_counter()
            res = run_attack(name, f1, x, y, settings)
            dt = time.perf_counter() - t0
            examples[label] = res.x_adv[res.success]
            rate = float(res.success.double().mean())
            out["type_ii"].append({"attack": label, "success": rate, "seconds": dt})
            print(f"{label}: success {rate:.3f} ({dt:.0f} s)")

    for distance in ("l1", "l2"):
        scores = {
            k: squeeze_scores(f1, v, distance=distance).cpu().numpy() for k, v in examples.items()
        }
        zeta = calibrate_threshold(scores["clean"], fpr=0.05)
        zetas = {"5% clean": zeta}
        if distance == "l2":
            zetas.update({f"{z:.4f}": z for z in PAPER_ZETAS})
        table = {
            k: {
                "n": len(s),
                "detected": {
                    name: (detection_rate(s, z) if len(s) else None) for name, z in zetas.items()
                },
                "mean_score": float(s.mean()) if len(s) else None,
            }
            for k, s in scores.items()
        }
        out["detector"][distance] = {"thresholds": zetas, "rates": table}
        names = list(zetas)
        print(
            f"feature squeezing ({distance}); thresholds "
            + ", ".join(f"{k}: {v:.4f}" for k, v in zetas.items())
        )
        print(f"  {'examples':70s} {'n':>4s} " + " ".join(f"{k:>9s}" for k in names))
        for k, v in table.items():
            cells = " ".join(
                f"{'–' if v['detected'][nm] is None else format(v['detected'][nm], '.3f'):>9s}"
                for nm in names
            )
            print(f"  {k:70s} {v['n']:4d} {cells}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
