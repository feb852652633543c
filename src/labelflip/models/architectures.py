"""Reference architectures and their training recipes.

Every builder takes ``(input_shape, num_classes)`` so that any architecture
can be trained on any dataset whose images are large enough for it.

- ``cw-mnist``: Carlini & Wagner, "Towards Evaluating the Robustness of
  Neural Networks" (S&P 2017), Table 1, MNIST column: conv32, conv32, pool,
  conv64, conv64, pool, fc200, fc200, fc10; ReLU; dropout 0.5 after the first
  fully connected layer (as in their ``train_models.py``). Their training
  (Table 2: SGD, lr 0.01, momentum 0.9, batch 128, 50 epochs) is the named
  recipe ``cw-paper``; the default recipe is a one-cycle schedule that
  reaches the paper's accuracy in a few epochs (:mod:`labelflip.models.registry`).
- ``cw-cifar``: the same paper's CIFAR column: conv64, conv64, pool, conv128,
  conv128, pool, fc256, fc256, fc10, same recipes.
- ``preact-resnet18``: pre-activation ResNet-18 (He et al., "Identity
  Mappings in Deep Residual Networks", ECCV 2016) in its CIFAR form: a 3×3
  stem without max-pooling, four stages of two pre-activation basic blocks
  (64, 128, 256, 512 channels), BN-ReLU, global average pooling, linear.
- ``digits-cnn``: a small CNN for 8×8 inputs (scikit-learn digits): conv32,
  conv64 (3×3, padding 1), pool, fc128, dropout 0.5, fc.
- ``mlp-mnist``: the attacked classifier ``f1`` of Tang et al., "Adversarial
  Attack Type I: Cheat Classifiers by Significant Changes", §IV-A: "an MLP
  with 128 hidden units" (2.73 % MNIST test error): flatten, fc128, ReLU,
  fc. The paper gives no training recipe; ours is Adam, lr 1e-3, batch 128,
  10 epochs (about 97.5-98 % on MNIST). Any input size (C·H·W inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labelflip.errors import LabelflipError

InputShape = tuple[int, int, int]


@dataclass(frozen=True)
class Recipe:
    """Default training settings of an architecture (the papers' recipes)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    optimizer: str = "sgd"  # "sgd" or "adam"
    schedule: str = "constant"  # "constant", "cosine" or "onecycle" (training.SCHEDULES)
    augment: bool = False  # random translation + horizontal flip


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[InputShape, int], nn.Module]
    recipe: Recipe
    description: str


def _conv_out(size: int, arch: str, input_shape: InputShape) -> int:
    # two valid 3x3 convs then a 2x2 max-pool, twice
    for _ in range(2):
        size = (size - 4) // 2
    if size < 1:
        raise LabelflipError(
            f"architecture '{arch}' needs inputs of at least 12x12 pixels, "
            f"got {input_shape[1]}x{input_shape[2]}"
        )
    return size


class CWNet(nn.Module):
    """The Carlini-Wagner convolutional network (Table 1 of their paper)."""

    def __init__(
        self, input_shape: InputShape, num_classes: int, conv: tuple[int, int], fc: int, name: str
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        c1, c2 = conv
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3), nn.ReLU(),
            nn.Conv2d(c1, c1, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3), nn.ReLU(),
            nn.Conv2d(c2, c2, 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        flat = c2 * _conv_out(h, name, input_shape) * _conv_out(w, name, input_shape)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, fc), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(fc, fc), nn.ReLU(),
            nn.Linear(fc, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], 64, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class DigitsCNN(nn.Module):
    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        if h < 2 or w < 2:
            raise LabelflipError(
                f"architecture 'digits-cnn' needs at least 2x2 inputs, got {h}x{w}"
            )
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (h // 2) * (w // 2), 128), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """One hidden layer over the flattened image: ``C·H·W -> hidden -> K``."""

    def __init__(self, input_shape: InputShape, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        c, h, w = input_shape
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


# Carlini & Wagner's Table 2 (named recipe "cw-paper" in labelflip.models.registry).
CW_PAPER_RECIPE = Recipe(epochs=50, batch_size=128, lr=0.01, momentum=0.9, nesterov=True)
# The default: the same optimiser on a one-cycle schedule, a few epochs (docs/models.md).
CW_FAST_RECIPE = Recipe(
    epochs=6, batch_size=128, lr=0.05, momentum=0.9, nesterov=True, schedule="onecycle"
)

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "cw-mnist",
            lambda s, k: CWNet(s, k, conv=(32, 64), fc=200, name="cw-mnist"),
            CW_FAST_RECIPE,
            "Carlini-Wagner MNIST CNN (S&P 2017, Table 1)",
        ),
        Architecture(
            "cw-cifar",
            lambda s, k: CWNet(s, k, conv=(64, 128), fc=256, name="cw-cifar"),
            CW_FAST_RECIPE,
            "Carlini-Wagner CIFAR CNN (S&P 2017, Table 1)",
        ),
        Architecture(
            "preact-resnet18",
            PreActResNet18,
            Recipe(
                epochs=200,
                batch_size=128,
                lr=0.1,
                weight_decay=5e-4,
                schedule="cosine",
                augment=True,
            ),
            "pre-activation ResNet-18, CIFAR form (He et al. 2016)",
        ),
        Architecture(
            "digits-cnn",
            DigitsCNN,
            Recipe(epochs=10, batch_size=64, lr=0.05, momentum=0.9),
            "small CNN for 8x8 digits",
        ),
        Architecture(
            "mlp-mnist",
            MLP,
            Recipe(epochs=10, batch_size=128, lr=1e-3, optimizer="adam"),
            "MLP, 128 hidden units: the Type I paper's f1 (Tang et al., sec. IV-A)",
        ),
    )
}
