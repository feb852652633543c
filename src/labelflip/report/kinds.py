"""Job kinds of the report, in one registry: how a job's records become its
summary, how its matrix is read, what its table rows and captions say and
which examples its gallery shows.

- ``type-ii`` (the usual attacks): the flip matrix, true class × the
  model's class after the attack.
- ``type-i`` (Tang et al., "Adversarial Attack Type I"): the label-stay
  matrix, original class × the class the judge sees, over the samples the
  model still labels with the original class. The judge is chosen once,
  in :func:`type_i_judge`.
- ``multilabel`` (every job of a multi-label run): the label-swap matrix,
  label switched off × label switched on.

Adding a kind: subclass :class:`JobKind`, decorate it with
:func:`register_kind` and make :func:`kind_for` choose it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from matplotlib.figure import Figure

from labelflip import analysis
from labelflip._text import label_set_name
from labelflip.analysis import SpearmanResult
from labelflip.errors import LabelflipError
from labelflip.report import jobstats, plots
from labelflip.report.jobstats import Records, RunContext
from labelflip.report.schema import (
    Attractor,
    JobSummary,
    LabelSpace,
    MultiLabelSummary,
    TypeISummary,
)
from labelflip.report.text import format_p, format_pct
from labelflip.store import Job

KINDS: dict[str, JobKind] = {}


def register_kind(cls: type[JobKind]) -> type[JobKind]:
    """Class decorator: register an instance of ``cls`` under ``cls.name``."""
    KINDS[cls.name] = cls()
    return cls


def kind_of(job: JobSummary) -> JobKind:
    """The kind of a summarised job."""
    try:
        return KINDS[job.kind]
    except KeyError:
        raise LabelflipError(f"job {job.job_id}: unknown job kind '{job.kind}'") from None


def kind_for(attack: str, *, multilabel: bool) -> JobKind:
    """The kind of a job of ``attack``: ``multilabel`` in a multi-label run,
    else the attack's registered kind (``type-ii`` for a name this labelflip
    does not know, e.g. from a newer version)."""
    if multilabel:
        return KINDS["multilabel"]
    from labelflip.attacks import get_attack

    try:
        return KINDS[get_attack(attack).kind]
    except LabelflipError:
        return KINDS["type-ii"]


@dataclass(frozen=True)
class Axes:
    """How a kind's matrix reads: axis labels, colour-bar label, the CSV's
    corner cell and what the matrix is called."""

    xlabel: str
    ylabel: str
    legend: str
    corner: str
    what: str


@dataclass(frozen=True)
class Examples:
    """Per record: ``good`` (a success worth showing) and ``landed``, the
    class the example landed in (the gallery spreads over both classes)."""

    good: np.ndarray
    landed: np.ndarray


class JobKind:
    """One kind of job. Subclasses set :attr:`name` and :attr:`title` and
    implement :meth:`summarize`; the rest has defaults for a flip matrix
    (another matrix: set :attr:`matrix_axes` and :attr:`matrix_caption`, or
    override :meth:`axes` and :meth:`caption` where they depend on the job)."""

    name: ClassVar[str]
    title: ClassVar[str]  # e.g. in the detector table
    gallery_caption: ClassVar[str] = (
        "Original, adversarial and perturbation (rescaled to [0, 1], grey = unchanged)."
    )
    # the matrix of a kind whose matrix reads the same for every job
    matrix_axes: ClassVar[Axes] = Axes(
        "adversarial prediction",
        "true class",
        "flips (diagonal: failed)",
        "true \\ adversarial",
        "flip matrix",
    )
    matrix_caption: ClassVar[str] = (
        "Flip matrix of the clean-correct samples: row = true class, column = "
        "adversarial prediction; grey hatched diagonal = attack failed."
    )

    def summarize(self, ctx: RunContext, job: Job, status: str, rec: Records) -> JobSummary:
        raise NotImplementedError

    def axes(self, job: JobSummary) -> Axes:
        return self.matrix_axes

    def caption(self, job: JobSummary) -> str:
        return self.matrix_caption

    def table_rows(self, job: JobSummary, names: Sequence[str]) -> list[tuple[str, str]]:
        rows = [*_head_rows(job), _records_row(job), _entropy_row(job), _noise_row(job)]
        return [*rows, _bowker_row(job), *_oracle_rows(job)]

    def class_name(self, i: int, names: Sequence[str]) -> str:
        return str(names[i])

    def examples(self, job: JobSummary, rec: Records) -> Examples:
        good = rec["success"].astype(bool) & (rec["clean_pred"] == rec["true"])
        return Examples(good, rec["adv_pred"])

    def gallery_title(self, job: JobSummary, rec: Records, row: int, names: Sequence[str]) -> str:
        t, a = int(rec["true"][row]), int(rec["adv_pred"][row])
        if rec["clean_pred"][row] != t:
            mark = "\n(wrong before)"  # misclassified before the attack
        else:
            mark = "" if rec["success"][row] else "\n(failed)"
        return f"true: {self.class_name(t, names)}\nadv: {self.class_name(a, names)}{mark}"

    def draw_gallery(
        self,
        job: JobSummary,
        gallery: Mapping[str, np.ndarray],
        idx: list[int],
        x: np.ndarray,
        x_adv: np.ndarray,
        titles: list[str],
        bounds: Sequence[float],
        good: Sequence[bool],
    ) -> tuple[Figure | None, str]:
        """The gallery figure of the examples at gallery indices ``idx`` (or
        None and why there is none); the titles of those not ``good`` marked."""
        return plots.gallery(x, x_adv, titles, bounds, [not g for g in good]), ""

    def table_note(self, jobs: Sequence[JobSummary]) -> str:
        """What the summary table's rows of this kind mean ("" when nothing to add)."""
        return ""


