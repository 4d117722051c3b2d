"""Every `tasks_from:` names an entry point of the role's argument specs, so Ansible checks it.

Ansible looks the spec up by the literal `tasks_from` value: `tasks_from: install.yml` finds no
entry point `install` and validates nothing, silently. So each `import_role`/`include_role` with
`tasks_from` in roles/, playbooks/ and the molecule scenarios must name a key of the target role's
meta/argument_specs.yml, without the file extension.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE_ACTIONS = {
    "import_role",
    "include_role",
    "ansible.builtin.import_role",
    "ansible.builtin.include_role",
}


def _yaml_files() -> list[Path]:
    files = [*REPO.glob("roles/**/*.yml"), *REPO.glob("playbooks/*.yml")]
    return sorted(p for p in files if "templates" not in p.parts)


def _role_calls(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _role_calls(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ROLE_ACTIONS and isinstance(value, dict):
                yield value
            else:
                yield from _role_calls(value)


def _calls() -> list[tuple[str, str, str]]:
    found = []
    for path in _yaml_files():
        for call in _role_calls(yaml.safe_load(path.read_text())):
            if "tasks_from" in call:
                found.append((str(path.relative_to(REPO)), call["name"], call["tasks_from"]))
    return found


def _entry_points(role: str) -> set[str]:
    path = REPO / "roles" / role / "meta" / "argument_specs.yml"
    return set(yaml.safe_load(path.read_text())["argument_specs"])


CALLS = _calls()


def test_the_roles_call_entry_points():
    roles = {name for _, name, _ in CALLS}
    assert {"capturelab_service", "consent_authority", "kafka"} <= roles, roles


@pytest.mark.parametrize(("where", "role", "tasks_from"), CALLS)
def test_tasks_from_names_an_entry_point(where: str, role: str, tasks_from: str):
    points = _entry_points(role)
    assert tasks_from in points, (
        f"{where}: tasks_from: {tasks_from} names no entry point of roles/{role}/meta/"
        f"argument_specs.yml ({sorted(points)}), so Ansible validates nothing there"
        + (
            f"; write tasks_from: {Path(tasks_from).stem}"
            if Path(tasks_from).stem in points
            else ""
        )
    )


@pytest.mark.parametrize("role", sorted({name for _, name, _ in CALLS}))
def test_every_entry_point_has_its_task_file(role: str):
    for point in _entry_points(role):
        assert (REPO / "roles" / role / "tasks" / f"{point}.yml").is_file(), (
            f"roles/{role}/meta/argument_specs.yml: entry point {point} has no tasks/{point}.yml"
        )
