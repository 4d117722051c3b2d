"""The lab's container nodes: systemd as PID 1 with explicit capabilities, on the lab's bridge.

``--privileged`` fails on the machines we build on (a capability is missing from the bounding
set), so every container gets exactly what systemd needs instead; molecule platforms use the
same list (``.config/molecule/config.yml``).
"""

from __future__ import annotations

import subprocess
import time

from capturelab.errors import CapturelabError
from capturelab.lab.inventory import LabInventory, LabNode
from capturelab.lab.process import run, say

LAB_LABEL = "capturelab.lab=sim"
SYSTEMD_RUN_ARGS = (
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--volume",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--cgroupns",
    "host",
    "--env",
    "container=docker",
    "--stop-signal",
    "SIGRTMIN+3",
)
# arm64 under qemu-user ends 'degraded' (systemd-sysusers, tmpfiles under emulation): both count.
BOOTED_STATES = ("running", "degraded")


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def ensure_network(inv: LabInventory) -> None:
    existing = _docker("network", "inspect", inv.network, "--format", "{{json .IPAM.Config}}")
    if existing.returncode == 0:
        if str(inv.subnet) not in existing.stdout:
            raise CapturelabError(
                f"docker network {inv.network} exists with another subnet ({existing.stdout.strip()}) "
                f"than lab_subnet {inv.subnet}; run `make lab-down` or change lab_network"
            )
        return
    run(
        [
            "docker",
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            str(inv.subnet),
            "--label",
            LAB_LABEL,
            inv.network,
        ],
        what=f"create lab network {inv.network} ({inv.subnet})",
        stream=False,
    )


def container_state(node: LabNode) -> str | None:
    res = _docker("container", "inspect", node.container_name, "--format", "{{.State.Status}}")
    return res.stdout.strip() if res.returncode == 0 else None


def start_container(inv: LabInventory, node: LabNode, image: str) -> None:
    state = container_state(node)
    if state == "running":
        say(f"{node.name}: container already running")
        return
    if state is not None:
        _docker("rm", "-f", node.container_name)
    assert node.ipv4 is not None  # noqa: S101 - validated by the inventory parser
    run(
        [
            "docker",
            "run",
            "--detach",
            "--name",
            node.container_name,
            "--hostname",
            node.name,
            "--network",
            inv.network,
            "--ip",
            node.ipv4,
            "--label",
            LAB_LABEL,
            "--label",
            f"capturelab.node={node.name}",
            *SYSTEMD_RUN_ARGS,
            image,
        ],
        what=f"{node.name}: start {node.arch} container",
        stream=False,
    )


def wait_booted(node: LabNode, timeout: float = 300) -> str:
    """Wait until systemd inside says running or degraded; return that state."""
    deadline = time.monotonic() + timeout
    last = ""
    next_note = time.monotonic() + 15
    while time.monotonic() < deadline:
        res = _docker("exec", node.container_name, "systemctl", "is-system-running")
        last = res.stdout.strip()
        if last in BOOTED_STATES:
            say(f"{node.name}: systemd is {last}")
            return last
        if time.monotonic() >= next_note:
            say(f"{node.name}: waiting for systemd ({last or 'starting'})")
            next_note = time.monotonic() + 15
        time.sleep(2)
    logs = _docker("logs", "--tail", "30", node.container_name)
    raise CapturelabError(
        f"{node.name}: systemd did not finish booting within {timeout:.0f} s (last state "
        f"{last!r}); container log tail:\n{logs.stdout}{logs.stderr}"
    )


def remove_all() -> list[str]:
    """Remove every container and network carrying the lab label; return what was removed."""
    removed: list[str] = []
    ids = _docker("ps", "-aq", "--filter", f"label={LAB_LABEL}").stdout.split()
    if ids:
        _docker("rm", "-f", *ids)
        removed += [f"container {i}" for i in ids]
    nets = _docker("network", "ls", "-q", "--filter", f"label={LAB_LABEL}").stdout.split()
    for net in nets:
        _docker("network", "rm", net)
        removed.append(f"network {net}")
    return removed


def remove_images() -> list[str]:
    """Remove the lab's built node images (``capturelab/node:*``, ``capturelab/rootfs:*``)."""
    removed: list[str] = []
    for repo in ("capturelab/node", "capturelab/rootfs"):
        refs = _docker("images", repo, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        if refs:
            _docker("rmi", "-f", *refs)
            removed += [f"image {r}" for r in refs]
    return removed
