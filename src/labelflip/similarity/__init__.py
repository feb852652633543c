"""Class-distance matrices: how far apart the classes of a dataset are.

Each is a :class:`ClassDistance`, a validated ``(k, k)`` float64 matrix with
the class names (symmetric, non-negative, zero diagonal), saved as JSON:

- **perceptual** (:func:`perceptual_distance`): LabelFool §III-A. Images are
  compared by ``1 - cos`` of a trained model's penultimate-layer features,
  classes by the Hausdorff distance between their image sets; blocked so the
  ``n x n`` matrix never exists (cost ``O(n^2 d)``).
- **semantic** (:func:`semantic_distance`): edges between two classes in a
  class hierarchy (built-in ``cifar10`` and ``fashion-mnist``, or a JSON
  file). The built-in groupings are labelflip's own, not the datasets'
  authors'.
- **confusion** (:func:`confusion_distance`): ``1 -`` the symmetrised clean
  confusion rate between two classes.
"""

from labelflip.similarity._matrix import ClassDistance
from labelflip.similarity.confusion import confusion_distance
from labelflip.similarity.perceptual import (
    extract_features,
    hausdorff_class_distances,
    hausdorff_reference,
    penultimate_layer,
    perceptual_distance,
    sample_per_class,
)
from labelflip.similarity.semantic import (
    Hierarchy,
    builtin_hierarchies,
    builtin_hierarchy_for,
    load_hierarchy,
    semantic_distance,
    top_groups,
    tree_distance,
)

__all__ = [
    "ClassDistance",
    "Hierarchy",
    "builtin_hierarchies",
    "builtin_hierarchy_for",
    "confusion_distance",
    "extract_features",
    "hausdorff_class_distances",
    "hausdorff_reference",
    "load_hierarchy",
    "penultimate_layer",
    "perceptual_distance",
    "sample_per_class",
    "semantic_distance",
    "top_groups",
    "tree_distance",
]
