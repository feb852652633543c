"""The public building blocks of labelflip's gradient attacks, for code
outside the attack modules that composes its own inner maximisation
(adversarial training, e.g. TRADES) or draws like the attacks do (target
strategies): explicit-generator random draws, steepest-ascent directions and
the projections onto the L∞ and L2 balls. Their definitions live with the
attacks (:mod:`labelflip.attacks._common`)."""

from labelflip.attacks._common import (
    ce_gradient,
    generator_or_default,
    normal,
    project_l2,
    project_linf,
    random_start_l2,
    random_start_linf,
    steepest_direction,
    uniform,
)

__all__ = [
    "ce_gradient",
    "generator_or_default",
    "normal",
    "project_l2",
    "project_linf",
    "random_start_l2",
    "random_start_linf",
    "steepest_direction",
    "uniform",
]
