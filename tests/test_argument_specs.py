"""Every role documents every variable: meta/argument_specs.yml and defaults/main.yml agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "main.yml").is_file())


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def _specs(role: str) -> dict[str, Any]:
    path = REPO / "roles" / role / "meta" / "argument_specs.yml"
    assert path.exists(), f"{role}: meta/argument_specs.yml is missing"
    points: dict[str, Any] = _load(path)["argument_specs"]
    # An internal role called only with tasks_from has no main; its entry points share one set.
    options: dict[str, Any] = points.get("main", next(iter(points.values())))["options"]
    return options


def test_there_are_roles():
    assert "common" in ROLES


@pytest.mark.parametrize("role", ROLES)
def test_specs_match_defaults(role: str):
    defaults = _load(REPO / "roles" / role / "defaults" / "main.yml")
    specs = _specs(role)
    assert set(defaults) == set(specs), (
        f"{role}: only in defaults: {sorted(set(defaults) - set(specs))}; "
        f"only in argument_specs: {sorted(set(specs) - set(defaults))}"
    )
    for name, spec in specs.items():
        assert spec.get("description"), f"{role}: {name} has no description"
        assert "type" in spec, f"{role}: {name} has no type"
        assert "default" in spec, f"{role}: {name} documents no default"
        assert spec["default"] == defaults[name], (
            f"{role}: {name} default in argument_specs ({spec['default']!r}) differs from "
            f"defaults/main.yml ({defaults[name]!r})"
        )


@pytest.mark.parametrize("role", ROLES)
def test_variables_carry_the_role_prefix(role: str):
    for name in _specs(role):
        assert name.startswith(f"{role}_"), f"{role}: variable {name} lacks the prefix {role}_"


@pytest.mark.parametrize("role", ROLES)
def test_meta_names_role_and_namespace(role: str):
    info = _load(REPO / "roles" / role / "meta" / "main.yml")["galaxy_info"]
    assert info["role_name"] == role
    assert info["namespace"] == "capturelab"
