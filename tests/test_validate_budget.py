"""Suite budgets: stated next to each suite, read without importing it, checked every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from capturelab.errors import InputError
from capturelab.validate import budget
from capturelab.validate.cli import SUITES

REPO = Path(__file__).resolve().parents[1]
# make lab's 15 minutes, of which the suites of the "lab" profile may take this much.
LAB_VALIDATION_SHARE_S = 600


def test_every_suite_states_its_budget_and_profile():
    suites = budget.read_suites(REPO / "validation")
    assert sorted(s.name for s in suites) == sorted(SUITES)
    assert all(s.budget_s > 0 for s in suites)


def test_the_lab_profile_fits_make_labs_share():
    lab = budget.select(budget.read_suites(REPO / "validation"), "lab")
    assert sum(s.budget_s for s in lab) <= LAB_VALIDATION_SHARE_S, [
        (s.name, s.budget_s) for s in lab
    ]


def test_full_runs_every_suite_and_lab_only_lab_suites(tmp_path: Path):
    for name, profile in (("a", "lab"), ("b", "full")):
        (tmp_path / f"test_{name}.py").write_text(
            f'SUITE_BUDGET_S = 30\nSUITE_PROFILE = "{profile}"\n'
        )
    suites = budget.read_suites(tmp_path)
    assert [s.name for s in budget.select(suites, "lab")] == ["a"]
    assert [s.name for s in budget.select(suites, "full")] == ["a", "b"]
    with pytest.raises(InputError, match="--profile 'fast'"):
        budget.select(suites, "fast")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('SUITE_PROFILE = "lab"\n', "SUITE_BUDGET_S is not set"),
        ('SUITE_BUDGET_S = 0\nSUITE_PROFILE = "lab"\n', "SUITE_BUDGET_S must be a positive"),
        ('SUITE_BUDGET_S = "soon"\nSUITE_PROFILE = "lab"\n', "SUITE_BUDGET_S must be a positive"),
        ("SUITE_BUDGET_S = 10\nSUITE_PROFILE = 'nightly'\n", "SUITE_PROFILE 'nightly'"),
        ("SUITE_BUDGET_S = 5 * 60\nSUITE_PROFILE = 'lab'\n", "SUITE_BUDGET_S must be a literal"),
    ],
)
def test_a_bad_statement_names_the_file_and_variable(tmp_path: Path, text: str, match: str):
    path = tmp_path / "test_x.py"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        budget.suite_info(path)
    assert str(path) in str(err.value)


def test_a_suite_past_its_budget_fails_its_check():
    over = budget.budget_result("e2e", 301.2, 300, "validation/test_e2e.py")
    assert (over.status, over.value, over.target, over.unit) == ("fail", 301.2, 300, "s")
    assert "over budget" in over.detail
    assert budget.budget_result("e2e", 120.0, 300, "validation/test_e2e.py").status == "pass"
