"""The report's "Do flips stay within their group?" table (Label space
section): per job, the share of flips that stay within the true class's
top-level group of the class hierarchy against random landings
(:func:`labelflip.analysis.within_group_flips`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from labelflip.report.schema import JobSummary
from labelflip.report.text import format_p, format_pct


def within_group_html(jobs: Sequence[JobSummary], table: Callable[..., str]) -> str:
    """The flips that stay within their true class's top-level group of the
    class hierarchy, against random landings (uniform, and keeping each
    class's pull as a landing class)."""
    chosen = [j for j in jobs if j.label_space.within_group and j.label_space.within_group.n_flips]
    if not chosen:
        return ""
    rows = []
    for j in chosen:
        g = j.label_space.within_group
        rows.append(
            [
                j.label,
                g.n_flips,
                format_pct(g.share),
                f"{format_pct(g.expected_uniform)} (p = {format_p(g.p_uniform)})",
                f"{format_pct(g.expected_margins)} (p = {format_p(g.p_margins)})",
            ]
        )
    header = ["job", "flips", "within group", "random: uniform", "random: landing pull"]
    return (
        "<h3>Do flips stay within their group?</h3><p class='note'>Share of the "
        "off-diagonal flips whose landing class is in the true class's top-level group of "
        "the class hierarchy (e.g. animal → animal), against random landings given how many "
        "flips leave each class: uniform over the other classes, and in proportion to each "
        "class's pull as a landing class (quasi-independence fit of the flip matrix). "
        "p: one-sided, exact, for more flips within than the null expects.</p>"
        + table(header, rows, numeric=range(1, len(header)), few=[j.few_flips for j in chosen])
    )
