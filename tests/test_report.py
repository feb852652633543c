"""Report: summary numbers against the analysis functions, files, HTML escaping,
embedded images, sweep groups, pending jobs and degenerate runs."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from labelflip import analysis
from labelflip.report import csv_rows, format_table, plots, summarize, write_report
from labelflip.store import Job, RunStore

NASTY = '<cat & "dog">'
NAMES = [NASTY, "bird", "fish $^$"]  # "$^$" is invalid mathtext: must be shown literally
WHITE_NOISE = [1, 1, 1, 0, 2, 1]
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')

# Hand-made landings of the main job (clean-correct part):
#   0->1 x4, 1->0 x2, 2->1 x3, failed 0->0 x1, 1->1 x2, 2->2 x1
# plus two samples misclassified before the attack (true 0, clean 2, adv 2).
MAIN_TRUE = [0] * 5 + [1] * 4 + [2] * 4 + [0, 0]
MAIN_CLEAN = [0] * 5 + [1] * 4 + [2] * 4 + [2, 2]
MAIN_ADV = [0, 1, 1, 1, 1] + [0, 0, 1, 1] + [1, 1, 1, 2] + [2, 2]
MAIN_MATRIX = [[1, 4, 0], [2, 2, 0], [0, 3, 1]]


def _columns(true, clean, adv, *, start=0, success=None) -> dict[str, np.ndarray]:
    true, clean, adv = (np.asarray(v, dtype=np.int64) for v in (true, clean, adv))
    n = true.size
    success = adv != true if success is None else np.asarray(success, dtype=bool)
    norm = np.arange(1, n + 1, dtype=np.float64) / 10
    return {
        "sample": np.arange(start, start + n),
        "index": np.arange(start, start + n) + 100,
        "true": true,
        "clean_pred": clean,
        "adv_pred": adv,
        "target": np.full(n, -1),
        "success": success,
        "l0": np.arange(n) + 5,
        "l1": norm * 3,
        "l2": norm,
        "linf": norm / 4,
        "iterations": np.full(n, 10),
        "forwards": np.full(n, 11),
        "backwards": np.full(n, 10),
        "seconds": np.full(n, 0.01),
    }


def _job(job_id, label, group="", sweep=None) -> Job:
    return Job(
        job_id=job_id,
        attack=job_id.split("-")[0],
        settings={"eps": sweep},
        seed=0,
        model_sha256="ab" * 32,
        versions={"labelflip": "0.1.0"},
        label=label,
        group=group,
        sweep_value=sweep,
    )


def make_run(run_dir: Path, channels: int = 1) -> Path:
    """A run with a swept group of three PGD jobs (one hand-made), a lone FGSM
    job without saved examples, a pending job with partial records (examples
    only in the store) and a pending job without records."""
    meta = {
        "name": "demo <run>",
        "dataset": "toy & co",
        "split": "test",
        "class_names": NAMES,
        "num_classes": 3,
        "bounds": [0.0, 1.0],
        "input_shape": [channels, 6, 5],
        "model": {
            "arch": "tiny",
            "checkpoint": "m.safetensors",
            "sha256": "ab" * 32,
            "clean_accuracy": 0.9,
        },
        "white_noise_pred": WHITE_NOISE,
        "samples": list(range(100, 115)),
        "started": "2026-01-02T03:04:05",
    }
    store = RunStore.create(run_dir, meta=meta)
    rng = np.random.default_rng(0)
    n = len(MAIN_TRUE)
    x = rng.uniform(0, 1, size=(n, channels, 6, 5)).astype(np.float32)
    pos = np.arange(0, 12, 2)
    gallery = {"positions": pos, "x": x[pos], "true": np.asarray(MAIN_TRUE)[pos]}
    jobs = [
        (_job("pgd-0.1", "PGD L∞ ε=0.1", "pgd-linf", 0.1), MAIN_ADV),
        (_job("pgd-1", "PGD L∞ ε=1", "pgd-linf", 1.0), [1] * 5 + [0] * 4 + [1] * 4 + [1, 1]),
        (_job("pgd-3", "PGD L∞ ε=3", "pgd-linf", 3.0), [1] * 5 + [2] * 4 + [1] * 4 + [1, 1]),
        (_job("fgsm-0.1", "FGSM <ε=0.1>", "fgsm", 0.1), MAIN_ADV),
    ]
    for job, adv in jobs:
        store.add_job(job)
        store.write_batch(job.job_id, _columns(MAIN_TRUE, MAIN_CLEAN, adv))
        store.mark_done(job.job_id)
        if job.attack == "pgd":
            x_adv = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
            gallery[f"adv__{job.job_id}"] = x_adv[pos]
    cw = _job("cw-0", "C&W L2", "cw")
    store.add_job(cw)
    cols = _columns(MAIN_TRUE[:6], MAIN_CLEAN[:6], MAIN_ADV[:6])
    store.write_batch("cw-0", cols, x_adv=np.clip(x[:6] + 0.1, 0, 1))
    store.add_job(_job("deepfool-0", "DeepFool", "df"))
    store.close()
    np.savez(run_dir / "gallery.npz", **gallery)
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "r")


@pytest.fixture(scope="module")
def report(run) -> Path:
    return write_report(run, n_boot=200)


@pytest.fixture(scope="module")
def summary(run) -> dict:
    return summarize(run, n_boot=200)


def _by_id(summary: dict) -> dict:
    return {j["job_id"]: j for j in summary["jobs"]}


# ---------------------------------------------------------------- summary


def test_summary_hand_computed(summary):
    j = _by_id(summary)["pgd-0.1"]
    assert j["n"] == 15 and j["n_clean_correct"] == 13 and j["n_success_clean"] == 9
    assert j["clean_accuracy"] == pytest.approx(13 / 15)
    assert j["success_rate"] == pytest.approx(11 / 15)
    assert j["success_rate_clean"] == pytest.approx(9 / 13)
    assert j["flip_matrix"] == MAIN_MATRIX
    assert j["flip_matrix_all"] == [[1, 4, 2], [2, 2, 0], [0, 3, 1]]
    assert j["symmetry"] == pytest.approx(2 / 7)
    assert j["bowker"]["statistic"] == pytest.approx(4 / 6 + 3) and j["bowker"]["df"] == 2
    assert j["landing_shares"] == pytest.approx([2 / 9, 7 / 9, 0])
    assert j["top_attractor"] == {"class": 1, "name": "bird", "share": pytest.approx(7 / 9)}
    assert [(f["from_name"], f["to_name"], f["count"]) for f in j["top_flips"]] == [
        (NASTY, "bird", 4),
        ("fish $^$", "bird", 3),
        ("bird", NASTY, 2),
    ]
    # medians over the successful clean-correct samples (rows 1-4, 5-6, 9-11)
    ok = [1, 2, 3, 4, 5, 6, 9, 10, 11]
    assert j["median_l2"] == pytest.approx(np.median((np.array(ok) + 1) / 10))
    assert j["median_l0"] == pytest.approx(np.median(np.array(ok) + 5))
    assert summary["white_noise"]["distribution"] == pytest.approx([1 / 6, 4 / 6, 1 / 6])
    assert summary["white_noise"]["top_name"] == "bird"


def test_summary_matches_analysis(summary):
    true, clean, adv = (np.asarray(v) for v in (MAIN_TRUE, MAIN_CLEAN, MAIN_ADV))
    mask = clean == true
    success = adv != true
    j = _by_id(summary)["pgd-0.1"]
    A = analysis.flip_matrix(true, adv, 3, mask=mask)
    assert j["symmetry"] == pytest.approx(analysis.symmetry_score(A))
    assert j["symmetry_ci"] == pytest.approx(
        list(analysis.symmetry_ci(true, adv, 3, mask=mask, n_boot=200, seed=0))
    )
    b = analysis.bowker_test(A)
    assert j["bowker"] == {
        "statistic": pytest.approx(b.statistic),
        "df": b.df,
        "p_value": pytest.approx(b.p_value),
    }
    shares = analysis.landing_shares(adv[mask], success[mask], 3)
    assert j["landing_shares"] == pytest.approx(shares.tolist())
    assert j["entropy"] == pytest.approx(analysis.normalized_entropy(shares))
    noise = analysis.class_distribution(WHITE_NOISE, 3)
    rho = analysis.rank_correlation(shares, noise)
    assert j["white_noise_spearman"]["rho"] == pytest.approx(rho.rho)
    assert j["top_flips"][0]["count"] == analysis.top_flips(A)[0][2]


def test_summary_groups_pending_and_json(summary):
    assert summary["groups"] == [
        {
            "group": "pgd-linf",
            "job_ids": ["pgd-0.1", "pgd-1", "pgd-3"],
            "sweep_values": [0.1, 1.0, 3.0],
            "setting": "eps",  # the swept setting, named on the sweep plots' x axis
        }
    ]
    jobs = _by_id(summary)
    assert [j["job_id"] for j in summary["jobs"]] == [
        "pgd-0.1",
        "pgd-1",
        "pgd-3",
        "fgsm-0.1",
        "cw-0",
        "deepfool-0",
    ]
    assert jobs["cw-0"]["status"] == "pending" and jobs["cw-0"]["n"] == 6
    empty = jobs["deepfool-0"]
    assert empty["n"] == 0 and empty["symmetry"] is None and empty["clean_accuracy"] is None
    assert empty["top_attractor"] == {"class": None, "name": None, "share": 0.0}
    # pgd-1 (clean-correct): 0->1 x5, 1->0 x4, 2->1 x4: s = min(5, 4) / (max(5, 4) + max(0, 4))
    assert jobs["pgd-1"]["symmetry"] == pytest.approx(4 / 9)
    json.dumps(summary, allow_nan=False)
    assert summary["run"]["n_samples"] == 15


def test_format_table(summary):
    header, rows = format_table(summary)
    assert len(rows) == len(summary["jobs"]) and all(len(r) == len(header) for r in rows)
    first = rows[0]
    assert first[0] == "PGD L∞ ε=0.1"
    assert f"{NASTY}→bird (4)" in first[-1]
    assert first[-2] == "bird (77.8%)"
    assert first[8].startswith("0.29 [")
    assert rows[4][0] == "C&W L2 (incomplete)" and rows[5][-1] == "–"
    assert len(csv_rows(summary)) == len(rows)


def test_log_axis_rule():
    assert plots._use_log(np.array([0.1, 1.0, 3.0]))
    assert not plots._use_log(np.array([1.0, 2.0, 9.0]))
    assert not plots._use_log(np.array([0.0, 1.0, 100.0]))


# ---------------------------------------------------------------- files


def test_report_files(report, run):
    out = run / "report"
    assert report == out / "report.html"
    names = {p.name for p in out.iterdir()}
    for jid in ("pgd-0.1", "pgd-1", "pgd-3", "fgsm-0.1", "cw-0", "deepfool-0"):
        assert f"flip_matrix__{jid}.csv" in names
    expected_png = {
        *(f"flip_matrix__{j}.png" for j in ("pgd-0.1", "pgd-1", "pgd-3", "fgsm-0.1", "cw-0")),
        *(f"gallery__{j}.png" for j in ("pgd-0.1", "pgd-1", "pgd-3", "cw-0")),
        "sweep_matrices__pgd-linf.png",
        "sweep_lines__pgd-linf.png",
        "white_noise.png",
    }
    assert {n for n in names if n.endswith(".png")} == expected_png
    assert {"report.html", "summary.json", "jobs.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp")]


def test_summary_json_and_csv(report, run, summary):
    out = run / "report"
    saved = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    saved["run"].pop("generated")
    fresh = dict(summary, run={k: v for k, v in summary["run"].items() if k != "generated"})
    assert saved == fresh
    with open(out / "flip_matrix__pgd-0.1.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true \\ adversarial", *NAMES]
    assert [r[0] for r in rows[1:]] == NAMES
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == MAIN_MATRIX
    with open(out / "jobs.csv", newline="", encoding="utf-8") as fh:
        jobs = list(csv.DictReader(fh))
    assert [j["job_id"] for j in jobs] == [j["job_id"] for j in summary["jobs"]]
    assert float(jobs[0]["symmetry"]) == pytest.approx(2 / 7)
    assert jobs[5]["symmetry"] == "" and jobs[5]["status"] == "pending"


def test_html_escaped_and_self_contained(report):
    page = report.read_text(encoding="utf-8")
    assert NASTY not in page
    assert "&lt;cat &amp; &quot;dog&quot;&gt;" in page
    assert "demo &lt;run&gt;" in page and "FGSM &lt;ε=0.1&gt;" in page
    assert "<script" not in page.lower()
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page)
    # images are data URIs; links go to the page's own sections
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert "http://" not in page and "https://" not in page and "@import" not in page


def test_html_images_match_files(report, run):
    page = report.read_text(encoding="utf-8")
    embedded = [base64.b64decode(m) for m in DATA_URI.findall(page)]
    files = sorted(p.read_bytes() for p in (run / "report").glob("*.png"))
    assert len(embedded) == 12
    assert sorted(embedded) == files
    assert all(e.startswith(b"\x89PNG\r\n\x1a\n") for e in embedded)


def test_html_sweep_and_pending(report):
    page = report.read_text(encoding="utf-8")
    assert "<h2>Sweeps</h2>" in page and "<h3>pgd-linf</h3>" in page
    assert 'alt="flip matrices of sweep pgd-linf"' in page
    assert "2 job(s) incomplete" in page
    assert page.count("class='badge'>incomplete") == 2
    assert "No records yet." in page
    assert "No adversarial examples saved for this job." in page  # fgsm: not in the gallery


def test_rgb_gallery(tmp_path):
    run = make_run(tmp_path / "rgb", channels=3)
    page = write_report(run, n_boot=50).read_text(encoding="utf-8")
    assert len(DATA_URI.findall(page)) == 12


# ---------------------------------------------------------------- degenerate runs


def test_single_class_no_success(tmp_path):
    store = RunStore.create(tmp_path / "one", meta={"class_names": ["only"], "num_classes": 1})
    store.add_job(_job("pgd-1", "PGD"))
    store.write_batch("pgd-1", _columns([0, 0, 0], [0, 0, 0], [0, 0, 0]))
    store.mark_done("pgd-1")
    store.close()
    page = write_report(tmp_path / "one", n_boot=20).read_text(encoding="utf-8")
    s = summarize(tmp_path / "one", n_boot=20)
    j = s["jobs"][0]
    assert j["symmetry"] is None and j["symmetry_ci"] == [None, None]
    assert j["success_rate"] == 0.0 and j["median_l2"] is None and j["entropy"] is None
    assert j["top_flips"] == [] and s["white_noise"] is None
    assert "no white-noise predictions" in page and "No gallery.npz" in page


def test_all_failed_and_no_jobs(tmp_path):
    store = RunStore.create(tmp_path / "f", meta={"class_names": ["a", "b"]})
    for jid, sweep in (("pgd-a", 0.5), ("pgd-b", 1.0)):
        store.add_job(_job(jid, jid, "pgd", sweep))
        store.write_batch(jid, _columns([0, 1, 1], [0, 1, 0], [0, 1, 0]))
        store.mark_done(jid)
    store.close()
    page = write_report(tmp_path / "f", n_boot=20).read_text(encoding="utf-8")
    assert len(DATA_URI.findall(page)) == 4  # 2 heatmaps, sweep matrices and lines
    RunStore.create(tmp_path / "e", meta={}).close()
    page = write_report(tmp_path / "e").read_text(encoding="utf-8")
    assert "The run has no jobs." in page


def test_rewrite_replaces(report, run):
    first = report.read_bytes()
    again = write_report(run, n_boot=200)
    assert again == report and len(again.read_bytes()) == pytest.approx(len(first), rel=0.01)


def test_no_matplotlib_state_leaks(run, summary):
    import matplotlib

    before = dict(matplotlib.rcParams)
    write_report(run, summary=summary)
    assert dict(matplotlib.rcParams) == before
    saved = json.loads((run / "report" / "summary.json").read_text(encoding="utf-8"))
    assert saved["run"]["generated"] == summary["run"]["generated"]  # the given summary is used


def test_gallery_folder_fallback(tmp_path):
    """Without gallery.npz (run interrupted), the runner's gallery/*.npy are used."""
    run = make_run(tmp_path / "g")
    folder = run / "gallery"
    folder.mkdir()
    with np.load(run / "gallery.npz", allow_pickle=False) as z:
        for k in z.files:
            np.save(folder / f"{k}.npy", z[k], allow_pickle=False)
    (run / "gallery.npz").unlink()
    page = write_report(run, n_boot=20).read_text(encoding="utf-8")
    assert len(DATA_URI.findall(page)) == 12 and "run started" in page


