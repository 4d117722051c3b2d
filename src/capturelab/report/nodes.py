"""The lab suite's first checks: each node of an inventory, reached through Ansible.

For every host: is it reachable, and what is it (architecture, OS, kernel, virtualisation)?
Facts come from Ansible's own ``setup`` module through the ``ansible.posix.json`` callback, so
the report sees exactly what the playbooks see.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from capturelab.errors import HostEnvironmentError
from capturelab.lab.inventory import TIER_GROUPS, dump_inventory, group_members
from capturelab.lab.process import venv_tool
from capturelab.results import Result


@dataclass(frozen=True)
class NodeFacts:
    name: str
    reachable: bool
    groups: list[str]
    arch: str = ""
    os: str = ""
    kernel: str = ""
    virtualization: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_groups(inventory: Path) -> dict[str, list[str]]:
    """Host -> the tier groups it belongs to, as Ansible resolves the inventory."""
    data = dump_inventory(inventory)
    groups: dict[str, list[str]] = {h: [] for h in data.get("_meta", {}).get("hostvars", {})}
    for group in TIER_GROUPS:
        for host in sorted(group_members(data, group)):
            groups.setdefault(host, []).append(group)
    return groups


def parse_setup_output(stdout: str, groups: dict[str, list[str]]) -> list[NodeFacts]:
    """Turn the json callback's output of an ad-hoc ``setup`` run into one NodeFacts per host."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise HostEnvironmentError(f"ansible's JSON output could not be parsed: {exc}") from None
    per_host: dict[str, dict[str, Any]] = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            per_host.update(task.get("hosts", {}))
    nodes: list[NodeFacts] = []
    for name in sorted(groups):
        res = per_host.get(name)
        if res is None:
            nodes.append(
                NodeFacts(
                    name=name, reachable=False, groups=groups[name], error="no result from ansible"
                )
            )
            continue
        facts = res.get("ansible_facts") or {}
        if res.get("unreachable") or res.get("failed") or not facts:
            msg = str(res.get("msg", "unreachable")).strip().splitlines()
            nodes.append(
                NodeFacts(
                    name=name,
                    reachable=False,
                    groups=groups[name],
                    error=msg[0] if msg else "unreachable",
                )
            )
            continue
        os_name = " ".join(
            str(facts.get(k, "")) for k in ("ansible_distribution", "ansible_distribution_version")
        ).strip()
        nodes.append(
            NodeFacts(
                name=name,
                reachable=True,
                groups=groups[name],
                arch=str(facts.get("ansible_architecture", "")),
                os=os_name,
                kernel=str(facts.get("ansible_kernel", "")),
                virtualization=str(facts.get("ansible_virtualization_type", "")),
            )
        )
    return nodes


def collect(inventory: Path, timeout: float = 300) -> list[NodeFacts]:
    groups = host_groups(inventory)
    env = dict(
        os.environ,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_GATHER_TIMEOUT="60",
    )
    proc = subprocess.run(
        [
            venv_tool("ansible"),
            "-i",
            str(inventory),
            "all",
            "-m",
            "ansible.builtin.setup",
            "-a",
            "gather_subset=!all,!min,distribution,virtual,platform",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    # Exit 4 = some host unreachable, 2 = some host failed: both are results, not errors.
    if proc.returncode not in (0, 2, 4):
        raise HostEnvironmentError(
            f"ansible setup failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return parse_setup_output(proc.stdout, groups)


def node_results(nodes: list[NodeFacts]) -> list[Result]:
    return [
        Result(
            suite="lab",
            check="node-reachable",
            node=n.name,
            status="pass" if n.reachable else "fail",
            value=n.reachable,
            target=True,
            source="measured",
            tool="ansible setup",
            detail=(
                f"{n.arch}, {n.os}, kernel {n.kernel}, {n.virtualization or 'bare metal'}"
                if n.reachable
                else n.error
            ),
        )
        for n in nodes
    ]
