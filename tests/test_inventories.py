"""The shipped inventories pass the roles' argument specs; a malformed value names its variable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = sorted(
    p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()
)
PLAYBOOK = REPO / "tests" / "playbooks" / "validate_inventory.yml"


def _validate(inventory: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(PLAYBOOK)],
        env=dict(env, CAPTURELAB_ROLES=",".join(ROLES)),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.parametrize("inventory", ["inventory/sim", "inventory/homelab.example"])
def test_inventory_passes_argument_specs(inventory: str, tool_env: dict[str, str]):
    res = _validate(REPO / inventory, tool_env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "failed=0" in res.stdout


def test_malformed_value_names_the_variable(tmp_path: Path, tool_env: dict[str, str]):
    inv = tmp_path / "inv"
    shutil.copytree(REPO / "inventory" / "homelab.example", inv)
    bad = inv / "group_vars" / "all" / "zz-bad.yml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(yaml.safe_dump({"common_firewall_enabled": "sometimes"}))
    res = _validate(inv, tool_env)
    assert res.returncode != 0
    assert "common_firewall_enabled" in res.stdout


def test_homelab_example_has_the_design_hardware():
    hosts = yaml.safe_load((REPO / "inventory" / "homelab.example" / "hosts.yml").read_text())
    children = hosts["all"]["children"]
    assert len(children["collectors"]["hosts"]) == 4
    assert len(children["gateways"]["hosts"]) == 1
    assert len(children["storage"]["hosts"]) == 1
    assert len(children["processing"]["hosts"]) == 1


SIM_ALLOWED = (
    "lab_",
    "ansible_",
    "common_firewall_allowed_cidrs",
    "kafka_heap_max_mb",
    # the VM's emulated drives, and its initramfs, which nothing boots (qemu -kernel/-initrd)
    "storage_array_devices",
    "storage_array_update_initramfs",
    "sink_min_free_bytes",  # the VM's array is 8 GiB, not 16 TB
    # nobody sits at a sim collector: a synthetic participant, a throwaway secret, and
    # injection FIFOs because containers have no /dev/uinput
    "collector_lab_secret",
    "collector_participant_id",
    "collector_consent_records",
    "consent_authority_generate",  # a throwaway authority key for the throwaway lab
    "collector_inject_dir",
    "collector_context",
    # what the validation suites hold this small lab to (its cohort, budgets, run lengths)
    "validation_",
)


def test_no_inventory_repeats_a_tier_fact():
    """Sim group vars only say how nodes exist and are reached, plus sizing for one small machine."""
    for path in (REPO / "inventory" / "sim").rglob("*.yml"):
        data = yaml.safe_load(path.read_text()) or {}
        if path.name == "hosts.yml":
            continue
        for key in data:
            assert key.startswith(SIM_ALLOWED), (
                f"{path}: {key} is not a connection/lab detail; tier settings belong in role "
                "defaults or the shared group_vars"
            )
