"""Your own model and data through labelflip, in one call.

Trains a small CNN of your own on scikit-learn's 8x8 digits (offline, a few
seconds on a CPU), then asks labelflip where DeepFool and a PGD sweep send
its test images:

    python examples/own_model.py [--samples 200] [--out runs/own-model]

Replace the model and the DataLoader with yours; give ``mean``/``std`` to
``labelflip.evaluate`` if your model expects normalised inputs.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import labelflip


class SmallNet(nn.Module):
    """A user's model: 1x8x8 images in [0, 1] -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def digits_loaders() -> tuple[DataLoader, DataLoader]:
    """scikit-learn's digits as images in [0, 1]: the first 1400 to train, the rest to test."""
    d = load_digits()
    x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    train = TensorDataset(x[:1400], y[:1400])
    test = TensorDataset(x[1400:], y[1400:])
    generator = torch.Generator().manual_seed(0)
    return (
        DataLoader(train, batch_size=64, shuffle=True, generator=generator),
        DataLoader(test, batch_size=256),  # labelflip needs a loader that does not shuffle
    )


def train(net: nn.Module, loader: DataLoader, epochs: int = 15) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="test images to attack")
    parser.add_argument("--out", default=None, help="run directory (default runs/own-model-...)")
    args = parser.parse_args()

    torch.manual_seed(0)
    train_loader, test_loader = digits_loaders()
    net = SmallNet()
    train(net, train_loader)

    run = labelflip.evaluate(
        net,
        test_loader,
        ["deepfool", {"attack": "pgd", "eps": [0.05, 0.1, 0.2], "steps": 20}],
        samples=args.samples,
        name="own-model",
        out=args.out,
    )
    print(f"run directory: {run.path}")
    print(f"clean accuracy on the {run.summary.run.n_samples} samples: "
          f"{run.job(0).clean_accuracy:.3f}")  # fmt: skip
    for job_id in run.job_ids:
        sym, att = run.symmetry(job_id), run.attractors(job_id)
        lo, hi = sym.ci
        print(
            f"{job_id:>22}: success {run.job(job_id).success_rate_clean:6.1%}, "
            f"s = {sym.s:.2f} [{lo:.2f}, {hi:.2f}] from {sym.n_flips} flips, "
            f"top attractor {att.top.name} ({att.top.share:.0%})"
        )
    print(run.flip_matrix("pgd-eps0.1-steps20"))
    print(f"report: {run.report()}")


if __name__ == "__main__":
    main()
