"""Each daemon role tags its phases: <role>_install, <role>_configure, <role>_run.

``--tags collector_run`` must select the start of the daemon and nothing that installs or
configures it; the input checks run under every tag (``always``). ``--list-tasks`` expands the
static imports (the capturelab_service phases) without connecting to any host.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

PLAYBOOK = Path(__file__).parent / "playbooks" / "role_tags.yml"


def _tasks(tmp_path: Path, env: dict[str, str], tags: str) -> dict[str, list[str]]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {
        "collectors": {"hosts": {"pi5-1": {}}}, "storage": {"hosts": {"storage-01": {}}},
        "gateways": {"hosts": {"gw-1": {}}}, "processing": {"hosts": {"gpu-1": {}}},
    }}}))  # fmt: skip
    res = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(PLAYBOOK), "--list-tasks", "--tags", tags],
        env=env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    plays: dict[str, list[str]] = {}
    current = ""
    for line in res.stdout.splitlines():
        if line.startswith("  play #"):
            current = line.split("(")[1].split(")")[0]
            plays[current] = []
        elif line.startswith("      ") and current and "TAGS:" in line:
            plays[current].append(line.strip().split("\tTAGS:")[0].strip())
    return plays


# One task (`role : name`) that belongs to each phase of each role, so absent from its other phases.
SERVICE = {
    "install": "capturelab_service : Service user (no login)",
    "configure": "capturelab_service : Unit",
    "run": "capturelab_service : Enabled and running",
}
PHASES: dict[str, tuple[str, dict[str, str]]] = {
    "common": ("all", {
        "install": "common : Install base packages", "configure": "common : Set the hostname",
    }),
    "kafka": ("gateways", {
        "install": "kafka : Kafka user",
        "configure": "kafka : Broker configuration",
        "run": "kafka : Kafka is enabled and running",
    }),
    "storage_array": ("storage", {
        "install": "storage_array : Packages", "configure": "storage_array : Inspect the members and the array",
    }),
    "capturelab_venv": ("storage", {"install": "capturelab_venv : The venv"}),
    "collector": ("collectors", SERVICE),
    "sink": ("storage", SERVICE),
    "processing_node": ("processing", {
        "install": "processing_node : Copy the model wheels",
        "configure": "processing_node : What this node is (read by the validation suites)",
        "run": "processing_node : The training stack imports (torch, transformers, peft, trl, accelerate, datasets)",
    }),
}  # fmt: skip


@pytest.mark.parametrize("role", sorted(PHASES))
def test_each_phase_selects_its_tasks(tmp_path: Path, tool_env: dict[str, str], role: str):
    group, markers = PHASES[role]
    for phase, marker in markers.items():
        tasks = _tasks(tmp_path, tool_env, f"{role}_{phase}")[group]
        assert marker in tasks, f"{role}_{phase}: {marker!r} not in {tasks}"
        others = [m for p, m in markers.items() if p != phase and m in tasks]
        assert not others, f"{role}_{phase} also selects {others}"
        assert _first_check(role) in tasks, f"{role}_{phase}: no input checks in {tasks}"


def _first_check(role: str) -> str:
    """The role's first input check, as --list-tasks names it (validate.yml runs with every tag)."""
    checks = yaml.safe_load(
        (PLAYBOOK.parents[2] / "roles" / role / "tasks" / "validate.yml").read_text()
    )
    return f"{role} : {checks[0]['name']}"


ROLES = (
    "common",
    "kafka",
    "storage_array",
    "sink",
    "collector",
    "processing_node",
    "capturelab_venv",
)
PHASE_TAGS = {"always"} | {f"{r}_{p}" for r in ROLES for p in ("install", "configure", "run")}


def test_every_task_has_a_phase(tmp_path: Path, tool_env: dict[str, str]):
    """No task runs outside a phase: each one (imported roles' included) carries a phase tag."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {
        g: {"hosts": {h: {}}} for g, h in
        (("collectors", "pi5-1"), ("storage", "storage-01"), ("gateways", "gw-1"), ("processing", "gpu-1"))
    }}}))  # fmt: skip
    res = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(PLAYBOOK), "--list-tasks"],
        env=tool_env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    listed = [
        line.strip() for line in res.stdout.splitlines()
        if "\tTAGS: [" in line and not line.strip().startswith("play #")
    ]  # fmt: skip
    assert len(listed) > 100, res.stdout[-2000:]
    untagged = [
        task for task in listed
        if not PHASE_TAGS & {t.strip() for t in task.split("\tTAGS: [")[1].rstrip("]").split(",")}
    ]  # fmt: skip
    assert not untagged, f"tasks in no phase: {untagged}"
