"""labelflip: where do adversarial examples land, and why there?"""

from labelflip.errors import LabelflipError

__version__ = "0.1.0"

__all__ = ["LabelflipError", "__version__"]