# ---------------------------------------------------------------- table rows


def _head_rows(job: JobSummary) -> list[tuple[str, str]]:
    return [
        ("attack", job.attack),
        ("settings", json.dumps(job.settings, sort_keys=True, ensure_ascii=False)),
        ("seed", str(job.seed)),
    ]


def _records_row(job: JobSummary) -> tuple[str, str]:
    return ("records", f"{job.n} ({job.n_clean_correct} clean-correct)")


def _entropy_row(job: JobSummary) -> tuple[str, str]:
    ent = job.entropy
    return ("landing entropy (normalised)", "–" if math.isnan(ent) else f"{ent:.3f}")


def _noise_row(job: JobSummary) -> tuple[str, str]:
    wn = job.white_noise_spearman
    rho = "–" if math.isnan(wn.rho) else f"{wn.rho:.2f} (p = {wn.p_value:.3g})"
    return ("Spearman rho, landing shares vs white noise", rho)


def _bowker_row(job: JobSummary) -> tuple[str, str]:
    bw = job.bowker
    stat = "nan" if math.isnan(bw.statistic) else f"{bw.statistic:.3g}"
    return ("Bowker test", f"χ² = {stat}, df = {bw.df}, p = {format_p(bw.p_value)}")


def _oracle_rows(job: JobSummary) -> list[tuple[str, str]]:
    o = job.oracle
    if o is None:
        return []
    return [
        (
            "oracle on the successful examples",
            f"still sees the true class: {format_pct(o.kept_true_rate)}, agrees "
            f"with the model: {format_pct(o.agrees_with_model_rate)} (n = {o.n})",
        )
    ]


# ---------------------------------------------------------------- Type II


@register_kind
class TypeII(JobKind):
    """An attack that flips the model's label (the examples should still be
    seen as the true class by a human or an oracle)."""

    name = "type-ii"
    title = "Type II"

    def summarize(self, ctx: RunContext, job: Job, status: str, rec: Records) -> JobSummary:
        true, adv = rec["true"], rec["adv_pred"]
        success = rec["success"].astype(bool)
        correct = rec["clean_pred"] == true
        targeted = bool(np.any(rec["target"] >= 0))
        landing = jobstats.landings(ctx, true, adv, correct, success)
        rho = (
            analysis.rank_correlation(landing["landing_shares"], ctx.noise)
            if ctx.noise is not None
            else SpearmanResult(math.nan, math.nan)
        )
        A = landing["flip_matrix"]
        counted = success & correct
        return JobSummary(
            **jobstats.header(job, status, rec, self.name),
            **landing,
            flip_matrix_all=analysis.flip_matrix(true, adv, len(ctx.names)),
            white_noise_spearman=rho,
            label_space=jobstats.label_space(ctx, job, rec, A, targeted),
            oracle=jobstats.oracle_view(rec, counted, ctx.judges),
            detect=jobstats.detected(rec["squeeze"][counted], ctx.judges.detect),
        )


# ---------------------------------------------------------------- Type I


