"""Time budgets of the validation suites, written next to each suite, and the lab/full split.

Each ``validation/test_<suite>.py`` states, at module level::

    SUITE_BUDGET_S = 150   # seconds this suite may take on the 2-core lab machine
    SUITE_PROFILE = "lab"  # "lab": run by `make lab`; "full": only by `make lab-full`

They are read without importing the suite (its imports need a lab). ``make lab`` runs the
``lab`` suites, which together must fit its 15 minutes; ``make lab-full`` runs every suite.
Each run records a ``suite-time`` check per suite: the measured seconds against the budget,
failing when the suite ran past it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from capturelab.errors import InputError
from capturelab.results import Result

PROFILES = ("lab", "full")


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    path: Path
    budget_s: float
    profile: str


def _constant(tree: ast.Module, name: str, path: Path) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                if isinstance(node.value, ast.Constant):
                    return node.value.value
                raise InputError(f"{path}: {name} must be a literal")
    raise InputError(f"{path}: {name} is not set (every suite states its budget and profile)")


def suite_info(path: Path) -> SuiteInfo:
    """The budget and profile ``path`` states; a missing or bad value names file and variable."""
    tree = ast.parse(path.read_text(), filename=str(path))
    budget = _constant(tree, "SUITE_BUDGET_S", path)
    profile = _constant(tree, "SUITE_PROFILE", path)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
        raise InputError(f"{path}: SUITE_BUDGET_S must be a positive number of seconds")
    if profile not in PROFILES:
        raise InputError(f"{path}: SUITE_PROFILE {profile!r} is not one of {', '.join(PROFILES)}")
    name = path.stem.removeprefix("test_")
    return SuiteInfo(name=name, path=path, budget_s=float(budget), profile=str(profile))


def read_suites(suites_dir: Path) -> list[SuiteInfo]:
    return [suite_info(p) for p in sorted(suites_dir.glob("test_*.py"))]


def select(suites: list[SuiteInfo], profile: str) -> list[SuiteInfo]:
    """``lab``: the suites `make lab` runs; ``full``: every suite."""
    if profile not in PROFILES:
        raise InputError(f"--profile {profile!r} is not one of {', '.join(PROFILES)}")
    return [s for s in suites if profile == "full" or s.profile == "lab"]


def budget_result(suite: str, seconds: float, budget_s: float, source: str) -> Result:
    over = seconds > budget_s
    return Result(
        suite=suite,
        check="suite-time",
        node="controller",
        status="fail" if over else "pass",
        value=round(seconds, 1),
        target=budget_s,
        unit="s",
        tool="pytest",
        detail=f"the suite's wall time against SUITE_BUDGET_S in {source}"
        + (
            " (over budget: raise it with a measured figure, or make the suite faster)"
            if over
            else ""
        ),
    )
