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

PLAYBOOK = Path(__file__).parent / "playbooks" / "role_tags.yml"


def _tasks(tmp_path: Path, env: dict[str, str], tags: str) -> dict[str, list[str]]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {
        "collectors": {"hosts": {"pi5-1": {}}}, "storage": {"hosts": {"storage-01": {}}},
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


@pytest.mark.parametrize(("role", "group"), [("collector", "collectors"), ("sink", "storage")])
def test_each_phase_selects_its_tasks(tmp_path: Path, tool_env: dict[str, str], role, group):
    phases = {
        p: _tasks(tmp_path, tool_env, f"{role}_{p}")[group] for p in ("install", "configure", "run")
    }
    assert any(t.endswith("Enabled and running") for t in phases["run"]), phases["run"]
    assert not any(
        t.endswith(("Unit", "Configuration", "Service user (no login)")) for t in phases["run"]
    )
    assert any(t.endswith("Unit") for t in phases["configure"]), phases["configure"]
    assert not any(
        t.endswith(("Enabled and running", "Service user (no login)")) for t in phases["configure"]
    )
    assert any(t.endswith("Service user (no login)") for t in phases["install"]), phases["install"]
    assert not any(t.endswith(("Enabled and running", "Unit")) for t in phases["install"])
    for tasks in phases.values():
        assert any("Input checks" in t or "Check the variables" in t for t in tasks), tasks
