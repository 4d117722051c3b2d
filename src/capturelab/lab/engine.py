"""The host tools the lab needs: a Docker engine, qemu (user for arm64, system for the VM), debootstrap.

When something is missing and we are root on Debian/Ubuntu, we install it from the OS packages
and start ``dockerd`` ourselves (no init system manages it on CI machines); otherwise we stop and
say exactly what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from capturelab.errors import HostEnvironmentError
from capturelab.lab.process import run, say, succeeds

# Every external program that the harness (src/capturelab/lab), the unit tests (tests/) and the
# validation suites (validation/) run on this machine, by the Debian package that provides it.
# The engine step installs each package one of whose programs is missing; tests/test_host_packages.py
# fails on a program these code paths call that is in no package here (or in the venv).
HOST_PACKAGES: dict[str, tuple[str, ...]] = {
    "docker.io": ("docker", "dockerd"),
    "qemu-user-static": ("qemu-aarch64-static",),
    "binfmt-support": ("update-binfmts",),
    "qemu-system-x86": ("qemu-system-x86_64",),
    "qemu-utils": ("qemu-img",),
    "debootstrap": ("debootstrap",),
    "e2fsprogs": ("mkfs.ext4",),
    "openssh-client": ("ssh", "ssh-keygen"),
    "mtools": ("mformat", "mcopy", "mdir"),  # the Pi 5 card's FAT boot partition
    "mount": ("mount", "umount", "losetup"),
    "coreutils": ("chroot", "truncate", "sha256sum", "sleep"),
    "tar": ("tar",),
    "apt": ("apt-get",),
    "openssl": ("openssl",),  # the loopback broker's TLS in the unit tests
    "default-jre-headless": ("java",),  # Kafka (the loopback broker, ProducerPerformance)
    "maven": ("mvn",),  # resolves Kafka's jars on the controller (playbooks/kafka-jars.yml)
    "fio": ("fio",),  # the storage benchmark's reference writer
}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class HostFacts:
    """What decides whether we may install things ourselves."""

    is_root: bool
    is_debian_like: bool

    @classmethod
    def probe(cls) -> HostFacts:
        debian = Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None
        return cls(is_root=os.geteuid() == 0, is_debian_like=debian)


def missing_packages() -> list[str]:
    """Packages with at least one program not on PATH, in HOST_PACKAGES order."""
    return [
        pkg
        for pkg, progs in HOST_PACKAGES.items()
        if any(shutil.which(prog) is None for prog in progs)
    ]


def install_instruction(packages: list[str]) -> str:
    return (
        "the sim lab and the tests need a Docker engine, qemu, debootstrap and the tools in "
        "capturelab.lab.engine.HOST_PACKAGES on this machine. Install them "
        f"as root: apt-get install -y --no-install-recommends {' '.join(packages)}; then start "
        "the engine (systemctl start docker, or dockerd &) and run the command again."
    )


def ensure_host_tools(facts: HostFacts | None = None) -> None:
    """Install missing host packages (root on Debian only), else explain what to install."""
    facts = facts or HostFacts.probe()
    missing = missing_packages()
    if not missing:
        return
    if not (facts.is_root and facts.is_debian_like):
        raise HostEnvironmentError(install_instruction(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], what="apt-get update (host)", env=env)
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        what="install host packages",
        env=env,
    )
    still = missing_packages()
    if still:
        raise HostEnvironmentError(install_instruction(still))


def engine_running() -> bool:
    return succeeds(["docker", "info"], timeout=20)


def ensure_engine(state_dir: Path, facts: HostFacts | None = None) -> None:
    """Make ``docker info`` succeed: start dockerd when we are allowed to, else explain."""
    if engine_running():
        return
    facts = facts or HostFacts.probe()
    if not (facts.is_root and facts.is_debian_like):
        raise HostEnvironmentError(
            "`docker info` failed: no Docker engine is reachable. "
            + install_instruction(["docker.io"])
        )
    ensure_host_tools(facts)
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "dockerd.log"
    say(f"starting dockerd (log: {log})")
    with log.open("ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_running():
            say("docker engine is up")
            return
        time.sleep(1)
    raise HostEnvironmentError(f"dockerd did not answer within 60 s; see {log}")


def ensure_arm64_emulation() -> None:
    """binfmt_misc mounted and qemu-aarch64 registered with the F (fix binary) flag."""
    entry = BINFMT_DIR / "qemu-aarch64"
    if not (BINFMT_DIR / "status").exists():
        if os.geteuid() != 0:
            raise HostEnvironmentError(
                "binfmt_misc is not mounted, so arm64 containers cannot run. As root: "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
            )
        run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            what="mount binfmt_misc",
            stream=False,
        )
    if not entry.exists() or "enabled" not in entry.read_text():
        if os.geteuid() != 0:
            raise HostEnvironmentError(
                "qemu-aarch64 is not registered in binfmt_misc. As root: "
                "update-binfmts --enable qemu-aarch64 (package qemu-user-static)"
            )
        run(
            ["update-binfmts", "--enable", "qemu-aarch64"], what="enable qemu-aarch64", stream=False
        )
    if not entry.exists():
        raise HostEnvironmentError(
            "qemu-aarch64 is still not registered in binfmt_misc; install qemu-user-static and "
            "binfmt-support"
        )
    flags = [line for line in entry.read_text().splitlines() if line.startswith("flags:")]
    if not flags or "F" not in flags[0]:
        raise HostEnvironmentError(
            f"{entry} lacks the F flag, so the interpreter is not visible inside containers; "
            "reinstall qemu-user-static (Debian registers it with F)"
        )


def ensure_all(state_dir: Path, need_arm64: bool) -> None:
    """Everything a lab or a molecule run needs on the host, in dependency order."""
    facts = HostFacts.probe()
    ensure_host_tools(facts)
    ensure_engine(state_dir, facts)
    if need_arm64:
        ensure_arm64_emulation()