# ---------------------------------------------------------------- typed summaries, kinds


def test_typed_summary_round_trips_through_json(run, summary):
    from labelflip.report import RunSummary, summarize_run

    typed = summarize_run(run, n_boot=200)
    j = typed.job("pgd-0.1")
    assert type(j.n) is int and type(j.flip_matrix[0][1]) is int and type(j.bowker.df) is int
    assert j.flip_matrix == tuple(map(tuple, MAIN_MATRIX))
    assert j.top_attractor.name == "bird" and j.top_flips[0].count == 4
    assert np.isnan(typed.job("deepfool-0").symmetry)  # not available: NaN typed, null in JSON
    data = typed.to_json()
    assert RunSummary.from_json(data).to_json() == data
    data["run"].pop("generated")
    assert data == dict(summary, run={k: v for k, v in summary["run"].items() if k != "generated"})


def test_every_job_has_a_registered_kind(summary):
    from labelflip.report.kinds import KINDS, kind_for

    assert set(KINDS) == {"type-ii", "type-i", "multilabel"}
    assert {j["kind"] for j in summary["jobs"]} == {"type-ii"}
    assert kind_for("type-i", multilabel=False).name == "type-i"
    assert kind_for("pgd", multilabel=True).name == "multilabel"
    assert kind_for("no-such-attack", multilabel=False).name == "type-ii"


