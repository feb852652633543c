"""Comparing where two runs' adversarial examples land.

Given the flip matrices ``A`` and ``B`` of the same attack on two models (or
two runs of one model), these functions ask:

- does each true class land differently? :func:`landing_tests` tests, per
  true class, whether the landing distributions of the two rows are the same
  (:func:`homogeneity_test`: Pearson's chi-square test of homogeneity, or a
  permutation test where the counts are small), then corrects the p-values
  for the number of classes tested (:func:`adjust_pvalues`: Holm or
  Benjamini-Hochberg);
- are the same cells hot? :func:`flip_rate_correlation` correlates the
  off-diagonal flip rates of the two matrices;
- do the very same images land in the same class? :func:`shared_samples`
  aligns the samples both runs attacked (by dataset index) and
  :func:`landing_agreement` counts how often both runs send a sample to the
  same class, against the agreement expected by chance.

Pure numpy/scipy functions: counts and labels in, numbers and arrays out.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from labelflip.analysis import _validate
from labelflip.analysis.correlation import rank_correlation
from labelflip.analysis.flips import row_rates
from labelflip.errors import LabelflipError

CORRECTIONS = ("holm", "bh")
"""Multiple-testing corrections of :func:`adjust_pvalues`: ``holm`` (Holm 1979,
family-wise error rate) and ``bh`` (Benjamini & Hochberg 1995, false discovery
rate)."""

MIN_EXPECTED = 5.0
"""The chi-square test is used when every expected count of the table is at
least this (Cochran's rule of thumb); otherwise the permutation test."""

N_PERM = 9999


# ---------------------------------------------------------------- helpers


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise LabelflipError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise LabelflipError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


def _alpha(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise LabelflipError(f"alpha must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def _counts(values: ArrayLike, name: str) -> np.ndarray:
    v = _validate.vector(values, name)
    if np.any(v < 0) or np.any(v != np.round(v)):
        raise LabelflipError(f"{name} must hold counts (non-negative whole numbers)")
    return v


def _pearson_x2(top: np.ndarray, cols: np.ndarray, n_top: int) -> np.ndarray:
    """Pearson's X² of the 2 × m tables whose first rows are ``top`` (``(..., m)``)
    and whose column sums are ``cols``: ``sum (O - E)^2 / E`` over both rows,
    ``E = row sum * column sum / N``."""
    n = cols.sum()
    e_top = n_top * cols / n
    e_bot = (n - n_top) * cols / n
    bot = cols - top
    return ((top - e_top) ** 2 / e_top + (bot - e_bot) ** 2 / e_bot).sum(axis=-1)


# ---------------------------------------------------------------- corrections


def adjust_pvalues(p_values: ArrayLike, method: str = "holm") -> np.ndarray:
    """p-values adjusted for multiple testing; reject where ``adjusted <= alpha``.

    ``holm`` (Holm 1979, "A simple sequentially rejective multiple test
    procedure", step-down Bonferroni; controls the family-wise error rate
    under any dependence): with the ``m`` p-values sorted,
    ``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.

    ``bh`` (Benjamini & Hochberg 1995, step-up; controls the false discovery
    rate for independent or positively dependent tests):
    ``adj_(i) = min_{j >= i} min(1, m p_(j) / j)``.

    NaN entries (tests not done) stay NaN and do not count in ``m``.
    """
    if method not in CORRECTIONS:
        raise LabelflipError(
            f"unknown multiple-testing correction {method!r} (known: {', '.join(CORRECTIONS)})"
        )
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise LabelflipError(f"p_values must be 1-D, got shape {p.shape}")
    tested = ~np.isnan(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise LabelflipError("p_values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    q = p[tested]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adj = np.minimum.accumulate(np.minimum(1.0, m * ranked / np.arange(1, m + 1))[::-1])[::-1]
    back = np.empty(m)
    back[order] = adj
    out[tested] = back
    return out


# ---------------------------------------------------------------- one class


@dataclass(frozen=True)
class HomogeneityResult:
    """A test of ``H0``: two count vectors come from one distribution.

    ``method``: ``"chi2"`` (Pearson's chi-square, ``df`` degrees of freedom),
    ``"permutation"`` (the same statistic, p-value from permutations; ``df``
    as for chi2, for reference), ``"single-class"`` (both land in one and the
    same class only: nothing differs, ``p = 1``) or ``"untested"`` (one side
    has no counts: ``statistic`` and ``p_value`` NaN).
    """

    statistic: float
    df: int
    p_value: float
    method: str


def homogeneity_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    min_expected: float = MIN_EXPECTED,
    n_perm: int = N_PERM,
    seed: int = 0,
) -> HomogeneityResult:
    """Do the counts ``a`` and ``b`` (e.g. where one true class's adversarial
    examples landed under two models) follow the same distribution?

    The ``2 × m`` contingency table has rows ``a`` and ``b`` over the ``m``
    categories that either uses (all-zero columns carry no information and
    are dropped). Its statistic is Pearson's
    ``X² = sum (O - E)^2 / E``, ``E = row sum × column sum / N``
    (no continuity correction), with ``df = m - 1``.

    Rule: when every expected count is at least ``min_expected`` (Cochran's
    rule, 5 by default), ``p = chi2.sf(X², m - 1)``
    (``scipy.stats.chi2_contingency(table, correction=False)``). Otherwise
    the chi-square approximation is poor and the p-value comes from a
    permutation test: shuffling which of the ``N`` pooled samples belong to
    ``a`` leaves the column sums fixed and makes ``a``'s counts
    multivariate-hypergeometric; ``n_perm`` such tables are drawn
    (``numpy.random.Generator(PCG64(seed))``) and
    ``p = (1 + #{X*² >= X²}) / (1 + n_perm)`` (Phipson & Smyth 2010: never 0).
    """
    x = _counts(a, "a")
    y = _counts(b, "b")
    _validate.same_length(a=x, b=y)
    n_perm = _positive_int(n_perm, "n_perm")
    seed = _seed(seed)
    if not isinstance(min_expected, numbers.Real) or min_expected < 0:
        raise LabelflipError(f"min_expected must be a non-negative number, got {min_expected!r}")
    if x.sum() == 0 or y.sum() == 0:
        return HomogeneityResult(float("nan"), 0, float("nan"), "untested")
    used = (x + y) > 0
    x, y = x[used], y[used]
    m = int(used.sum())
    if m == 1:
        return HomogeneityResult(0.0, 0, 1.0, "single-class")
    cols = x + y
    n_x = int(x.sum())
    expected_min = min(n_x, int(y.sum())) * cols.min() / cols.sum()
    if expected_min >= min_expected:
        res = stats.chi2_contingency(np.stack([x, y]), correction=False)
        return HomogeneityResult(float(res.statistic), int(res.dof), float(res.pvalue), "chi2")
    observed = float(_pearson_x2(x, cols, n_x))
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.multivariate_hypergeometric(cols.astype(np.int64), n_x, size=n_perm)
    null = _pearson_x2(draws.astype(np.float64), cols, n_x)
    # a tolerance so that tables as extreme as the observed one are not lost to rounding
    hits = int(np.sum(null >= observed - 1e-9 * max(1.0, observed)))
    return HomogeneityResult(observed, m - 1, (1 + hits) / (1 + n_perm), "permutation")


# ---------------------------------------------------------------- all classes


@dataclass(frozen=True)
class LandingTests:
    """Per-true-class tests of whether two flip matrices land alike.

    Arrays have one entry per true class: ``n_a``/``n_b`` the counts tested
    (off-diagonal row sums, or whole rows with ``include_diagonal``),
    ``statistic``, ``df``, ``p_value``, ``p_adjusted`` (NaN where untested)
    and ``differs`` (``p_adjusted <= alpha``); ``method`` as in
    :class:`HomogeneityResult`.
    """

    n_a: np.ndarray
    n_b: np.ndarray
    statistic: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    p_adjusted: np.ndarray
    method: tuple[str, ...]
    differs: np.ndarray
    correction: str
    alpha: float
    include_diagonal: bool

    @property
    def n_tested(self) -> int:
        """Classes with a test (both sides have counts)."""
        return int(np.sum(~np.isnan(self.p_value)))

    @property
    def n_differ(self) -> int:
        """Classes whose landing distributions differ after the correction."""
        return int(self.differs.sum())

    @property
    def min_p_adjusted(self) -> float:
        """The smallest adjusted p-value (NaN when nothing was tested): the
        p-value of "some class lands differently" (Holm: Bonferroni's global
        test; BH: Simes' global test)."""
        return float(np.nanmin(self.p_adjusted)) if self.n_tested else float("nan")


def landing_tests(
    A: ArrayLike,
    B: ArrayLike,
    *,
    alpha: float = 0.05,
    correction: str = "holm",
    include_diagonal: bool = False,
    min_expected: float = MIN_EXPECTED,
    n_perm: int = N_PERM,
    seed: int = 0,
) -> LandingTests:
    """Per true class ``i``, does row ``i`` of ``A`` land like row ``i`` of ``B``?

    By default only the off-diagonal cells are compared: the question is
    *where the flipped examples land*, not how many flip (a robust model
    flips fewer; that alone would make every row differ). With
    ``include_diagonal`` the failed attacks count as one more category.
    Each class is tested by :func:`homogeneity_test` (chi-square, or a
    permutation test with the seed ``(seed, i)`` where counts are small);
    a class without counts on either side is untested. The p-values of the
    tested classes are adjusted by ``correction`` (:func:`adjust_pvalues`,
    Holm by default) and a class *differs* when its adjusted p-value is at
    most ``alpha``.
    """
    a = _validate.square(A, "A")
    b = _validate.square(B, "B")
    if a.shape != b.shape:
        raise LabelflipError(f"A and B differ in shape: {a.shape} vs {b.shape}")
    for name, m in (("A", a), ("B", b)):
        if np.any(m != np.round(m)):
            raise LabelflipError(f"{name} must hold counts (whole numbers), not rates")
    alpha = _alpha(alpha)
    seed = _seed(seed)
    if correction not in CORRECTIONS:
        raise LabelflipError(
            f"unknown multiple-testing correction {correction!r} (known: {', '.join(CORRECTIONS)})"
        )
    k = a.shape[0]
    keep = np.ones((k, k), dtype=bool) if include_diagonal else ~np.eye(k, dtype=bool)
    results = []
    for i in range(k):
        results.append(
            homogeneity_test(
                a[i][keep[i]],
                b[i][keep[i]],
                min_expected=min_expected,
                n_perm=n_perm,
                seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
            )
        )
    p = np.array([r.p_value for r in results])
    adjusted = adjust_pvalues(p, correction)
    return LandingTests(
        n_a=(a * keep).sum(axis=1).astype(np.int64),
        n_b=(b * keep).sum(axis=1).astype(np.int64),
        statistic=np.array([r.statistic for r in results]),
        df=np.array([r.df for r in results], dtype=np.int64),
        p_value=p,
        p_adjusted=adjusted,
        method=tuple(r.method for r in results),
        differs=np.nan_to_num(adjusted, nan=np.inf) <= alpha,
        correction=correction,
        alpha=alpha,
        include_diagonal=bool(include_diagonal),
    )


# ---------------------------------------------------------------- correlation


@dataclass(frozen=True)
class RateCorrelation:
    """Pearson's ``r`` and Spearman's ``rho`` between the off-diagonal flip
    rates of two matrices, over ``n_cells`` cells (NaN when fewer than 2
    cells or a side is constant)."""

    pearson: float
    spearman: float
    n_cells: int


def flip_rate_correlation(A: ArrayLike, B: ArrayLike) -> RateCorrelation:
    """Correlation of the off-diagonal flip rates of ``A`` and ``B``.

    Rates are :func:`~labelflip.analysis.row_rates`, ``R[i, j] = A[i, j] /
    sum_j A[i, j]`` (the share of class ``i`` sent to ``j``); the cells
    ``i != j`` of the classes with samples in both matrices are paired and
    correlated (Pearson; Spearman with average ranks). ``r`` near 1: the same
    class pairs flip, in the same proportions, under both. No p-value is
    given: the cells of a row share their samples and are not independent.
    """
    a = _validate.square(A, "A")
    b = _validate.square(B, "B")
    if a.shape != b.shape:
        raise LabelflipError(f"A and B differ in shape: {a.shape} vs {b.shape}")
    rows = (a.sum(axis=1) > 0) & (b.sum(axis=1) > 0)
    cells = rows[:, None] & ~np.eye(a.shape[0], dtype=bool)
    x, y = row_rates(a)[cells], row_rates(b)[cells]
    nan = float("nan")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return RateCorrelation(nan, nan, int(x.size))
    pearson = float(np.corrcoef(x, y)[0, 1])
    return RateCorrelation(pearson, rank_correlation(x, y).rho, int(x.size))


# ---------------------------------------------------------------- shared samples


def shared_samples(index_a: ArrayLike, index_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(pos_a, pos_b)`` of the dataset indices both runs attacked,
    ordered by index: ``index_a[pos_a] == index_b[pos_b]``. An index listed
    twice in one run is an error (it would be counted twice)."""
    ia = np.asarray(index_a)
    ib = np.asarray(index_b)
    for name, v in (("index_a", ia), ("index_b", ib)):
        if v.ndim != 1 or (v.size and v.dtype.kind not in "iu"):
            raise LabelflipError(f"{name} must be a 1-D integer array of dataset indices")
        if np.unique(v).size != v.size:
            raise LabelflipError(f"{name} lists a dataset index more than once")
    _, pos_a, pos_b = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
    return pos_a.astype(np.int64), pos_b.astype(np.int64)


@dataclass(frozen=True)
class Agreement:
    """How often two runs send the same sample to the same class.

    ``n`` samples compared, ``n_same`` of them landed in the same class under
    both; ``rate = n_same / n``; ``chance``: the rate expected if, within each
    true class, the two runs landed independently with their observed
    landing shares; ``kappa = (rate - chance) / (1 - chance)`` (Cohen's kappa
    with a chance level per true class). NaN where not defined (``n = 0``;
    ``kappa`` when ``chance = 1``).
    """

    n: int
    n_same: int
    rate: float
    chance: float
    kappa: float


def landing_agreement(
    true: ArrayLike, landed_a: ArrayLike, landed_b: ArrayLike, num_classes: int
) -> Agreement:
    """Agreement of two runs' adversarial classes on the same samples.

    ``true``, ``landed_a`` and ``landed_b`` are aligned (one entry per sample;
    see :func:`shared_samples`), typically the samples both runs flipped.
    With ``a_ij`` (``b_ij``) the samples of true class ``i`` that run A (B)
    sent to ``j`` and ``n_i`` those of class ``i``,

        rate = #{landed_a == landed_b} / n,
        chance = (1 / n) sum_i sum_j a_ij b_ij / n_i,
        kappa = (rate - chance) / (1 - chance).
    """
    k = _validate.num_classes_arg(num_classes)
    t = _validate.labels(true, "true", k)
    la = _validate.labels(landed_a, "landed_a", k)
    lb = _validate.labels(landed_b, "landed_b", k)
    _validate.same_length(true=t, landed_a=la, landed_b=lb)
    n = int(t.size)
    nan = float("nan")
    if n == 0:
        return Agreement(0, 0, nan, nan, nan)
    same = int(np.sum(la == lb))
    a = np.bincount(t * k + la, minlength=k * k).reshape(k, k).astype(np.float64)
    b = np.bincount(t * k + lb, minlength=k * k).reshape(k, k).astype(np.float64)
    n_i = np.bincount(t, minlength=k).astype(np.float64)
    per_class = np.divide((a * b).sum(axis=1), n_i, out=np.zeros(k), where=n_i > 0)
    chance = float(per_class.sum() / n)
    rate = same / n
    kappa = (rate - chance) / (1 - chance) if chance < 1 else nan
    return Agreement(n, same, rate, chance, float(kappa))
