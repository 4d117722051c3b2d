"""One molecule platform base: a scenario's platforms name only what differs.

The container defaults (systemd as PID 1, capabilities, security options, tmpfs, the cgroup
volume, the stop signal) live in ``.config/molecule/create.yml``, which every docker scenario
creates its containers with (``config.yml``'s ``provisioner.playbooks.create``). A scenario that
repeats one of them fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / ".config" / "molecule"
SCENARIOS = sorted(REPO.glob("roles/*/molecule/*/molecule.yml"))
# What the docker driver's own create playbook needed and ours does not read.
DRIVER_ONLY = {"pre_build_image", "pull", "override_command"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def _defaults() -> dict[str, Any]:
    plays = _load(BASE / "create.yml")
    defaults: dict[str, Any] = plays[0]["vars"]["node_container_defaults"]
    return defaults


def test_every_scenario_creates_with_the_shared_playbook():
    create = _load(BASE / "config.yml")["provisioner"]["playbooks"]["create"]
    assert create.endswith("/.config/molecule/create.yml")
    assert set(_defaults()) >= {"command", "capabilities", "security_opts", "tmpfs", "volumes"}


def repeated(scenario: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """``platform.key`` for each shared default (or driver-only key) a scenario's platform sets."""
    found = []
    for platform in scenario.get("platforms", []):
        for key, value in platform.items():
            if key in DRIVER_ONLY or (key in defaults and value == defaults[key]):
                found.append(f"{platform['name']}.{key}")
            elif key == "env" and any(defaults["env"].get(k) == v for k, v in value.items()):
                found.append(f"{platform['name']}.env")
    return found


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(REPO / "roles")))
def test_a_scenario_names_only_what_differs(path: Path):
    scenario = _load(path)
    if scenario.get("provisioner", {}).get("playbooks", {}).get("create"):
        return  # its own create playbook (the storage VM): no docker platform
    found = repeated(scenario, _defaults())
    assert not found, f"{path.relative_to(REPO)} repeats the shared platform defaults: {found}"


def test_a_repeated_default_is_found():
    defaults = _defaults()
    scenario = {"platforms": [
        {"name": "n1", "image": "capturelab/node:amd64", "groups": ["gateways"]},
        {"name": "n2", "image": "x", "tmpfs": defaults["tmpfs"], "pull": False,
         "env": {"container": "docker"}},
    ]}  # fmt: skip
    assert repeated(scenario, defaults) == ["n2.tmpfs", "n2.pull", "n2.env"]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(REPO / "roles")))
def test_a_scenario_keeps_the_shared_test_sequence(path: Path):
    """config.yml's sequence runs every step whose playbook a scenario has, and skips the rest."""
    sequence = _load(path).get("scenario", {}).get("test_sequence")
    assert sequence is None, f"{path.relative_to(REPO)} repeats a test_sequence: {sequence}"


def test_the_shared_test_sequence_has_every_step():
    sequence = _load(BASE / "config.yml")["scenario"]["test_sequence"]
    assert sequence[0] == sequence[-1] == "destroy"
    assert set(sequence) >= {
        "syntax",
        "create",
        "prepare",
        "converge",
        "idempotence",
        "side_effect",
        "verify",
    }