def test_report_imports_neither_torch_nor_detect():
    import subprocess
    import sys

    code = (
        "import sys, labelflip.report; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('labelflip.detect')]; "
        "sys.exit(repr(bad) if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- issue 22: read in one sitting


def _tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels if t.get_visible() and t.get_text()]


def _charts() -> dict:
    """Every chart of the report (not the image galleries), as Figures."""
    a = np.asarray(MAIN_MATRIX)
    return {
        "flip_heatmap": plots.flip_heatmap(a, NAMES, "t", note="few flips"),
        "distance_heatmap": plots.distance_heatmap(
            [[0, 0.97, 0.99], [0.97, 0, 1.0], [0.99, 1.0, 0]], NAMES, "confusion"
        ),
        "flip_multiples": plots.flip_multiples([a, a.T, a, a], ["a", "b", "c", "d"], NAMES),
        "sweep_lines": plots.sweep_lines(
            [0.1, 1.0, 3.0],
            [0.2, 0.4, 0.5],
            [0.1, 0.3, 0.4],
            [0.3, 0.5, 0.6],
            [0.5, 0.6, 0.7],
            ["a", "b", "c"],
            "g",
            xlabel="ε (eps)",
            few=[True, False, False],
        ),  # fmt: skip
        "prior_bars": plots.prior_bars([1 / 6, 4 / 6, 1 / 6], NAMES, 6),
    }


