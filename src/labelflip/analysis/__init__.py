"""Analysis: pure functions over label arrays (numpy in, numbers and arrays out).

Nothing here knows about models or torch: the inputs are true labels,
(adversarial) predictions, success flags, or a flip matrix built from them
(or, for Type I attacks, a label-stay matrix: :mod:`.label_stay`), and a
detector's score vectors (:mod:`.detection`). :mod:`.compare` sets the flip
matrices and landings of two runs side by side; :mod:`.boundary` reads a
boundary profile (per-sample distances to every class's boundary).
"""

from labelflip.analysis.attractors import (
    attractor_summary,
    landing_shares,
    normalized_entropy,
    top_attractor,
)
from labelflip.analysis.boundary import (
    boundary_distance_correlation,
    boundary_margin,
    class_boundary_matrix,
    lands_at_nearest,
    nearest_boundary,
    nearest_landing_matrix,
    nearest_landing_rate,
)
from labelflip.analysis.compare import (
    Agreement,
    HomogeneityResult,
    LandingTests,
    RateCorrelation,
    adjust_pvalues,
    flip_rate_correlation,
    homogeneity_test,
    landing_agreement,
    landing_tests,
    shared_samples,
)
from labelflip.analysis.correlation import (
    SpearmanResult,
    class_distribution,
    flip_distance_correlation,
    rank_correlation,
)
from labelflip.analysis.counts import confusion_matrix, per_class_accuracy
from labelflip.analysis.detection import calibrate_threshold, detection_rate
from labelflip.analysis.flips import flip_matrix, row_rates, top_flips
from labelflip.analysis.groups import GroupShare, quasi_independence, within_group_flips
from labelflip.analysis.label_stay import (
    TypeIRates,
    label_stay_matrix,
    type_i_rates,
    type_i_success,
)
from labelflip.analysis.labelspace import (
    attack_rate,
    flip_distances,
    mean_flip_distance,
    mean_squared_perturbation,
)
from labelflip.analysis.symmetry import BowkerResult, bowker_test, symmetry_ci, symmetry_score

__all__ = [
    "Agreement",
    "BowkerResult",
    "GroupShare",
    "HomogeneityResult",
    "LandingTests",
    "RateCorrelation",
    "SpearmanResult",
    "TypeIRates",
    "adjust_pvalues",
    "attack_rate",
    "attractor_summary",
    "boundary_distance_correlation",
    "boundary_margin",
    "bowker_test",
    "calibrate_threshold",
    "class_boundary_matrix",
    "class_distribution",
    "confusion_matrix",
    "detection_rate",
    "flip_distance_correlation",
    "flip_distances",
    "flip_matrix",
    "flip_rate_correlation",
    "homogeneity_test",
    "label_stay_matrix",
    "landing_agreement",
    "landing_shares",
    "landing_tests",
    "lands_at_nearest",
    "mean_flip_distance",
    "mean_squared_perturbation",
    "nearest_boundary",
    "nearest_landing_matrix",
    "nearest_landing_rate",
    "normalized_entropy",
    "per_class_accuracy",
    "quasi_independence",
    "rank_correlation",
    "row_rates",
    "shared_samples",
    "symmetry_ci",
    "symmetry_score",
    "top_attractor",
    "top_flips",
    "type_i_rates",
    "type_i_success",
    "within_group_flips",
]
