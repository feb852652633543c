"""Comparing runs: the statistics of labelflip.analysis.compare on hand-computed
examples, compare() and the page on hand-made run stores, two toy runs on
the built-in digits dataset, and the CLI's one-line errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from labelflip import analysis
from labelflip.analysis import (
    adjust_pvalues,
    flip_rate_correlation,
    homogeneity_test,
    landing_agreement,
    landing_tests,
    shared_samples,
)
from labelflip.cli import main
from labelflip.errors import LabelflipError
from labelflip.report import summarize
from labelflip.report.compare import CSV_COLUMNS, compare, compare_runs, default_out
from labelflip.store import Job, RunStore

# ---------------------------------------------------------------- homogeneity


def test_identical_counts_are_not_different():
    # chi-square branch (all expected counts 20 >= 5) and permutation branch (small)
    big = homogeneity_test([40, 20, 20], [40, 20, 20])
    assert big.method == "chi2" and big.statistic == 0 and big.p_value == pytest.approx(1)
    small = homogeneity_test([2, 1, 0], [2, 1, 0])
    assert small.method == "permutation"
    assert small.statistic == 0 and small.p_value == 1  # every permuted table is as extreme
    assert small.df == 1  # the all-zero column is dropped: 2 x 2


def test_chi_square_hand_computed():
    # [[30, 10], [10, 30]]: E = 20 everywhere, X^2 = 4 * 10^2 / 20 = 20 on 1 df
    res = homogeneity_test([30, 10], [10, 30])
    assert res.method == "chi2"
    assert res.statistic == pytest.approx(20.0)
    assert res.df == 1
    assert res.p_value == pytest.approx(stats.chi2.sf(20.0, 1))
    assert res.p_value == pytest.approx(7.744216e-6, rel=1e-5)


def test_permutation_hand_computed():
    # a = [3, 0], b = [0, 3]: pooled columns [3, 3]. Under the permutation null,
    # a's first count k is hypergeometric: P(k) = C(3,k) C(3,3-k) / C(6,3)
    # = 1/20, 9/20, 9/20, 1/20 for k = 0..3. X^2 = 6 for k in {0, 3} and
    # 2/3 for k in {1, 2}, so the exact p-value is 2/20 = 0.1.
    res = homogeneity_test([3, 0], [0, 3], n_perm=19999, seed=1)
    assert res.method == "permutation"
    assert res.statistic == pytest.approx(6.0)
    assert res.p_value == pytest.approx(0.1, abs=0.01)
    # the seed makes it reproducible; the p-value is never 0
    assert homogeneity_test([3, 0], [0, 3], n_perm=19999, seed=1) == res
    assert homogeneity_test([9, 0], [0, 9], n_perm=99).p_value >= 1 / 100


def test_clearly_different_counts_differ():
    res = homogeneity_test([50, 0, 0], [0, 0, 50])
    assert res.method == "chi2" and res.p_value < 1e-20
    res = homogeneity_test([6, 0, 0], [0, 0, 6])  # small counts: permutation
    assert res.method == "permutation" and res.p_value < 0.01  # exact: 2 / C(12, 6) = 0.002


def test_untested_and_single_class():
    res = homogeneity_test([0, 0, 0], [3, 1, 0])
    assert res.method == "untested" and math.isnan(res.p_value) and math.isnan(res.statistic)
    res = homogeneity_test([0, 4, 0], [0, 9, 0])  # both land in the same single class
    assert res.method == "single-class" and res.p_value == 1 and res.statistic == 0


def test_homogeneity_refuses_bad_input():
    with pytest.raises(LabelflipError, match="counts"):
        homogeneity_test([1.5, 2], [1, 2])
    with pytest.raises(LabelflipError, match="counts"):
        homogeneity_test([-1, 2], [1, 2])
    with pytest.raises(LabelflipError, match="differ in length"):
        homogeneity_test([1, 2, 3], [1, 2])
    with pytest.raises(LabelflipError, match="n_perm"):
        homogeneity_test([1, 2], [2, 1], n_perm=0)


# ---------------------------------------------------------------- corrections


def test_holm_hand_worked():
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005, 0.01, 0.03, 0.04,
    # times (4, 3, 2, 1): 0.02, 0.03, 0.06, 0.04; running max: 0.02, 0.03,
    # 0.06, 0.06. Back in the original order:
    adj = adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm")
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert (adj <= 0.05).tolist() == [True, False, False, True]


def test_benjamini_hochberg_hand_worked():
    # sorted p times m / rank: 0.005*4/1, 0.01*4/2, 0.03*4/3, 0.04*4/4
    # = 0.02, 0.02, 0.04, 0.04; running min from the top leaves them as they are.
    p = [0.01, 0.04, 0.03, 0.005]
    adj = adjust_pvalues(p, "bh")
    np.testing.assert_allclose(adj, [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adj, stats.false_discovery_control(p, method="bh"))
    assert (adj <= 0.05).all()  # BH rejects all four where Holm rejects two


def test_corrections_skip_untested_and_cap_at_one():
    adj = adjust_pvalues([0.5, math.nan, 0.9], "holm")  # m = 2, not 3
    assert math.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [1.0, 1.0])
    np.testing.assert_allclose(adjust_pvalues([0.02, math.nan, 0.04], "holm")[[0, 2]], [0.04, 0.04])
    assert np.isnan(adjust_pvalues([math.nan, math.nan])).all()
    with pytest.raises(LabelflipError, match="unknown multiple-testing correction"):
        adjust_pvalues([0.1], "bonf")
    with pytest.raises(LabelflipError, match=r"\[0, 1\]"):
        adjust_pvalues([1.5])


# ---------------------------------------------------------------- per-class landing tests


# true class 0 lands in 1 under A and in 2 under B; class 1 lands alike;
# class 2 has no flips under A (untested).
A = np.array([[10, 40, 0], [30, 20, 0], [0, 0, 9]])
B = np.array([[60, 0, 40], [3, 2, 0], [5, 4, 1]])


def test_landing_tests_per_class():
    t = landing_tests(A, B)
    assert t.n_a.tolist() == [40, 30, 0] and t.n_b.tolist() == [40, 3, 9]
    assert t.method == ("chi2", "single-class", "untested")
    assert t.statistic[0] == pytest.approx(80.0)  # [[40, 0], [0, 40]]: 4 * 20^2 / 20
    assert t.n_tested == 2
    np.testing.assert_allclose(t.p_adjusted[:2], [min(1, 2 * stats.chi2.sf(80, 1)), 1.0])
    assert t.differs.tolist() == [True, False, False]
    assert t.n_differ == 1 and t.min_p_adjusted == t.p_adjusted[0]


def test_landing_tests_identical_matrices_do_not_differ():
    t = landing_tests(A, A)
    assert t.n_differ == 0
    assert np.all(t.p_value[~np.isnan(t.p_value)] == 1)


def test_fewer_flips_alone_is_not_a_difference():
    # B flips a tenth as often as A but sends its flips to the same classes in
    # the same proportions: where they land does not differ; the whole rows do.
    a = np.array([[0, 60, 40], [50, 0, 50], [90, 10, 0]])
    b = np.array([[90, 6, 4], [5, 90, 5], [9, 1, 90]])
    assert landing_tests(a, b).n_differ == 0
    whole = landing_tests(a, b, include_diagonal=True)
    assert whole.include_diagonal and whole.n_differ == 3


def test_landing_tests_hold_their_level_under_the_null():
    # both runs drawn from the same landing distribution: Holm keeps the chance
    # of any class "differing" near or below alpha (FWER), small counts included
    rng = np.random.default_rng(0)
    k, reps, false = 4, 200, 0
    probs = rng.dirichlet(np.ones(k), size=k)
    for _ in range(reps):
        n = rng.integers(3, 40, size=k)
        a = np.stack([rng.multinomial(n[i], probs[i]) for i in range(k)])
        b = np.stack([rng.multinomial(n[i], probs[i]) for i in range(k)])
        false += landing_tests(a, b, n_perm=499).n_differ > 0
    assert false / reps <= 0.09  # alpha 0.05; binomial sd over 200 reps about 0.015


def test_landing_tests_refuse_bad_input():
    with pytest.raises(LabelflipError, match="differ in shape"):
        landing_tests(np.eye(3), np.eye(2))
    with pytest.raises(LabelflipError, match="counts"):
        landing_tests(np.eye(2) / 2, np.eye(2))
    with pytest.raises(LabelflipError, match="alpha"):
        landing_tests(np.eye(2), np.eye(2), alpha=1.5)
    with pytest.raises(LabelflipError, match="correction"):
        landing_tests(np.eye(2), np.eye(2), correction="none")


# ---------------------------------------------------------------- correlation


def test_flip_rate_correlation_hand_computed():
    # rows of 20; off-diagonal counts in row-major order x = 1..6 and
    # y = (2, 1, 4, 3, 6, 5). Deviations from 3.5: dx = (-2.5, -1.5, -0.5, 0.5,
    # 1.5, 2.5), dy = (-1.5, -2.5, 0.5, -0.5, 2.5, 1.5): sum dx dy = 14.5,
    # sum dx^2 = sum dy^2 = 17.5, r = 14.5 / 17.5. The ranks equal the values:
    # rho = 1 - 6 * 6 / (6 * 35) = 1 - 36 / 210, the same number.
    a = np.array([[17, 1, 2], [3, 13, 4], [5, 6, 9]])
    b = np.array([[17, 2, 1], [4, 13, 3], [6, 5, 9]])
    r = flip_rate_correlation(a, b)
    assert r.n_cells == 6
    assert r.pearson == pytest.approx(14.5 / 17.5)
    assert r.spearman == pytest.approx(1 - 36 / 210)
    same = flip_rate_correlation(a, 3 * a)  # rates are per row: scaling changes nothing
    assert same.pearson == pytest.approx(1) and same.spearman == pytest.approx(1)


def test_flip_rate_correlation_drops_empty_rows_and_constant_sides():
    a = np.array([[17, 1, 2], [0, 0, 0], [5, 6, 9]])
    b = np.array([[17, 2, 1], [4, 13, 3], [6, 5, 9]])
    assert flip_rate_correlation(a, b).n_cells == 4  # class 1 has no samples under A
    flat = flip_rate_correlation(np.eye(3) * 5, b)  # no flips at all under A
    assert math.isnan(flat.pearson) and math.isnan(flat.spearman)


# ---------------------------------------------------------------- shared samples


def test_shared_samples_align_by_dataset_index():
    pa, pb = shared_samples([7, 3, 9, 1], [1, 4, 9, 7])
    assert pa.tolist() == [3, 0, 2] and pb.tolist() == [0, 3, 2]  # indices 1, 7, 9
    assert shared_samples([1, 2], [3, 4])[0].size == 0
    with pytest.raises(LabelflipError, match="more than once"):
        shared_samples([1, 1], [1])


def test_landing_agreement_hand_computed():
    true = [0, 0, 0, 1, 1, 2]
    la = [1, 1, 2, 0, 2, 0]
    lb = [1, 2, 2, 0, 0, 1]
    g = landing_agreement(true, la, lb, 3)
    # same class on samples 0, 2, 3: 3 of 6
    assert (g.n, g.n_same, g.rate) == (6, 3, 0.5)
    # chance: class 0 (n=3): A sends 2 to 1 and 1 to 2, B 1 to 1 and 2 to 2:
    # (2*1 + 1*2) / 3 = 4/3; class 1 (n=2): A 1 to 0, 1 to 2; B 2 to 0: 1*2/2 = 1;
    # class 2 (n=1): A to 0, B to 1: 0. chance = (4/3 + 1) / 6 = 7/18.
    assert g.chance == pytest.approx(7 / 18)
    assert g.kappa == pytest.approx((0.5 - 7 / 18) / (1 - 7 / 18))  # = 2/11
    assert g.kappa == pytest.approx(2 / 11)
    same = landing_agreement(true, la, la, 3)
    assert same.rate == 1 and same.kappa == pytest.approx(1)
    empty = landing_agreement([], [], [], 3)
    assert empty.n == 0 and math.isnan(empty.rate)


# ---------------------------------------------------------------- hand-made runs

NASTY = '<cat & "dog">'
NAMES = [NASTY, "bird", "fish $^$"]


def _job(job_id: str, attack: str, settings: dict, label: str = "") -> Job:
    return Job(
        job_id=job_id,
        attack=attack,
        settings=settings,
        seed=0,
        model_sha256="ab" * 32,
        versions={"labelflip": "0.1.0"},
        label=label or job_id,
    )


def _columns(index, true, clean, adv) -> dict[str, np.ndarray]:
    index, true, clean, adv = (np.asarray(v, dtype=np.int64) for v in (index, true, clean, adv))
    n = true.size
    return {
        "sample": np.arange(n),
        "index": index,
        "true": true,
        "clean_pred": clean,
        "adv_pred": adv,
        "target": np.full(n, -1),
        "success": adv != clean,
        "l0": np.ones(n, dtype=np.int64),
        "l1": np.ones(n),
        "l2": np.ones(n),
        "linf": np.ones(n),
        "iterations": np.ones(n, dtype=np.int64),
        "forwards": np.ones(n, dtype=np.int64),
        "backwards": np.ones(n, dtype=np.int64),
        "seconds": np.full(n, 0.01),
    }


def make_store(path: Path, name: str, jobs, *, names=NAMES, **meta) -> Path:
    """A run store with ``jobs``: (Job, index, true, clean, adv) tuples."""
    store = RunStore.create(
        path,
        meta={
            "name": name,
            "dataset": "toy",
            "split": "test",
            "class_names": list(names),
            "num_classes": len(names),
            "model": {"arch": "tiny", "sha256": "cd" * 32, "clean_accuracy": 0.9},
            **meta,
        },
    )
    for job, index, true, clean, adv in jobs:
        store.add_job(job)
        store.write_batch(job.job_id, _columns(index, true, clean, adv))
        store.mark_done(job.job_id)
    store.close()
    return path


# 30 samples, 10 per class, all classified correctly. Under the standard
# model "std" the PGD examples of class 0 go to class 1, under "robust" to
# class 2; classes 1 and 2 land alike; the attack fails more under "robust".
TRUE = np.repeat([0, 1, 2], 10)
STD_ADV = np.array([1] * 10 + [0] * 8 + [2] * 2 + [0] * 5 + [1] * 5)
ROB_ADV = np.array([2] * 6 + [0] * 4 + [0] * 6 + [1] * 4 + [0] * 3 + [1] * 3 + [2] * 4)
PGD = {"eps": 0.3, "norm": "linf", "steps": 10}


def make_pair(tmp: Path) -> tuple[Path, Path]:
    """Two hand-made runs ("std" and "robust <b>") over the same 30 samples:
    one matched PGD job, one matched FGSM job (the same landings under both),
    a DeepFool job only in "std", a PGD job with other settings only in
    "robust" and a Type I job in "std"."""
    index = np.arange(100, 130)
    std = make_store(
        tmp / "std",
        "std",
        [
            (_job("pgd-a", "pgd", PGD, "PGD ε=0.3"), index, TRUE, TRUE, STD_ADV),
            (_job("fgsm", "fgsm", {"eps": 0.1}), index, TRUE, TRUE, STD_ADV),
            (_job("deepfool", "deepfool", {}), index, TRUE, TRUE, STD_ADV),
            (_job("type-i", "type-i", {}), index, TRUE, TRUE, TRUE),
        ],
    )
    robust = make_store(
        tmp / "robust",
        "robust <b>",
        [
            # the same attack and settings under another job id: still matched
            (_job("pgd-b", "pgd", dict(reversed(PGD.items())), "PGD"), index, TRUE, TRUE, ROB_ADV),
            (_job("fgsm", "fgsm", {"eps": 0.1}), index, TRUE, TRUE, STD_ADV),
            (_job("pgd-eps1", "pgd", {**PGD, "eps": 1.0}), index, TRUE, TRUE, ROB_ADV),
        ],
    )
    return std, robust


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_pair(tmp_path_factory.mktemp("pair"))


def test_compare_matches_jobs_by_attack_and_settings(pair):
    c = compare(pair, n_boot=100)
    assert [r.name for r in c.runs] == ["std", "robust <b>"]
    assert [(j.attack, j.label) for j in c.jobs] == [("pgd", "PGD ε=0.3"), ("fgsm", "fgsm")]
    assert [s.job_id for s in c.jobs[0].sides] == ["pgd-a", "pgd-b"]
    reasons = {(c.runs[r].name, label): why for r, label, why in c.unmatched}
    assert reasons == {
        ("std", "deepfool"): "no other run has this job",
        ("std", "type-i"): "Type I job (label-stay matrix): not compared",
        ("robust <b>", "pgd-eps1"): "std has no such job",
    }


def test_compare_statistics_on_hand_made_runs(pair):
    c = compare(pair, n_boot=100)
    pgd, fgsm = c.jobs
    std, rob = pgd.sides
    a = [[0, 10, 0], [8, 0, 2], [5, 5, 0]]
    np.testing.assert_array_equal(std.flip_matrix, a)
    b = [[4, 0, 6], [6, 4, 0], [3, 3, 4]]
    np.testing.assert_array_equal(rob.flip_matrix, b)
    assert std.symmetry == analysis.symmetry_score(a)  # the report's functions, unchanged
    (p,) = pgd.pairs
    # class 0: [10, 0] vs [0, 6] differs; class 1: [8, 2] vs [6, 0] and class 2:
    # [5, 5] vs [3, 3] do not
    assert p.tests.differs.tolist() == [True, False, False]
    assert p.tests.method == ("permutation",) * 3  # expected counts below 5
    assert p.n_shared == 30
    # shared samples flipped under both: class 0: 6 (std to 1, robust to 2: none
    # agree); class 1: the 6 robust sends to 0 (std too: 6 agree); class 2: 6
    # (std: 20-24 to 0, 25-29 to 1; robust: 20-22 to 0, 23-25 to 1: 20, 21, 22
    # and 25 agree)
    g = p.agreement
    assert (g.n, g.n_same) == (18, 0 + 6 + 4)
    # the same landings (FGSM under both): nothing differs, r = 1, full agreement
    (q,) = fgsm.pairs
    assert q.tests.n_differ == 0
    assert q.correlation.pearson == pytest.approx(1)
    assert q.agreement.rate == 1 and q.agreement.kappa <= 1


def test_compare_runs_writes_page_csv_and_json(pair, tmp_path):
    page = compare_runs(pair, tmp_path / "cmp", n_boot=100)
    assert page == tmp_path / "cmp" / "compare.html"
    text = page.read_text(encoding="utf-8")
    assert NASTY not in text and "&lt;cat &amp; &quot;dog&quot;&gt;" in text
    assert "robust <b>" not in text and "robust &lt;b&gt;" in text
    assert "<script" not in text and "<link" not in text
    assert not re.search(r'src="(?!data:image/png;base64,)', text)  # nothing external
    assert text.count('src="data:image/png;base64,') == 2 * 3  # per job: matrices, bars, diff
    assert "Holm" in text and "permutation" in text
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open(encoding="utf-8")))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["job"], r["run_a"], r["run_b"]) for r in rows] == [
        ("PGD ε=0.3", "std", "robust <b>"),
        ("fgsm", "std", "robust <b>"),
    ]
    assert rows[0]["classes_differ"] == "1" and rows[0]["differing_classes"] == NASTY
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))
    assert data["class_names"] == NAMES
    job = data["jobs"][0]
    assert job["runs"][0]["flip_matrix"] == [[0, 10, 0], [8, 0, 2], [5, 5, 0]]
    classes = job["pairs"][0]["landing_tests"]["classes"]
    assert [c["differs"] for c in classes] == [True, False, False]
    assert {n["reason"] for n in data["not_compared"]} >= {"no other run has this job"}
    pngs = sorted(p.name for p in (tmp_path / "cmp").glob("*.png"))
    assert len(pngs) == 6


def test_three_runs_compare_each_with_the_first(pair, tmp_path):
    c = compare([*pair, pair[0]], n_boot=50)
    assert [r.name for r in c.runs] == ["std #1", "robust <b>", "std #3"]
    pgd = c.jobs[0]
    assert [(p.a, p.b) for p in pgd.pairs] == [(0, 1), (0, 2)]
    assert pgd.pairs[1].tests.n_differ == 0  # a run against itself


def test_compare_refuses_other_classes_multilabel_and_no_match(pair, tmp_path):
    index = np.arange(4)
    other = make_store(
        tmp_path / "other",
        "other",
        [(_job("fgsm", "fgsm", {"eps": 0.1}), index, [0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0])],
        names=["a", "b"],
    )
    with pytest.raises(LabelflipError, match="other classes"):
        compare([pair[0], other])
    ml = make_store(tmp_path / "ml", "ml", [], encoding={"kind": "multilabel"})
    with pytest.raises(LabelflipError, match="multi-label"):
        compare([pair[0], ml])
    lone = make_store(
        tmp_path / "lone", "lone", [(_job("fgsm-2", "fgsm", {"eps": 0.2}), *[[0, 1, 2]] * 4)]
    )
    with pytest.raises(LabelflipError, match="no job matches"):
        compare([pair[0], lone])
    with pytest.raises(LabelflipError, match="at least two"):
        compare([pair[0]])
    with pytest.raises(LabelflipError, match="does not exist"):
        compare([pair[0], tmp_path / "missing"])


def test_default_out_is_beside_the_first_run(pair):
    assert default_out(pair) == pair[0].resolve().parent / "compare-std-vs-robust"


# ---------------------------------------------------------------- CLI


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelflip: error: "), err
    return lines[0]


def test_cli_compare_writes_and_prints(pair, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", str(pair[0]), str(pair[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == f"comparison: {out / 'compare.html'}"
    assert f"1/3 classes differ ({NASTY})" in printed
    assert (out / "compare.csv").is_file() and (out / "compare.json").is_file()


def test_cli_compare_errors_are_one_line(pair, tmp_path, capsys):
    assert main(["compare", str(pair[0])]) == 1
    assert "at least two run directories" in _one_line_error(capsys)
    assert main(["compare", str(pair[0]), str(tmp_path / "nope")]) == 1
    assert "does not exist" in _one_line_error(capsys)
    assert main(["compare", str(pair[0]), str(tmp_path)]) == 1
    assert "not a labelflip run directory" in _one_line_error(capsys)
    lone = make_store(
        tmp_path / "lone", "lone", [(_job("fgsm-2", "fgsm", {"eps": 0.2}), *[[0, 1, 2]] * 4)]
    )
    assert main(["compare", str(pair[0]), str(lone)]) == 1
    assert "no job matches" in _one_line_error(capsys)
    assert main(["compare", *map(str, pair), "--alpha", "0"]) == 1
    assert "alpha" in _one_line_error(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compare", *map(str, pair), "--out", str(blocker)]) == 1
    assert "cannot create comparison directory" in _one_line_error(capsys)


# ---------------------------------------------------------------- two toy runs on digits

TOY = """
name = "{name}"
seed = {seed}
batch_size = 40
white_noise = 20