def test_every_chart_has_labelled_axes_and_readable_ticks():
    for name, fig in _charts().items():
        fig.canvas.draw()
        bars = {id(im.colorbar.ax) for ax in fig.axes for im in ax.images if im.colorbar}
        for ax in fig.axes:
            if not ax.get_visible() or not ax.axison:
                continue
            if id(ax) in bars:  # a colour bar: labelled, with readable ticks
                assert ax.get_ylabel(), name
                assert _tick_texts(ax.get_yticklabels()), name
                continue
            xlabel = ax.get_xlabel() or fig.get_supxlabel()
            ylabel = ax.get_ylabel() or fig.get_supylabel()
            assert xlabel and ylabel, (name, xlabel, ylabel)
            for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
                assert all(t.get_fontsize() >= 6 for t in labels), name
        # every axis that shows values has tick labels somewhere in the figure
        main = [ax for ax in fig.axes if id(ax) not in bars and ax.axison]
        assert any(_tick_texts(ax.get_xticklabels()) for ax in main), name
        assert any(_tick_texts(ax.get_yticklabels()) for ax in main), name


def test_chart_scales_and_names():
    charts = _charts()
    # white noise: the y axis (share of predictions) has tick labels, as percentages
    bars = charts["prior_bars"].axes[0]
    assert _tick_texts(bars.get_yticklabels()) and "%" in _tick_texts(bars.get_yticklabels())[-1]
    # a count heatmap's colour bar ticks at whole counts only
    fig = charts["flip_heatmap"]
    fig.canvas.draw()
    (bar,) = [im.colorbar for ax in fig.axes for im in ax.images if im.colorbar]
    ticks = bar.get_ticks()
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks))
    # class distances 0.97..1.00 are drawn on 0..1, not stretched over the colour scale
    fig = charts["distance_heatmap"]
    (im,) = fig.axes[0].images
    assert im.get_clim() == (0.0, 1.0)
    # the sweep's x axis is named after the swept setting
    assert charts["sweep_lines"].axes[0].get_xlabel() == "ε (eps)"


