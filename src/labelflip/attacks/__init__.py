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
``deepfool`` (``l2``/``linf``), ``cw-l2``, ``labelfool`` (targeted; LabelFool's
sample generation, needs target classes: see :mod:`labelflip.targets`),
``jma`` (targeted; one-hot, ECOC and multi-label models), ``ml-cw``
(targeted ML-C&W, per-output hinge; multi-label, ECOC and one-hot models) and
``foolbox``: any Foolbox 3
attack by name through the same interface (optional extra, ``pip install
'labelflip[foolbox]'``; see :func:`~labelflip.attacks.foolbox_adapter.foolbox_attack`).
``foolbox:<Attack>`` is shorthand with the attack preset:

>>> run_attack("foolbox", clf, x, y, {"attack": "L1BrendelBethgeAttack"})  # doctest: +SKIP
>>> run_attack("foolbox:LinfPGD", clf, x, y, {"epsilon": 0.1})           # doctest: +SKIP
"""

from labelflip.attacks._registry import (
    ATTACKS,
    AttackSpec,
    attack_resources,
    get_attack,
    run_attack,
    settings_from_mapping,
)
from labelflip.attacks._result import AttackResult, finalize, finalize_type_i
from labelflip.attacks.carlini_wagner import CarliniWagnerL2Settings, carlini_wagner_l2
from labelflip.attacks.deepfool import DeepFoolSettings, deepfool
from labelflip.attacks.fgsm import FGSMSettings, fgsm
from labelflip.attacks.foolbox_adapter import FoolboxSettings, foolbox_attack
from labelflip.attacks.jma import JMASettings, jma
from labelflip.attacks.labelfool import LabelFoolSettings, labelfool
from labelflip.attacks.ml_cw import MLCarliniWagnerSettings, ml_carlini_wagner
from labelflip.attacks.pgd import PGDSettings, pgd
from labelflip.attacks.type_i import (
    LatentTypeISettings,
    TypeISettings,
    latent_type_i_attack,
    type_i_attack,
)

__all__ = [
    "ATTACKS",
    "AttackResult",
    "AttackSpec",
    "CarliniWagnerL2Settings",
    "DeepFoolSettings",
    "FGSMSettings",
    "FoolboxSettings",
    "JMASettings",
    "LatentTypeISettings",
    "LabelFoolSettings",
    "MLCarliniWagnerSettings",
    "PGDSettings",
    "TypeISettings",
    "attack_resources",
    "carlini_wagner_l2",
    "deepfool",
    "fgsm",
    "finalize",
    "finalize_type_i",
    "foolbox_attack",
    "get_attack",
    "jma",
    "labelfool",
    "latent_type_i_attack",
    "ml_carlini_wagner",
    "pgd",
    "run_attack",
    "settings_from_mapping",
    "type_i_attack",
]
