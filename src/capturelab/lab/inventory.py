"""Reading the sim inventory: which node is a container or a VM, and how to reach it.

The inventory is the single source of truth: the harness asks ``ansible-inventory`` for it (so
group_vars and host_vars resolve exactly as Ansible sees them) and validates every ``lab_*``
variable it uses, naming the host and the variable when one is malformed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capturelab import gateway
from capturelab.errors import InputError
from capturelab.lab.process import venv_tool

PLATFORMS = ("container", "vm")
ARCHES = ("amd64", "arm64")
TIER_GROUPS = ("collectors", gateway.GATEWAY_GROUP, "storage", "processing")
SIZE_RE = re.compile(r"^[1-9][0-9]*[MG]$")


@dataclass(frozen=True)
class LabNode:
    name: str
    platform: str
    arch: str
    groups: tuple[str, ...]
    ipv4: str | None = None
    ssh_port: int | None = None
    memory_mb: int = 2048
    nvme_drives: int = 0
    nvme_size: str = "1G"

    @property
    def container_name(self) -> str:
        return f"capturelab-{self.name}"


@dataclass(frozen=True)
class LabInventory:
    path: Path
    network: str
    subnet: ipaddress.IPv4Network
    nodes: tuple[LabNode, ...]

    @property
    def containers(self) -> list[LabNode]:
        return [n for n in self.nodes if n.platform == "container"]

    @property
    def vms(self) -> list[LabNode]:
        return [n for n in self.nodes if n.platform == "vm"]

    def arches(self) -> set[str]:
        return {n.arch for n in self.containers}


def dump_inventory(path: Path) -> dict[str, Any]:
    """``ansible-inventory --list`` of ``path`` as a dict."""
    if not path.exists():
        raise InputError(f"inventory {path} does not exist")
    proc = subprocess.run(
        [venv_tool("ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True,
        check=False,
        text=True,
    )
    if proc.returncode != 0:
        raise InputError(f"inventory {path} could not be parsed: {proc.stderr.strip()}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def group_members(data: dict[str, Any], group: str) -> set[str]:
    """Hosts of ``group`` including those of its child groups."""
    entry = data.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= group_members(data, child)
    return hosts


def _int(host: str, var: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{host}: {var} must be an integer from {low} to {high}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InputError(
            f"{host}: {var} must be an integer from {low} to {high}, got {value!r}"
        ) from None
    if not low <= number <= high:
        raise InputError(f"{host}: {var} must be from {low} to {high}, got {number}")
    return number


def _network(any_vars: dict[str, Any]) -> tuple[str, ipaddress.IPv4Network]:
    network = str(any_vars.get("lab_network", "capturelab"))
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", network):
        raise InputError(f"lab_network: {network!r} is not a valid docker network name")
    try:
        subnet = ipaddress.IPv4Network(str(any_vars.get("lab_subnet", "172.30.57.0/24")))
    except ValueError as exc:
        raise InputError(f"lab_subnet: {exc}") from None
    if not subnet.is_private:
        raise InputError(f"lab_subnet: {subnet} must be a private range (the lab stays local)")
    return network, subnet


def _container(
    name: str,
    hv: dict[str, Any],
    *,
    groups: tuple[str, ...],
    arch: str,
    subnet: ipaddress.IPv4Network,
    seen: dict[str, str],
) -> LabNode:
    raw_ip = hv.get("lab_ipv4")
    try:
        ip = ipaddress.IPv4Address(str(raw_ip))
    except ValueError:
        raise InputError(f"{name}: lab_ipv4 {raw_ip!r} is not an IPv4 address") from None
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
        raise InputError(f"{name}: lab_ipv4 {ip} is not a host address in lab_subnet {subnet}")
    if ip == next(subnet.hosts()):
        raise InputError(f"{name}: lab_ipv4 {ip} is the bridge gateway of lab_subnet {subnet}")
    if str(ip) in seen:
        raise InputError(f"{name}: lab_ipv4 {ip} is already used by {seen[str(ip)]}")
    seen[str(ip)] = name
    return LabNode(name=name, platform="container", arch=arch, groups=groups, ipv4=str(ip))


def _vm(
    name: str, hv: dict[str, Any], groups: tuple[str, ...], arch: str, seen: dict[int, str]
) -> LabNode:
    if arch != "amd64":
        raise InputError(f"{name}: lab_arch must be amd64 for a VM (qemu TCG x86_64), got {arch!r}")
    port = _int(name, "lab_ssh_port", hv.get("lab_ssh_port"), 1024, 65535)
    if port in seen:
        raise InputError(f"{name}: lab_ssh_port {port} is already used by {seen[port]}")
    seen[port] = name
    size = str(hv.get("lab_nvme_size", "1G"))
    if not SIZE_RE.match(size):
        raise InputError(f"{name}: lab_nvme_size must look like 512M or 2G, got {size!r}")
    return LabNode(
        name=name,
        platform="vm",
        arch=arch,
        groups=groups,
        ssh_port=port,
        memory_mb=_int(name, "lab_memory_mb", hv.get("lab_memory_mb", 2048), 512, 16384),
        nvme_drives=_int(name, "lab_nvme_drives", hv.get("lab_nvme_drives", 0), 0, 16),
        nvme_size=size,
    )


def parse_inventory(path: Path, data: dict[str, Any]) -> LabInventory:
    """Validate the lab variables of an ``ansible-inventory --list`` dump."""
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    all_hosts = group_members(data, "all") | set(hostvars)
    if not all_hosts:
        raise InputError(f"inventory {path} has no hosts")
    tier_members = {g: group_members(data, g) for g in TIER_GROUPS}
    network, subnet = _network(next(iter(hostvars.values()), {}))
    nodes: list[LabNode] = []
    seen_ips: dict[str, str] = {}
    seen_ports: dict[int, str] = {}
    for name in sorted(all_hosts):
        hv = hostvars.get(name, {})
        groups = tuple(g for g in TIER_GROUPS if name in tier_members[g])
        if not groups:
            raise InputError(
                f"{name}: belongs to none of the tier groups ({', '.join(TIER_GROUPS)})"
            )
        platform = hv.get("lab_platform")
        arch = hv.get("lab_arch", "amd64")
        if arch not in ARCHES:
            raise InputError(f"{name}: lab_arch must be one of {', '.join(ARCHES)}, got {arch!r}")
        if platform == "container":
            nodes.append(
                _container(name, hv, groups=groups, arch=arch, subnet=subnet, seen=seen_ips)
            )
        elif platform == "vm":
            nodes.append(_vm(name, hv, groups, arch, seen_ports))
        else:
            raise InputError(
                f"{name}: lab_platform must be one of {', '.join(PLATFORMS)}, got {platform!r}"
            )
    return LabInventory(path=path, network=network, subnet=subnet, nodes=tuple(nodes))


def load_inventory(path: Path) -> LabInventory:
    return parse_inventory(path, dump_inventory(path))
