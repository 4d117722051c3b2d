"""Inputs and derived values are told apart by name.

A role's inputs are its defaults (``<role>_``, documented in meta/argument_specs.yml); every value a
role works out itself (``set_fact``, ``register``, task or block ``vars``, ``vars/main.yml``) is named
``__<role>_`` so that a reader, and an inventory, cannot take it for a setting. A ``vars`` entry
named as some role's input (its defaults or argument specs) is that input, passed on to an
imported role or to a block of tasks from one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())
SET_FACT = ("ansible.builtin.set_fact", "set_fact")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def _inputs(role: str) -> set[str]:
    """A role's inputs: its defaults and the options of its argument specs (every entry point)."""
    base = REPO / "roles" / role
    names = (
        set(_load(base / "defaults" / "main.yml"))
        if (base / "defaults" / "main.yml").exists()
        else set()
    )
    specs = base / "meta" / "argument_specs.yml"
    for entry in (_load(specs).get("argument_specs") or {}).values() if specs.exists() else []:
        names |= set(entry.get("options") or {})
    return names


# Every role's inputs: a vars entry of one of these names passes that input on.
INPUTS = set().union(*(_inputs(r) for r in ROLES))


def derived(tasks: list[Any]) -> Iterator[str]:
    """Every name a task list defines for itself (not the inputs it passes on)."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            yield from derived(task.get(key, []))
        if "register" in task:
            yield task["register"]
        for key in SET_FACT:
            yield from (n for n in task.get(key) or {} if n != "cacheable")
        yield from (n for n in task.get("vars") or {} if n not in INPUTS)


def names_of(role: str) -> list[str]:
    base = REPO / "roles" / role
    found = list(_load(base / "vars" / "main.yml")) if (base / "vars" / "main.yml").exists() else []
    for path in sorted([*base.glob("tasks/*.yml"), *base.glob("handlers/*.yml")]):
        found.extend(derived(_load(path)))
    return found


@pytest.mark.parametrize("role", ROLES)
def test_derived_values_carry_the_private_prefix(role: str):
    wrong = sorted({n for n in names_of(role) if not n.startswith(f"__{role}_")})
    assert not wrong, f"{role}: derived values without the __{role}_ prefix: {wrong}"


def test_a_derived_value_without_the_prefix_is_found():
    tasks = [
        {"name": "a", "ansible.builtin.command": "true", "register": "kafka_probe"},
        {"block": [{"ansible.builtin.set_fact": {"__kafka_id": 1, "kafka_rf": 3}}]},
        {
            "ansible.builtin.include_role": {"name": "x"},
            "vars": {"capturelab_service_name": 1, "x_tmp": 1},
        },
        {"ansible.builtin.debug": {"msg": "m"}, "vars": {"kafka_topics": 1, "kafka_tmp": 2}},
        {"block": [], "vars": {"capturelab_service_user": "u", "service_user": "u"}},
    ]
    assert list(derived(tasks)) == [
        "kafka_probe",
        "__kafka_id",
        "kafka_rf",
        "x_tmp",
        "kafka_tmp",
        "service_user",
    ]
