"""Models: architectures, the Classifier wrapper, training (standard and
adversarial), checkpoints and the shipped model zoo."""

from labelflip.models.architectures import ARCHITECTURES, Architecture, Recipe
from labelflip.models.checkpoint import (
    CheckpointMeta,
    import_state_dict,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from labelflip.models.classifier import Classifier
from labelflip.models.encoding import OutputEncoding, hadamard_codebook
from labelflip.models.registry import build_model, get_architecture, recipe_for
from labelflip.models.zoo import load_zoo, zoo_names

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "CheckpointMeta",
    "Classifier",
    "OutputEncoding",
    "Recipe",
    "build_model",
    "get_architecture",
    "hadamard_codebook",
    "import_state_dict",
    "load_checkpoint",
    "load_zoo",
    "read_meta",
    "recipe_for",
    "save_checkpoint",
    "zoo_names",
]
