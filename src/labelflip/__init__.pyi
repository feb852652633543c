# Types of the names labelflip/__init__.py imports on first access.
from labelflip.api import evaluate as evaluate
from labelflip.api import run_experiment as run_experiment
from labelflip.attacks import AttackResult as AttackResult
from labelflip.attacks import run_attack as run_attack
from labelflip.config import RunConfig as RunConfig
from labelflip.config import load_config as load_config
from labelflip.errors import LabelflipError as LabelflipError
from labelflip.models import Classifier as Classifier
from labelflip.results import Run as Run
from labelflip.results import open_run as open_run

__version__: str
__all__: list[str]
