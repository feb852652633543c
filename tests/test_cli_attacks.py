"""``labelflip attacks``: every registered attack with its settings, types,
defaults and constraints, read from the settings declarations; one attack
in detail; did-you-mean for an unknown name."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re

import pytest
from test_cli import assert_one_line_error, run_cli

from labelflip._settings import rule_of
from labelflip.attacks import ATTACKS


@pytest.fixture(scope="module")
def listing() -> dict[str, str]:
    """``labelflip attacks`` split into one section per attack."""
    proc = run_cli("attacks")
    assert proc.returncode == 0, proc.stderr
    sections = {}
    for block in proc.stdout.split("\n\n")[1:]:
        name = block.split(": ", 1)[0]
        sections[name] = block
    return sections


def test_every_registered_attack_is_listed(listing):
    assert set(ATTACKS) <= set(listing)


def test_every_setting_is_listed_with_its_constraint(listing):
    # the rows derive from the settings dataclasses: every field, with the
    # constraint declared in its metadata
    for name, spec in ATTACKS.items():
        for f in dataclasses.fields(spec.settings_type):
            rows = [ln for ln in listing[name].splitlines() if ln.split()[:1] == [f.name]]
            assert len(rows) == 1, (name, f.name)
            constraint = rule_of(f).text()
            if constraint:
                assert constraint in rows[0], (name, f.name, rows[0])


@pytest.mark.parametrize(
    "attack,row",
    [
        # hand-written from the declarations in attacks/pgd.py and deepfool.py
        ("pgd", r'norm\s+str\s+"linf"\s+one of linf, l2\s+the threat model'),
        ("pgd", r"eps\s+float or none\s+none\s+>= 0"),
        ("pgd", r"random_start\s+bool\s+true\s+-"),
        ("deepfool", r"candidates\s+int or none\s+10\s+>= 2"),
        ("deepfool", r"overshoot\s+float\s+0.02\s+>= 0"),
    ],
)
def test_rows_show_type_default_and_constraint(listing, attack, row):
    assert re.search(row, listing[attack]), listing[attack]


def test_targets_are_described(listing):
    assert "untargeted only" in listing["deepfool"]
    assert "default target strategy: labelfool" in listing["labelfool"]
    assert "needs: [svae]" in listing["type-i"]


def test_one_attack_in_detail():
    proc = run_cli("attacks", "pgd")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pgd: Projected Gradient Descent")
    assert "Madry et al. 2018, eq. 2" in proc.stdout  # the function's docstring
    assert "deepfool" not in proc.stdout


def test_unknown_attack_suggests_a_name():
    assert_one_line_error(run_cli("attacks", "pgdd"), "unknown attack 'pgdd'", "did you mean 'pgd'")


@pytest.mark.skipif(
    importlib.util.find_spec("torchattacks") is None, reason="torchattacks not installed"
)
def test_a_library_attack_lists_its_constructor_options():
    import torchattacks

    proc = run_cli("attacks", "torchattacks:APGD")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r'attack\s+str\s+"APGD"', proc.stdout)
    defaults = inspect.signature(torchattacks.APGD).parameters
    assert re.search(rf"\n\s+steps\s+{defaults['steps'].default}\n", proc.stdout)
    assert re.search(rf'\n\s+norm\s+"{defaults["norm"].default}"\n', proc.stdout)
    # labelflip sets these itself
    assert not re.search(r"\n\s+seed\s", proc.stdout)
    assert_one_line_error(run_cli("attacks", "torchattacks:APDG"), "did you mean 'APGD'")
