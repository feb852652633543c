"""Architecture registry: names used on the command line and in configs,
plus user models given as ``module:function``, and the named training
recipes of each architecture.

Every architecture has a ``default`` recipe (its own, fast on a CPU); some
have more, chosen with ``labelflip train --recipe NAME``:

- ``cw-paper`` (``cw-mnist``, ``cw-cifar``): Carlini & Wagner's Table 2,
  SGD lr 0.01, momentum 0.9, batch 128, 50 epochs at a constant rate.
- ``fgsm-rs`` (``cw-mnist``, ``mlp-mnist``): Wong, Rice & Kolter's MNIST
  recipe (``train_mnist.py`` of locuslab/fast_adversarial): Adam, batch 100,
  10 epochs, learning rate rising linearly from 0 to 5e-3 over the first
  2/5 of the steps and back to 0 (``onecycle``). It is the default recipe of
  ``--adversarial`` training for these architectures.

Measured accuracies and times: docs/models.md."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

from torch import nn

from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.architectures import (
    ARCHITECTURES,
    CW_PAPER_RECIPE,
    Architecture,
    InputShape,
    Recipe,
)

USER_RECIPE = Recipe(epochs=10, batch_size=128, lr=0.01, momentum=0.9)

# Wong et al. 2020, MNIST (train_mnist.py: Adam, lr_max 5e-3, cyclic, batch 100, 10 epochs).
WONG_MNIST_RECIPE = Recipe(
    epochs=10, batch_size=100, lr=5e-3, optimizer="adam", schedule="onecycle"
)

DEFAULT_RECIPE = "default"
ADVERSARIAL_RECIPE = "fgsm-rs"  # used by --adversarial when the architecture has it

# Named recipes besides each architecture's default (ARCHITECTURES[name].recipe).
RECIPES: dict[str, dict[str, Recipe]] = {
    "cw-mnist": {"cw-paper": CW_PAPER_RECIPE, "fgsm-rs": WONG_MNIST_RECIPE},
    "cw-cifar": {"cw-paper": CW_PAPER_RECIPE},
    "mlp-mnist": {"fgsm-rs": WONG_MNIST_RECIPE},
}


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name`` (one-line error with a suggestion if unknown)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise unknown_name("architecture", name, [*ARCHITECTURES, "module:function"]) from None


def recipe_names(arch: str) -> list[str]:
    """The recipe names ``arch`` has: ``default`` first."""
    return [DEFAULT_RECIPE, *RECIPES.get(arch, {})]


def recipe_for(name: str, recipe: str | None = None, *, adversarial: bool = False) -> Recipe:
    """The training recipe ``recipe`` of architecture ``name`` (one-line error
    if it has none of that name). ``None`` means the default, or for
    ``adversarial`` training the ``fgsm-rs`` recipe where the architecture
    has one."""
    if ":" in name:
        if recipe not in (None, DEFAULT_RECIPE):
            raise LabelflipError(f"a user model trains with the default recipe, not '{recipe}'")
        return USER_RECIPE
    arch = get_architecture(name)
    named = RECIPES.get(name, {})
    if recipe is None:
        recipe = ADVERSARIAL_RECIPE if adversarial and ADVERSARIAL_RECIPE in named else None
    if recipe is None or recipe == DEFAULT_RECIPE:
        return arch.recipe
    if recipe not in named:
        e = unknown_name("recipe", recipe, recipe_names(name))
        raise LabelflipError(str(e).replace(f"'{recipe}'", f"'{recipe}' of {name}", 1))
    return named[recipe]


def recipe_name(name: str, recipe: str | None = None, *, adversarial: bool = False) -> str:
    """The name of the recipe :func:`recipe_for` picks."""
    if recipe is not None:
        return recipe
    named = RECIPES.get(name, {}) if ":" not in name else {}
    return ADVERSARIAL_RECIPE if adversarial and ADVERSARIAL_RECIPE in named else DEFAULT_RECIPE


_USER_ARCH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def parse_user_arch(name: str) -> tuple[str, str]:
    """``(module, function)`` of a user architecture ``module:function``; a
    one-line error if ``name`` does not read so (``":"``, ``"m:"``, spaces)."""
    if not _USER_ARCH.fullmatch(name):
        raise LabelflipError(
            f"user model '{name}' must read module:function (a Python module, a colon and "
            "a function in it that returns an nn.Module, e.g. mymodels:make_net)"
        )
    module, _, function = name.partition(":")
    return module, function


def build_model(name: str, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Build architecture ``name`` for inputs ``input_shape`` (C, H, W) and
    ``num_classes`` classes. ``name`` may be ``module:function``: the function
    is imported and called with ``input_shape`` and ``num_classes`` when it
    takes them, else with no arguments, and must return an ``nn.Module``. A
    malformed name, a module that fails to import, an attribute that is not a
    function of those arguments and a function that raises are one
    :class:`LabelflipError` line each.
    """
    if ":" not in name:
        return get_architecture(name).build(tuple(input_shape), int(num_classes))
    module_name, func_name = parse_user_arch(name)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users name modules beside their config
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LabelflipError(f"cannot import user model '{name}': {e}") from None
    except Exception as e:  # noqa: BLE001 - user code can fail in any way on import
        raise LabelflipError(
            f"cannot import user model '{name}': {type(e).__name__}: {e}"
        ) from None
    if not hasattr(module, func_name):
        raise LabelflipError(
            f"cannot import user model '{name}': module '{module_name}' has no attribute "
            f"'{func_name}'"
        )
    fn = getattr(module, func_name)
    if not callable(fn):
        raise LabelflipError(
            f"user model '{name}' is a {type(fn).__name__}, not a function returning an nn.Module"
        )
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): call it bare
        params = {}  # type: ignore[assignment]
    given = {"input_shape", "num_classes"}
    required = [
        p.name
        for p in params.values()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in given
    ]
    if required:
        plural = "s" if len(required) > 1 else ""
        raise LabelflipError(
            f"user model '{name}' is not a model factory: it needs argument{plural} "
            f"{', '.join(required)} (a factory takes input_shape and/or num_classes, or "
            "nothing, and returns an nn.Module)"
        )
    kwargs = {}
    if "input_shape" in params:
        kwargs["input_shape"] = tuple(input_shape)
    if "num_classes" in params:
        kwargs["num_classes"] = int(num_classes)
    try:
        model = fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's factory can fail in any way
        raise LabelflipError(f"user model '{name}' failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise LabelflipError(
            f"user model '{name}' returned {type(model).__name__}, not an nn.Module"
        )
    return model