@dataclass(frozen=True)
class Judge:
    """Who judges a Type I example: the record column with its class of the
    result, and how the report names it."""

    key: str
    column: str
    name: str  # "independent oracle"
    short: str  # "the oracle"


JUDGES = {
    "oracle": Judge("oracle", "oracle_pred", "independent oracle", "the oracle"),
    "f2": Judge("f2", "attacker_pred", "SVAE classifier f2", "f2"),
}


def type_i_judge(has_oracle: bool) -> Judge:
    """The judge of a run's Type I jobs: its independent oracle when it has
    one, else the attack's own f2 (the SVAE's classifier)."""
    return JUDGES["oracle" if has_oracle else "f2"]


@register_kind
class TypeI(JobKind):
    """Tang et al.'s Type I attack: the image changes class for the judge
    while the model keeps its label."""

    name = "type-i"
    title = "Type I"
    gallery_caption = (
        "Start image, transition (the decoded midpoint of the latent path) and result; "
        "titles give the model's label and the judges' classes of the result."
    )

    def summarize(self, ctx: RunContext, job: Job, status: str, rec: Records) -> JobSummary:
        """The same fields as a Type II job, computed on the **label-stay
        matrix**: rows the original class, columns the class the judge now
        sees, counting the samples the model still labels with the original
        class (:func:`labelflip.analysis.label_stay_matrix`). The samples
        counted are those both the model and the oracle classified correctly
        before the attack. ``success_rate`` is the attack's own verdict (f1
        keeps, f2 moved) over all samples; ``success_rate_clean`` the judge's
        over the counted samples; medians over the judge's successes.
        ``type_i`` holds the judge and the
        :class:`~labelflip.analysis.TypeIRates` by the oracle (if any) and by f2."""
        true, adv = rec["true"], rec["adv_pred"]
        judge = type_i_judge(ctx.judges.oracle is not None)
        base = rec["clean_pred"] == true
        if judge.key == "oracle":
            base = base & (jobstats.oracle_clean(rec, ctx.judges) == true)
        seen = rec[judge.column]
        keeps = adv == true
        ok = base & keeps & (seen != true)  # the judge's Type I successes
        # the label-stay matrix is the flip matrix of true x seen over the samples f1 kept
        landing = jobstats.landings(ctx, true, seen, base & keeps, seen != true)
        target = rec["target"]
        rates = {
            "f2": analysis.type_i_rates(true, adv, rec["attacker_pred"], target, mask=base),
            "oracle": (
                analysis.type_i_rates(true, adv, rec["oracle_pred"], target, mask=base)
                if judge.key == "oracle"
                else None
            ),
        }
        head = jobstats.header(job, status, rec, self.name)
        head.update(
            n_clean_correct=int(base.sum()),
            n_success_clean=int(ok.sum()),
            success_rate_clean=jobstats.rate(ok[base]),
            **jobstats.norm_medians(rec, ok),
        )
        # what the judge sees where the model kept its label (else the true class)
        ls_rec = {**rec, "adv_pred": np.where(keeps, seen, true)}
        return JobSummary(
            **head,
            **landing,
            flip_matrix_all=analysis.label_stay_matrix(true, adv, seen, len(ctx.names)),
            white_noise_spearman=SpearmanResult(math.nan, math.nan),
            label_space=jobstats.label_space(ctx, job, ls_rec, landing["flip_matrix"], True),
            type_i=TypeISummary(judge=judge.key, rates=rates, n_counted=int(base.sum())),
            oracle=None,
            detect=jobstats.detected(rec["squeeze"][ok], ctx.judges.detect),
        )

    @staticmethod
    def judge(job: JobSummary) -> Judge:
        assert job.type_i is not None
        return JUDGES[job.type_i.judge]

    def axes(self, job: JobSummary) -> Axes:
        judge = self.judge(job)
        return Axes(
            f"class {judge.short} sees (the model kept the original)",
            "original class",
            "Type I examples (diagonal: unchanged)",
            f"original \\ seen by {judge.key} (model kept the original)",
            "label-stay matrix",
        )

    def caption(self, job: JobSummary) -> str:
        return (
            "Label-stay matrix: row = original class, column = the class the "
            f"{self.judge(job).name} sees after the attack, counting the samples the model "
            "still labels with the original class. Off-diagonal cells are Type I examples; "
            "grey hatched diagonal = the image did not change class."
        )

    def table_rows(self, job: JobSummary, names: Sequence[str]) -> list[tuple[str, str]]:
        """Both judgements: the independent oracle's and f2's (no white-noise
        prior: the model keeps its label)."""
        ti = job.type_i
        assert ti is not None
        by_oracle = " and the oracle" if ti.judge == "oracle" else ""
        rows = [
            *_head_rows(job),
            (
                "records",
                f"{job.n} ({ti.n_counted} classified correctly before the attack by the "
                f"model{by_oracle})",
            ),
        ]
        for key in ("oracle", "f2"):
            r = ti.rates.get(key)
            if r is None:
                continue
            judge = JUDGES[key]
            target = (
                f"; sees the target: {format_pct(r.target_hit_rate)}, with the model kept: "
                f"{format_pct(r.targeted_success_rate)}"
                if r.n_targeted
                else ""
            )
            rows.append(
                (
                    f"Type I success judged by the {judge.name}",
                    f"{format_pct(r.success_rate)} (model keeps its label: "
                    f"{format_pct(r.f1_keep_rate)}; {judge.short} sees another class: "
                    f"{format_pct(r.oracle_change_rate)}{target})",
                )
            )
        return [*rows, _entropy_row(job), _bowker_row(job), *_oracle_rows(job)]

    def examples(self, job: JobSummary, rec: Records) -> Examples:
        seen = rec[self.judge(job).column]
        true = rec["true"]
        good = (rec["adv_pred"] == true) & (seen != true) & (rec["clean_pred"] == true)
        return Examples(good, seen)

    def gallery_title(self, job: JobSummary, rec: Records, row: int, names: Sequence[str]) -> str:
        t, a = int(rec["true"][row]), int(rec["adv_pred"][row])
        judged = f"f2: {names[int(rec['attacker_pred'][row])]}"
        if job.type_i is not None and job.type_i.judge == "oracle":
            judged = f"oracle: {names[int(rec['oracle_pred'][row])]}, {judged}"
        ok = a == t and int(rec[self.judge(job).column][row]) != t
        mark = "" if ok else "\n(not Type I)"
        return f"was {names[t]}, model: {names[a]}\n{judged}{mark}"

    def draw_gallery(
        self,
        job: JobSummary,
        gallery: Mapping[str, np.ndarray],
        idx: list[int],
        x: np.ndarray,
        x_adv: np.ndarray,
        titles: list[str],
        bounds: Sequence[float],
        good: Sequence[bool],
    ) -> tuple[Figure | None, str]:
        """Start, transition (the latent path's midpoint) and result."""
        key = f"transition__{job.job_id}"
        if key not in gallery:
            return None, "No transition images saved for this job."
        transition = np.asarray(gallery[key])[idx]
        failed = [not g for g in good]
        return plots.gallery_type_i(x, transition, x_adv, titles, bounds, failed), ""

    def table_note(self, jobs: Sequence[JobSummary]) -> str:
        judges = sorted(judge_names(jobs))
        if not judges:
            return ""
        who = " and ".join(
            f"the {JUDGES[k].name}" + ("" if k == "oracle" else " (no [oracle] in the run)")
            for k in judges
        )
        return (
            "Type I rows: success = the attack's own verdict (f1 kept its label, f2 moved); "
            "success (clean), norms, s and attractors: the label-stay matrix judged by "
            f"{who}."
        )


