"""The harness reads the sim inventory and names the host and variable of every bad value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from capturelab.errors import InputError
from capturelab.lab.inventory import load_inventory, parse_inventory

REPO = Path(__file__).resolve().parents[1]


def _dump() -> dict[str, Any]:
    return {
        "_meta": {
            "hostvars": {
                "c1": {
                    "lab_platform": "container",
                    "lab_arch": "arm64",
                    "lab_ipv4": "172.30.57.11",
                    "lab_network": "capturelab",
                    "lab_subnet": "172.30.57.0/24",
                },
                "g1": {
                    "lab_platform": "container",
                    "lab_arch": "amd64",
                    "lab_ipv4": "172.30.57.21",
                    "lab_network": "capturelab",
                    "lab_subnet": "172.30.57.0/24",
                },
                "s1": {
                    "lab_platform": "vm",
                    "lab_arch": "amd64",
                    "lab_ssh_port": 2222,
                    "lab_nvme_drives": 8,
                    "lab_nvme_size": "1G",
                    "lab_network": "capturelab",
                    "lab_subnet": "172.30.57.0/24",
                },
            }
        },
        "all": {"children": ["collectors", "gateways", "storage"]},
        "collectors": {"hosts": ["c1"]},
        "gateways": {"hosts": ["g1"]},
        "storage": {"hosts": ["s1"]},
    }


def _with(host: str, **values: Any) -> dict[str, Any]:
    data = copy.deepcopy(_dump())
    data["_meta"]["hostvars"][host].update(values)
    return data


def test_sim_inventory_loads():
    inv = load_inventory(REPO / "inventory" / "sim")
    names = {n.name: n for n in inv.nodes}
    assert set(names) == {"collector-01", "collector-02", "gateway-01", "gpu-01", "storage-01"}
    assert names["collector-01"].arch == "arm64"
    assert names["storage-01"].platform == "vm"
    assert names["storage-01"].nvme_drives == 8
    assert inv.arches() == {"amd64", "arm64"}


def test_valid_dump():
    inv = parse_inventory(Path("x"), _dump())
    assert [n.name for n in inv.containers] == ["c1", "g1"]
    assert inv.vms[0].ssh_port == 2222


@pytest.mark.parametrize(
    ("host", "values", "needle"),
    [
        ("c1", {"lab_platform": "pod"}, "c1: lab_platform"),
        ("c1", {"lab_arch": "riscv64"}, "c1: lab_arch"),
        ("c1", {"lab_ipv4": "300.1.1.1"}, "c1: lab_ipv4"),
        (
            "c1",
            {"lab_ipv4": "10.0.0.5"},
            "c1: lab_ipv4 10.0.0.5 is not a host address in lab_subnet",
        ),
        ("c1", {"lab_ipv4": "172.30.57.1"}, "bridge gateway"),
        ("g1", {"lab_ipv4": "172.30.57.11"}, "g1: lab_ipv4 172.30.57.11 is already used by c1"),
        ("s1", {"lab_ssh_port": "ssh"}, "s1: lab_ssh_port must be an integer"),
        ("s1", {"lab_ssh_port": 22}, "s1: lab_ssh_port must be from 1024"),
        ("s1", {"lab_nvme_drives": 40}, "s1: lab_nvme_drives"),
        ("s1", {"lab_nvme_size": "lots"}, "s1: lab_nvme_size"),
        ("s1", {"lab_arch": "arm64"}, "s1: lab_arch must be amd64 for a VM"),
        ("s1", {"lab_memory_mb": True}, "s1: lab_memory_mb"),
    ],
)
def test_bad_value_names_host_and_variable(host: str, values: dict[str, Any], needle: str):
    with pytest.raises(InputError) as err:
        parse_inventory(Path("x"), _with(host, **values))
    assert needle in str(err.value)


def test_bad_subnet_named():
    data = _dump()
    for hv in data["_meta"]["hostvars"].values():
        hv["lab_subnet"] = "8.8.8.0/24"
    with pytest.raises(InputError, match=r"lab_subnet: 8\.8\.8\.0/24 must be a private range"):
        parse_inventory(Path("x"), data)


def test_host_outside_tier_groups():
    data = _dump()
    data["_meta"]["hostvars"]["stray"] = {"lab_platform": "container"}
    with pytest.raises(InputError, match="stray: belongs to none of the tier groups"):
        parse_inventory(Path("x"), data)


def test_missing_inventory_named(tmp_path: Path):
    with pytest.raises(InputError, match="does-not-exist"):
        load_inventory(tmp_path / "does-not-exist")
