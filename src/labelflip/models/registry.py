"""Architecture registry: names used on the command line and in configs,
plus user models given as ``module:function``."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from torch import nn

from labelflip.errors import LabelflipError, unknown_name
from labelflip.models.architectures import ARCHITECTURES, Architecture, InputShape, Recipe

USER_RECIPE = Recipe(epochs=10, batch_size=128, lr=0.01, momentum=0.9)


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name`` (one-line error with a suggestion if unknown)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise unknown_name("architecture", name, [*ARCHITECTURES, "module:function"]) from None


def recipe_for(name: str) -> Recipe:
    return USER_RECIPE if ":" in name else get_architecture(name).recipe


def build_model(name: str, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Build architecture ``name`` for inputs ``input_shape`` (C, H, W) and
    ``num_classes`` classes. ``name`` may be ``module:function``: the function
    is imported and called with ``input_shape`` and ``num_classes`` when it
    takes them, else with no arguments, and must return an ``nn.Module``.
    """
    if ":" not in name:
        return get_architecture(name).build(tuple(input_shape), int(num_classes))
    module_name, _, func_name = name.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users name modules beside their config
    try:
        fn = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise LabelflipError(f"cannot import user model '{name}': {e}") from None
    params = inspect.signature(fn).parameters
    kwargs = {}
    if "input_shape" in params:
        kwargs["input_shape"] = tuple(input_shape)
    if "num_classes" in params:
        kwargs["num_classes"] = int(num_classes)
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise LabelflipError(
            f"user model '{name}' returned {type(model).__name__}, not an nn.Module"
        )
    return model