def test_few_flips_are_flagged_with_their_rule(report, summary):
    header, rows = format_table(summary)
    j = _by_id(summary)["pgd-0.1"]  # 9 off-diagonal flips
    assert rows[0][8].endswith("(9 flips < 20)")
    page = report.read_text(encoding="utf-8")
    assert "fewer than 20 off-diagonal flips" in page
    assert "class='num nw few'" in page
    assert j["symmetry"] == pytest.approx(2 / 7)  # the number itself is kept


def test_gallery_picks_spread_successes_first(tmp_path):
    from labelflip.report.gallery import pick_examples
    from labelflip.report.summary import summarize_run

    # 30 samples, true classes 0..2 in turn; only class 0 and 1 samples from row 12 on succeed
    true = np.arange(30) % 3
    adv = np.where(np.arange(30) >= 12, (true + 1) % 3, true)
    adv[true == 2] = 2
    cols = _columns(true, true, adv)
    with RunStore.create(tmp_path / "g", meta={}) as store:
        store.add_job(_job("pgd-1", "PGD"))
        store.write_batch("pgd-1", cols)
        store.mark_done("pgd-1")
        typed = summarize_run(store, n_boot=10)
    success = adv != true
    rows = [r for _, r in pick_examples(typed.jobs[0], np.arange(30), cols, 5)]
    # more successes (12) than asked: successes only, of both classes they come from
    assert len(set(rows)) == 5 and all(success[rows]) and set(true[rows]) == {0, 1}
    rows = [r for _, r in pick_examples(typed.jobs[0], np.arange(30), cols, 14)]
    # all 12 successes first, then failures of the class no success came from
    assert len(set(rows)) == 14 and all(success[rows[:12]])
    assert not any(success[rows[12:]]) and set(true[rows[12:]]) == {2}


