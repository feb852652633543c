"""The public building blocks of labelflip's gradient attacks, for code
outside the attack modules that composes its own inner maximisation
(adversarial training, e.g. TRADES) or draws like the attacks do (target
strategies): explicit-generator random draws, the check of class labels,
steepest-ascent directions and
the projections onto the L∞ and L2 balls; and the progress reports of long
attacks (``report_progress`` in an attack's loop, ``progress_part`` around
the inner attacks of a composite one, ``reporting_progress`` for a listener,
such as the runner's progress bar). Their definitions live with the attacks
(:mod:`labelflip.attacks._common`)."""

from labelflip.attacks._common import (
    ce_gradient,
    check_labels,
    generator_or_default,
    normal,
    progress_part,
    project_l2,
    project_linf,
    random_start_l2,
    random_start_linf,
    report_progress,
    reporting_progress,
    steepest_direction,
    uniform,
)

__all__ = [
    "ce_gradient",
    "check_labels",
    "generator_or_default",
    "normal",
    "progress_part",
    "project_l2",
    "project_linf",
    "random_start_l2",
    "random_start_linf",
    "report_progress",
    "reporting_progress",
    "steepest_direction",
    "uniform",
]
