"""Adversarial attacks as plain functions over a :class:`~labelflip.models.Classifier`.

Every attack has the signature ``attack(clf, x, y, *, target=None,
generator=None, **settings) -> AttackResult``: keyword-only settings, no
hidden state, randomness only from the explicit ``torch.Generator`` (a fresh
one seeded with 0 when ``None``), the caller's tensors never modified, the
device of ``x`` followed. ``target=None`` means untargeted. ``success`` and
``adv_pred`` always come from evaluating the model on the returned
(bounds-clipped) ``x_adv`` (see :func:`~labelflip.attacks._result.finalize`).

>>> result = run_attack("pgd", clf, x, y, {"eps": 0.1})   # doctest: +SKIP
>>> result.summary()["success_rate"]                       # doctest: +SKIP

Registered names: ``fgsm`` (norm ``linf``/``l2``), ``pgd`` (``linf``/``l2``),
``deepfool`` (``l2``/``linf``), ``fmn`` (minimal norm, ``l0``/``l1``/``l2``/``linf``,
targeted or not), ``ddn``, ``alma`` and ``superdeepfool`` (minimal L2,
targeted or not), ``best-of`` (the smallest successful adversarial of
several untargeted minimal attacks), ``boundary-profile`` (a targeted minimal
attack toward every class: the distance to each class's boundary), ``cw-l2``,
``labelfool`` (targeted; LabelFool's sample generation, needs target classes:
see :mod:`labelflip.targets`),
``jma`` (targeted; one-hot, ECOC and multi-label models), ``ml-cw``
(targeted ML-C&W, per-output hinge; multi-label, ECOC and one-hot models) and
``foolbox``: any Foolbox 3
attack by name through the same interface (optional extra, ``pip install
'labelflip[foolbox]'``; see :func:`~labelflip.attacks.foolbox_adapter.foolbox_attack`).
``foolbox:<Attack>`` is shorthand with the attack preset:

>>> run_attack("foolbox", clf, x, y, {"attack": "L1BrendelBethgeAttack"})  # doctest: +SKIP
>>> run_attack("foolbox:LinfPGD", clf, x, y, {"epsilon": 0.1})           # doctest: +SKIP

``torchattacks`` (and ``torchattacks:<Attack>``) does the same for
torchattacks: AutoAttack and its components APGD, APGDT, FAB and Square
(``pip install --no-deps torchattacks``; see
:func:`~labelflip.attacks.torchattacks_adapter.torchattacks_attack`):

>>> run_attack("torchattacks:APGD", clf, x, y, {"eps": 8 / 255})           # doctest: +SKIP
"""

# Importing an attack module registers its attack (``register_attack`` next to
# the definition); every public module of this package is imported, so adding
# an attack is adding its module.
import importlib as _importlib
import pkgutil as _pkgutil

from labelflip.attacks._common import check_eps
from labelflip.attacks._registry import (
    ATTACKS,
    SHORTHANDS,
    AttackSpec,
    attack_resources,
    get_attack,
    register_attack,
    run_attack,
    settings_from_mapping,
)
from labelflip.attacks._result import AttackResult, finalize, finalize_type_i
from labelflip.attacks.alma import ALMASettings, alma
from labelflip.attacks.best_of import BestOfSettings, best_of, found_by
from labelflip.attacks.boundary_profile import BoundaryProfileSettings, boundary_profile
from labelflip.attacks.carlini_wagner import CarliniWagnerL2Settings, carlini_wagner_l2
from labelflip.attacks.ddn import DDNSettings, ddn
from labelflip.attacks.deepfool import DeepFoolSettings, deepfool
from labelflip.attacks.fgsm import FGSMSettings, fgsm
from labelflip.attacks.fmn import FMNSettings, fmn, fmn_from_starts
from labelflip.attacks.foolbox_adapter import FoolboxSettings, foolbox_attack
from labelflip.attacks.jma import JMASettings, jma
from labelflip.attacks.labelfool import LabelFoolSettings, labelfool
from labelflip.attacks.ml_cw import MLCarliniWagnerSettings, ml_carlini_wagner
from labelflip.attacks.pgd import PGDSettings, pgd
from labelflip.attacks.superdeepfool import SuperDeepFoolSettings, superdeepfool
from labelflip.attacks.torchattacks_adapter import TorchattacksSettings, torchattacks_attack
from labelflip.attacks.type_i import (
    LatentTypeISettings,
    TypeISettings,
    latent_type_i_attack,
    type_i_attack,
)

for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ATTACKS",
    "SHORTHANDS",
    "ALMASettings",
    "AttackResult",
    "AttackSpec",
    "BestOfSettings",
    "BoundaryProfileSettings",
    "CarliniWagnerL2Settings",
    "DDNSettings",
    "DeepFoolSettings",
    "FGSMSettings",
    "FMNSettings",
    "FoolboxSettings",
    "JMASettings",
    "LatentTypeISettings",
    "LabelFoolSettings",
    "MLCarliniWagnerSettings",
    "PGDSettings",
    "SuperDeepFoolSettings",
    "TorchattacksSettings",
    "TypeISettings",
    "alma",
    "attack_resources",
    "best_of",
    "boundary_profile",
    "carlini_wagner_l2",
    "check_eps",
    "ddn",
    "deepfool",
    "fgsm",
    "finalize",
    "fmn",
    "fmn_from_starts",
    "finalize_type_i",
    "foolbox_attack",
    "found_by",
    "get_attack",
    "jma",
    "labelfool",
    "latent_type_i_attack",
    "ml_carlini_wagner",
    "pgd",
    "register_attack",
    "run_attack",
    "settings_from_mapping",
    "superdeepfool",
    "torchattacks_attack",
    "type_i_attack",
]
