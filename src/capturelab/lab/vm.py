"""The storage node's qemu VM: TCG (KVM hangs here), emulated NVMe drives, SSH on 127.0.0.1.

Each VM runs from a copy-on-write overlay of the cached base disk, so the base stays pristine
and ``lab-down`` only has to delete ``.lab/vm/<node>/``. The lab's public key reaches the guest
on the kernel command line (see images/storage_vm.py).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from capturelab.errors import CapturelabError, InputError
from capturelab.lab.images import VmArtifacts
from capturelab.lab.inventory import LabNode
from capturelab.lab.paths import LabPaths
from capturelab.lab.process import run, say

SSH_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=5",
)


def live_qemu_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is a qemu (pids get reused)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"qemu-system" in cmdline else None


def ensure_ssh_key(key: Path) -> Path:
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "capturelab-lab", "-f", str(key)],
            what="lab SSH key",
            stream=False,
        )
    return key


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class LabVm:
    """One VM; its disks, pidfile and console live under ``<state>/vm/<name>/``.

    ``state`` defaults to the lab's ``.lab``; a molecule scenario passes its own ephemeral
    directory, so its VM never collides with the lab's.
    """

    paths: LabPaths
    node: LabNode
    state: Path | None = None

    @property
    def state_root(self) -> Path:
        return self.state if self.state is not None else self.paths.state

    @property
    def ssh_key(self) -> Path:
        return self.state_root / "ssh" / "id_ed25519"

    @property
    def directory(self) -> Path:
        return self.state_root / "vm" / self.node.name

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    def pid(self) -> int | None:
        return live_qemu_pid(self.pidfile)

    def qemu_argv(self, image: VmArtifacts, pubkey: str) -> list[str]:
        port = self.node.ssh_port
        encoded = base64.b64encode(pubkey.strip().encode()).decode()
        argv = [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-m",
            str(self.node.memory_mb),
            "-smp",
            "2",
            "-display",
            "none",
            "-serial",
            f"file:{self.console_log}",
            "-daemonize",
            "-pidfile",
            str(self.pidfile),
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            f"console=ttyS0 root=/dev/vda rw net.ifnames=0 capturelab.ssh_key={encoded}",
            "-drive",
            f"file={self.directory / 'root.qcow2'},if=virtio,format=qcow2",
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
        ]
        for i in range(self.node.nvme_drives):
            drive = self.directory / f"nvme{i}.raw"
            argv += [
                "-drive",
                f"file={drive},if=none,id=nvme{i},format=raw",
                "-device",
                f"nvme,drive=nvme{i},serial=capturelab-nvme{i}",
            ]
        return argv

    def start(self, image: VmArtifacts) -> None:
        if self.pid() is not None:
            say(f"{self.node.name}: VM already running (pid {self.pid()})")
            return
        port = self.node.ssh_port
        if port is None:
            raise InputError(f"{self.node.name}: lab_ssh_port is required for a VM")
        if not port_free(port):
            raise InputError(
                f"{self.node.name}: lab_ssh_port {port} is already in use on 127.0.0.1; "
                "choose another port in the sim inventory"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ensure_ssh_key(self.ssh_key)
        overlay = self.directory / "root.qcow2"
        if not overlay.exists():
            run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    str(image.disk),
                    str(overlay),
                ],
                what=f"{self.node.name}: root disk overlay",
                stream=False,
            )
        for i in range(self.node.nvme_drives):
            drive = self.directory / f"nvme{i}.raw"
            if not drive.exists():
                run(
                    ["truncate", "-s", self.node.nvme_size, str(drive)],
                    what=f"{self.node.name}: nvme{i}",
                    stream=False,
                )
        pubkey = key.with_suffix(".pub").read_text()
        run(
            self.qemu_argv(image, pubkey),
            what=f"{self.node.name}: boot VM (qemu TCG)",
            stream=False,
        )

    def ssh_argv(self, *command: str) -> list[str]:
        return [
            "ssh",
            *SSH_OPTIONS,
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.node.ssh_port),
            "root@127.0.0.1",
            *command,
        ]

    def wait_ssh(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        next_note = started + 15
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise CapturelabError(
                    f"{self.node.name}: qemu exited during boot; console log: {self.console_log}"
                )
            res = subprocess.run(
                self.ssh_argv("systemctl", "is-system-running", "--wait"),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                say(
                    f"{self.node.name}: SSH up, systemd {state} after {time.monotonic() - started:.0f} s"
                )
                return
            if time.monotonic() >= next_note:
                say(f"{self.node.name}: waiting for SSH on 127.0.0.1:{self.node.ssh_port}")
                next_note = time.monotonic() + 15
            time.sleep(2)
        raise CapturelabError(
            f"{self.node.name}: no SSH on 127.0.0.1:{self.node.ssh_port} within {timeout:.0f} s; "
            f"console log: {self.console_log}"
        )


def stop_all(state: Path) -> list[str]:
    """Stop every VM whose pidfile is under ``<state>/vm``; return their names."""
    stopped: list[str] = []
    root = state / "vm"
    if not root.is_dir():
        return stopped
    for pidfile in sorted(root.glob("*/qemu.pid")):
        pid = live_qemu_pid(pidfile)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and live_qemu_pid(pidfile) is not None:
            time.sleep(0.5)
        if live_qemu_pid(pidfile) is not None:
            os.kill(pid, signal.SIGKILL)
        stopped.append(pidfile.parent.name)
    return stopped
