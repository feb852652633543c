"""ML-C&W: Carlini & Wagner L2 with one hinge term per network output, batched.

Song, Jin, Huang & Hu, "Multi-label adversarial perturbations" (IEEE ICDM
2018), as described in the JMA paper (Tondi et al., §IV-B): the targeted C&W
L2 problem (Carlini & Wagner, "Towards Evaluating the Robustness of Neural
Networks", IEEE S&P 2017, §V-A; JMA eq. 4) with the two-logit objective
replaced by a hinge term on every output node::

    min_w  ||δ(w)||_2^2 + c · Σ_j max(0, γ − s_tj · z_j(x + δ(w)))

where ``z`` are the network's raw outputs (:meth:`Classifier.outputs`, the
logits before sigmoid/tanh/softmax), ``s_t ∈ {−1, +1}^n`` the target code
of the target decision ``t`` (:meth:`OutputEncoding.code`) and ``γ >= 0``
the confidence. ``δ(w)`` is C&W's change of variables ``x + δ(w) = a + b ·
tanh(w)`` (the box ``[lo, hi]`` mapped to ``(-1, 1)``, §IV-B of C&W).

Target codes per encoding (:mod:`labelflip.models.encoding`):

- ``multilabel``: the target label vector as ±1 (present = +1); the hinge
  terms vanish exactly when every label is decided as wanted with margin
  ``γ``. This is Song et al.'s attack.
- ``ecoc``: the target codeword ``c_t``; JMA §IV-B notes that ML-C&W also
  attacks ECOC networks (Tables III–V), though it pushes every bit to the
  target codeword where decoding would forgive some wrong bits.
- ``onehot``: ``2·e_t − 1`` (the identity codebook in ±1 form): the target
  logit is pushed above ``γ`` and every other logit below ``−γ``. This is a
  valid but weaker objective than C&W's ``f6`` on softmax models (logits are
  shift-invariant, so their signs carry no meaning of their own); it is
  allowed so that one attack runs on every encoding, for comparisons.

The optimisation is the one of ``cw-l2``
(:func:`~labelflip.attacks.carlini_wagner.tanh_l2_search`): Adam restarted
at every binary-search round, a per-sample binary search over ``c``
(``initial_const``, ×10 until an adversarial is found, then bisection; a last
round at the upper bound when ``binary_search_steps >= 10``), per-sample
abort early, the smallest-L2 adversarial over all steps and constants kept
(the input itself where none is found). Defaults are cw-l2's (Foolbox 3's);
JMA's experiments use ``initial_const=0.01``, ``binary_search_steps=10``,
``steps=1000``.

During the search a point counts as adversarial when the model's decision
equals the target and, for ``γ > 0``, every output clears the margin
(``min_j s_tj · z_j >= γ``, where the hinge sum is zero). With ``γ = 0`` the
decision alone counts, so an ECOC point decoded as the target is kept even if
some bits still disagree with ``c_t``. As for every attack, the returned
``success`` is decided afresh by :func:`~labelflip.attacks._result.finalize`:
decision == target (the whole label vector for multi-label models).

Targeted only: ML-C&W needs a target code per sample (see
:mod:`labelflip.targets`: ``random`` for every encoding, ``flip-bits`` for
multi-label models). Pass counting as in ``cw-l2``: 1 forward for the initial
check, then 1 forward + 1 backward per Adam step the sample takes;
``iterations`` sums the Adam steps over the binary-search rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labelflip.attacks._common import prepare_inputs
from labelflip.attacks._registry import register_attack
from labelflip.attacks._result import AttackResult, finalize_counts
from labelflip.attacks.carlini_wagner import CarliniWagnerL2Settings, tanh_l2_search
from labelflip.errors import LabelflipError
from labelflip.models.classifier import Classifier


@dataclass(frozen=True)
class MLCarliniWagnerSettings(CarliniWagnerL2Settings):
    """Settings of :func:`ml_carlini_wagner`: cw-l2's, with its
    Foolbox-compatible defaults; ``confidence`` is the hinge margin ``γ``."""


def hinge_terms(z: torch.Tensor, code: torch.Tensor, gamma: float) -> torch.Tensor:
    """ML-C&W's attack term per sample: ``Σ_j max(0, γ − s_j · z_j)`` (JMA
    §IV-B) for raw outputs ``z`` (N, n) and ±1 target codes ``code`` (N, n)."""
    return (gamma - code * z).clamp(min=0).sum(1)


@register_attack(
    "ml-cw",
    MLCarliniWagnerSettings,
    "ML-C&W: C&W L2 with a hinge per output on the target code (multi-label, ECOC, "
    "one-hot), Song et al. 2018 (JMA paper IV-B)",
    default_target="random",
    encodings=("onehot", "ecoc", "multilabel"),
)
def ml_carlini_wagner(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    s: MLCarliniWagnerSettings,
    *,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """ML-C&W (JMA §IV-B; Song et al. 2018) on any output encoding: C&W L2
    with the hinge sum ``Σ_j max(0, γ − s_tj z_j)`` on the raw outputs.

    ``target`` is required: target decisions (class indices; label-vector
    bitmasks for multi-label models). ``y`` are the true decisions in the same
    form. Deterministic; ``generator`` is accepted for a uniform signature
    and unused. ``success`` is ``adv_pred == target``, decided by
    :func:`~labelflip.attacks._result.finalize`.
    """
    if target is None:
        raise LabelflipError(
            "ml-cw is a targeted attack and needs target decisions; choose them with "
            "labelflip.targets.choose_targets('random' or 'flip-bits', logits, encoding=...)"
        )
    x0, y, t = prepare_inputs(clf, x, y, target, generator, multilabel=True)
    assert t is not None
    encoding = clf.encoding
    codes = encoding.code(t)
    gamma = float(s.confidence)

    def objective(xb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = clf.outputs(xb)
        code = codes[idx].to(dtype=z.dtype)
        term = hinge_terms(z, code, gamma)
        z_d = z.detach()
        adv = encoding.decode(encoding.scores(z_d)) == t[idx]
        if gamma > 0:
            adv &= (code * z_d).amin(1) >= gamma
        return term, adv

    best_adv, iterations, forwards, backwards = tanh_l2_search(clf, x0, objective, s)
    return finalize_counts(clf, x0, y, best_adv, t, (iterations, forwards, backwards))