def test_page_has_toc_findings_config_and_honours_gallery(tmp_path):
    from html.parser import HTMLParser

    run = make_run(tmp_path / "c")
    (run / "config.toml").write_text('name = "demo <run>"\ngallery = 3\n', encoding="utf-8")
    (run / "config.json").write_text('{"gallery": 3}', encoding="utf-8")
    page = write_report(run, n_boot=20).read_text(encoding="utf-8")

    class Links(HTMLParser):
        ids: set = set()
        hrefs: list = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if "id" in a:
                self.ids.add(a["id"])
            if tag == "a" and a.get("href", "").startswith("#"):
                self.hrefs.append(a["href"][1:])

    p = Links()
    p.feed(page)
    assert {"findings", "summary", "jobs", "config", "job-pgd-0.1", "job-cw-0"} <= p.ids
    assert len(p.hrefs) >= 2 * 6 and set(p.hrefs) <= p.ids  # TOC and summary rows
    assert "What this run found" in page and "name = &quot;demo &lt;run&gt;&quot;" in page
    shown = re.findall(r'data-true="([^"]*)"', page)
    assert shown and all(len(s.split()) == 3 for s in shown)  # gallery = 3
    assert "accuracy on the attacked samples" in page


def test_findings_by_hand(run):
    """The untargeted jobs' clean matrices added up (off-diagonal):
    pgd-0.1 and fgsm 0→1 4, 1→0 2, 2→1 3 each; pgd-1 0→1 5, 1→0 4, 2→1 4;
    pgd-3 0→1 5, 1→2 4, 2→1 4; cw-0 (6 records) 0→1 4, 1→0 1. Pooled:
    0→1 22, 1→0 9, 2→1 14, 1→2 4: 49 flips, 36 of them into class 1; an even
    spread gives class 1 (49 - 13) / 2 of 49 = 37%. Every job has < 20 flips."""
    from labelflip.report.findings import findings
    from labelflip.report.summary import summarize_run

    found = {f.topic: f for f in findings(summarize_run(run, n_boot=20))}
    assert found["Strongest attractor"].text == (
        "class bird receives 73% of the 49 flips of the 5 untargeted job(s) (an even spread "
        "over the other classes would give it 37%)."
    )
    pairs = found["Asymmetric pairs"].text
    assert pairs.startswith(f"most one-way: {NASTY}→bird 22 times, bird→{NASTY} 9 times")
    assert found["Sweep pgd-linf"].text == (
        "no value has enough flips to read s; ε = 0.1, 1, 3: fewer than 20 flips."
    )
    assert not any(t.startswith("Target strategy") for t in found)  # no target strategies
