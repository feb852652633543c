"""How well the perceptual class distance computed on at most ``per_class``
images per class (the default of ``[similarity] per_class``) approximates
the one computed on every training image, and what each costs.

    OMP_NUM_THREADS=1 LABELFLIP_DATA=../shared/datasets \\
        python benchmarks/perceptual_cap.py --zoo cw-mnist --dataset mnist

Features are extracted once for the whole split; each cap then subsamples
them with the run's seeded choice (``sample_per_class``, seeds 0, 1, 2) and
computes the Hausdorff matrix. Printed per cap and seed: the Spearman
correlation of the off-diagonal entries with the full matrix, the share of
classes whose nearest class (LabelFool's target) is the full matrix's, the
mean absolute and mean signed difference, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from labelflip.data import load_dataset
from labelflip.models import load_checkpoint, load_zoo
from labelflip.similarity.perceptual import (
    extract_features,
    hausdorff_class_distances,
    sample_per_class,
)


def nearest(d: np.ndarray) -> np.ndarray:
    return (d + np.diag([np.inf] * len(d))).argmin(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default="cw-mnist")
    p.add_argument("--checkpoint", help="a checkpoint instead of a zoo model")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", default="train")
    p.add_argument("--caps", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    clf = load_checkpoint(args.checkpoint)[0] if args.checkpoint else load_zoo(args.zoo)[0]
    data = load_dataset(args.dataset, args.split)
    k = len(data.class_names)
    t = time.perf_counter()
    feats = extract_features(clf, data.x)
    t_feat = time.perf_counter() - t
    t = time.perf_counter()
    full = hausdorff_class_distances(feats, data.y, k)
    t_full = time.perf_counter() - t
    print(f"all {len(data)} images: features {t_feat:.1f} s, Hausdorff {t_full:.1f} s", flush=True)
    iu = np.triu_indices(k, 1)
    rows = [{"cap": 0, "images": len(data), "features_s": t_feat, "hausdorff_s": t_full}]
    for cap in args.caps:
        for seed in args.seeds:
            idx = sample_per_class(data.y, cap, torch.Generator().manual_seed(seed))
            t = time.perf_counter()
            d = hausdorff_class_distances(feats[idx], data.y[idx], k)
            row = {
                "cap": cap,
                "seed": seed,
                "images": len(idx),
                "hausdorff_s": round(time.perf_counter() - t, 2),
                "features_s_est": round(t_feat * len(idx) / len(data), 1),
                "spearman": round(float(spearmanr(d[iu], full[iu]).statistic), 3),
                "nearest_agree": float((nearest(d) == nearest(full)).mean()),
                "mean_abs_diff": round(float(np.abs(d - full)[iu].mean()), 3),
                "mean_diff": round(float((d - full)[iu].mean()), 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