# ---------------------------------------------------------------- multi-label


@register_kind
class MultiLabel(JobKind):
    """A job of a multi-label run: decisions are label bitmasks and the
    class names are the labels."""

    name = "multilabel"
    title = "multi-label"
    matrix_axes = Axes(
        "label switched on",
        "label switched off",
        "label swaps",
        "switched off \\ switched on",
        "label-swap matrix",
    )
    matrix_caption = (
        "Label swaps of the clean-correct samples: row = label switched off, column = "
        "label switched on (by the same example)."
    )

    def summarize(self, ctx: RunContext, job: Job, status: str, rec: Records) -> JobSummary:
        """The flip matrix is the label-swap matrix (label ``i`` switched off
        and ``j`` on, over the clean-correct samples;
        :func:`labelflip.analysis.multilabel.label_swaps`), symmetry and the
        Bowker test are computed on it (no bootstrap over label vectors), and
        the landing shares and the top attractor are those of the labels
        switched on. ``multilabel`` holds the labels switched on and off,
        the bASR (targeted), the bits the targets ask to change and the
        whole-vector success rate."""
        from labelflip.analysis import multilabel as ml

        n = len(ctx.names)
        true, clean, adv = rec["true"], rec["clean_pred"], rec["adv_pred"]
        correct = clean == true
        success = rec["success"].astype(bool)
        swaps = ml.label_swaps(clean, adv, n, mask=correct)
        on, off = ml.bit_flips(clean[correct], adv[correct], n)
        total_on = on.sum()
        shares = on / total_on if total_on else np.full(n, math.nan)
        top = int(np.argmax(on)) if total_on else None
        targeted = bool(np.any(rec["target"] >= 0))
        target = rec["target"]
        basr = mean_bits = math.nan
        if targeted and correct.any():
            basr = ml.bit_success_rate(clean[correct], adv[correct], target[correct], n)
            mean_bits = float(ml.changed_bits(clean[correct], target[correct], n).mean())
        flipped = correct & (adv != true)
        image_size = ctx.image_size
        label_space = LabelSpace(
            strategy=jobstats.target_setting(job).get("strategy"),
            distance_used=None,
            attack_rate=jobstats.rate(flipped[correct]),
            n_flips=int(flipped.sum()),
            flip_distance={},
            mean_sq_perturbation=(
                analysis.mean_squared_perturbation(rec["l2"][flipped], *image_size)
                if image_size and flipped.any()
                else math.nan
            ),
            flip_correlation={},
        )
        return JobSummary(
            **jobstats.header(job, status, rec, self.name),
            flip_matrix=swaps,
            flip_matrix_all=ml.label_swaps(clean, adv, n),
            symmetry=analysis.symmetry_score(swaps),
            symmetry_ci=(math.nan, math.nan),  # no bootstrap over label vectors
            symmetry_level=ctx.level,
            bowker=analysis.bowker_test(swaps),
            top_flips=jobstats.flip_entries(swaps, ctx.names),
            landing_shares=shares,
            baseline_shares=None,
            entropy=analysis.normalized_entropy(shares) if total_on and n > 1 else math.nan,
            top_attractor=Attractor(
                top,
                None if top is None else ctx.names[top],
                math.nan if top is None else shares[top],
            ),
            white_noise_spearman=SpearmanResult(math.nan, math.nan),
            label_space=label_space,
            multilabel=MultiLabelSummary(
                label_on=on,
                label_off=off,
                bit_success_rate=basr,
                mean_target_bits=mean_bits,
                success_rate_whole_vector=jobstats.rate(success[correct]),
            ),
        )

    def table_rows(self, job: JobSummary, names: Sequence[str]) -> list[tuple[str, str]]:
        ml = job.multilabel
        assert ml is not None

        def counts(values: Sequence[int]) -> str:
            items = [f"{names[i] if i < len(names) else i}: {c}" for i, c in enumerate(values) if c]
            return ", ".join(items) or "none"

        bits = ml.mean_target_bits
        return [
            *_head_rows(job),
            _records_row(job),
            ("whole-vector success (clean)", format_pct(ml.success_rate_whole_vector)),
            ("bASR (share of the asked bits reached)", format_pct(ml.bit_success_rate)),
            ("bits asked to change (mean)", "–" if math.isnan(bits) else f"{bits:.2f}"),
            ("labels switched on", counts(ml.label_on)),
            ("labels switched off", counts(ml.label_off)),
            *_oracle_rows(job),
        ]

    def class_name(self, i: int, names: Sequence[str]) -> str:
        return label_set_name(i, names)


def table_notes(jobs: Sequence[JobSummary]) -> list[str]:
    """The summary table's notes of the kinds present in ``jobs`` (the HTML
    table's and the CLI's)."""
    return [note for kind in KINDS.values() if (note := kind.table_note(jobs))]


def judge_names(jobs: Sequence[JobSummary]) -> set[str]:
    """The judges of the Type I jobs among ``jobs`` (``oracle``, ``f2``)."""
    return {j.type_i.judge for j in jobs if j.type_i is not None}


def detector_label(job: JobSummary) -> str:
    return f"{kind_of(job).title}: {job.label}"


__all__ = [
    "JUDGES",
    "KINDS",
    "Axes",
    "Examples",
    "JobKind",
    "Judge",
    "detector_label",
    "judge_names",
    "kind_for",
    "kind_of",
    "register_kind",
    "table_notes",
    "type_i_judge",
]
