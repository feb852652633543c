"""Detectors of adversarial inputs: given a classifier and inputs, a score per
input (higher = more likely adversarial), a threshold and detection rates.

Feature squeezing (Xu, Evans & Qi, NDSS 2018), the detector Tang et al. use
to show that Type I examples pass defences built for Type II attacks
("Adversarial Attack Type I", §IV-C):

>>> scores = squeeze_scores(clf, x_clean, distance="l2")        # doctest: +SKIP
>>> zeta = calibrate_threshold(scores, fpr=0.05)                 # doctest: +SKIP
>>> detection_rate(squeeze_scores(clf, x_adv, distance="l2"), zeta)  # doctest: +SKIP
"""

from labelflip.detect.squeeze import (
    DEFAULT_SQUEEZERS,
    DISTANCES,
    SQUEEZERS,
    BitDepthSettings,
    MedianSettings,
    SqueezerSpec,
    bit_depth,
    calibrate_threshold,
    detection_rate,
    get_squeezer,
    median_filter,
    parse_squeezer,
    register_squeezer,
    squeeze_scores,
)

__all__ = [
    "DEFAULT_SQUEEZERS",
    "DISTANCES",
    "SQUEEZERS",
    "BitDepthSettings",
    "MedianSettings",
    "SqueezerSpec",
    "bit_depth",
    "calibrate_threshold",
    "detection_rate",
    "get_squeezer",
    "median_filter",
    "parse_squeezer",
    "register_squeezer",
    "squeeze_scores",
]