[data]
dataset = "digits"
samples = 80
selection = "random"

[model]
arch = "digits-cnn"
epochs = {epochs}

[similarity]
perceptual = false

{attacks}
"""
PGD_TOY = '[[attacks]]\nattack = "pgd"\nnorm = "linf"\neps = {eps}\nsteps = 10\n'
TOY_A = PGD_TOY.format(eps="[0.1, 0.3]") + '\n[[attacks]]\nattack = "deepfool"\n'
TOY_B = PGD_TOY.format(eps="0.3") + '\n[[attacks]]\nattack = "deepfool"\n'
TOY_B += '\n[[attacks]]\nattack = "fgsm"\neps = 0.1\n'


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """Two quick runs on digits: a 1-epoch and a 3-epoch digits-cnn (two
    models), seeds 0 and 1 (overlapping sample selections)."""
    tmp = tmp_path_factory.mktemp("toy")
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABELFLIP_CACHE", str(tmp / "cache"))
        mp.setenv("LABELFLIP_OFFLINE", "1")
        for name, seed, epochs, attacks in (("toy-a", 0, 1, TOY_A), ("toy-b", 1, 3, TOY_B)):
            cfg = tmp / f"{name}.toml"
            cfg.write_text(TOY.format(name=name, seed=seed, epochs=epochs, attacks=attacks))
            out = tmp / name
            assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--no-report"]) == 0
            runs.append(out)
    return runs[0], runs[1]


def _nan(value):
    return math.nan if value is None else value


def test_toy_runs_compare_like_their_reports(toy_runs):
    c = compare(toy_runs)
    assert [j.attack for j in c.jobs] == ["pgd", "deepfool"]
    assert [j.sides[0].job_id for j in c.jobs] == ["pgd-linf-eps0.3-steps10", "deepfool"]
    assert {(r, why) for r, _, why in c.unmatched} == {
        (0, "no other run has this job"),
        (1, "toy-a has no such job"),
    }
    # the same numbers as each run's own report
    for r, run_dir in enumerate(toy_runs):
        jobs = {j["job_id"]: j for j in summarize(run_dir)["jobs"]}
        for job in c.jobs:
            side = job.sides[r]
            rep = jobs[side.job_id]
            assert side.flip_matrix.tolist() == rep["flip_matrix"]
            assert side.symmetry == pytest.approx(_nan(rep["symmetry"]), nan_ok=True)
            ci = [_nan(v) for v in rep["symmetry_ci"]]
            assert list(side.symmetry_ci) == pytest.approx(ci, nan_ok=True)
            assert side.top_share == pytest.approx(rep["top_attractor"]["share"])


def test_toy_runs_shared_samples_counted_independently(toy_runs):
    c = compare(toy_runs)
    recs = []
    for run_dir, job_id in zip(toy_runs, ("deepfool", "deepfool"), strict=True):
        with RunStore.open(run_dir) as store:
            recs.append(store.records(job_id))
    flipped = [
        {
            int(i): int(a)
            for i, t, cl, a in zip(
                r["index"], r["true"], r["clean_pred"], r["adv_pred"], strict=True
            )
            if cl == t and a != t
        }
        for r in recs
    ]
    shared = set(recs[0]["index"].tolist()) & set(recs[1]["index"].tolist())
    assert 0 < len(shared) < 80  # seeds 0 and 1 pick overlapping samples
    both = shared & flipped[0].keys() & flipped[1].keys()
    same = sum(flipped[0][i] == flipped[1][i] for i in both)
    (p,) = c.jobs[1].pairs
    assert p.n_shared == len(shared)
    assert (p.agreement.n, p.agreement.n_same) == (len(both), same)


def test_toy_run_against_itself_does_not_differ(toy_runs, tmp_path):
    c = compare([toy_runs[0], toy_runs[0]])
    for job in c.jobs:
        (p,) = job.pairs
        assert p.tests.n_differ == 0
        tested = ~np.isnan(p.tests.p_value)
        assert tested.any() and np.all(p.tests.p_value[tested] == 1)
        assert p.correlation.pearson == pytest.approx(1)
        assert p.agreement.rate == 1
        assert p.n_shared == 80


def test_toy_runs_through_the_cli(toy_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, toy_runs), "--out", str(out), "--correction", "bh"]) == 0
    printed = capsys.readouterr().out
    assert "pgd (norm=linf, eps=0.3, steps=10)" in printed and "deepfool" in printed
    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert data["options"]["correction"] == "bh"
    assert [j["attack"] for j in data["jobs"]] == ["pgd", "deepfool"]
    assert os.path.getsize(out / "compare.html") > 10_000


# ---------------------------------------------------------------- in the browser


def test_comparison_page_in_the_browser(pair, tmp_path):
    """The comparison page as the report's browser test sees a report: every
    embedded PNG decodes and headless Chromium renders it, not blank (skips
    without Debian's chromium)."""
    from PIL import Image
    from test_report_browser import DATA_URI, assert_not_blank, render

    page = compare_runs(pair, tmp_path / "cmp", n_boot=50)
    uris = DATA_URI.findall(page.read_text(encoding="utf-8"))
    assert len(uris) == 6  # two matched jobs: matrices, landing shares, difference
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri, validate=True))) as im:
            assert im.format == "PNG"
            im.load()
            assert im.width > 50 and im.height > 50
    assert_not_blank(render(page, tmp_path))


def test_a_pending_job_without_records_is_compared_as_untested(tmp_path):
    index = np.arange(100, 130)
    runs = []
    for name, adv in (("one", STD_ADV), ("two", ROB_ADV)):
        path = make_store(
            tmp_path / name, name, [(_job("pgd", "pgd", PGD), index, TRUE, TRUE, adv)]
        )
        with RunStore.open(path) as store:
            store.add_job(_job("cw", "cw-l2", {}))  # pending, no records
        runs.append(path)
    c = compare(runs, n_boot=50)
    cw = c.jobs[1]
    assert [s.n for s in cw.sides] == [0, 0] and not any(s.complete for s in cw.sides)
    (p,) = cw.pairs
    assert p.tests.n_tested == 0 and p.agreement.n == 0
    page = compare_runs(runs, tmp_path / "cmp", n_boot=50).read_text(encoding="utf-8")
    assert "untested" in page and "incomplete" in page
