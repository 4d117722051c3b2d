"""Collector SD cards: the image file's partitions, and the staging tree the Pi 5 deploy copies in.

A Raspberry Pi OS image is an MBR disk: partition 1 is the FAT boot partition (``bootfs``,
mounted at /boot/firmware), partition 2 the ext4 root. This machine's kernel has no vfat and
no partition-table support, so nothing here asks the kernel to read the table: ``read_mbr``
parses it, the boot partition is edited with mtools (``mcopy -i image@@offset``) and the root
partition is mounted through a loop device at its byte offset (``losetup --offset``).

``build_test_card`` makes the small two-partition image CI uses instead of a Raspberry Pi OS
download (unreachable here): the same layout, a Debian arm64 root filesystem.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from capturelab.errors import HostEnvironmentError, InputError
from capturelab.lab.wheelhouse import PLATFORMS

SECTOR = 512
MBR_SIGNATURE = b"\x55\xaa"
TYPE_FAT32_LBA = 0x0C
TYPE_LINUX = 0x83
ALIGN_SECTORS = 8192  # 4 MiB, as Raspberry Pi OS images align their partitions


@dataclass(frozen=True)
class Partition:
    number: int
    type_id: int
    start_sector: int
    sectors: int

    @property
    def offset(self) -> int:
        return self.start_sector * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR


def read_mbr(image: Path) -> list[Partition]:
    """The primary partitions of an MBR disk image; errors name the file."""
    try:
        with image.open("rb") as f:
            mbr = f.read(SECTOR)
        size = image.stat().st_size
    except OSError as exc:
        raise InputError(f"{image}: {exc.strerror}") from None
    if len(mbr) < SECTOR or mbr[510:512] != MBR_SIGNATURE:
        raise InputError(f"{image}: no MBR partition table (a Raspberry Pi OS image has one)")
    parts = []
    for i in range(4):
        _boot, _chs1, ptype, _chs2, start, count = struct.unpack_from(
            "<B3sB3sII", mbr, 446 + 16 * i
        )
        if ptype == 0 or count == 0:
            continue
        part = Partition(i + 1, ptype, start, count)
        if part.offset + part.size > size:
            raise InputError(f"{image}: partition {i + 1} ends beyond the end of the file")
        parts.append(part)
    return parts


def card_partitions(image: Path) -> tuple[Partition, Partition]:
    """(boot, root): partition 1 must be FAT, partition 2 Linux, as on Raspberry Pi OS."""
    parts = {p.number: p for p in read_mbr(image)}
    boot, root = parts.get(1), parts.get(2)
    if boot is None or boot.type_id not in (0x0B, TYPE_FAT32_LBA, 0x0E, 0x06):
        raise InputError(f"{image}: partition 1 is not a FAT boot partition")
    if root is None or root.type_id != TYPE_LINUX:
        raise InputError(f"{image}: partition 2 is not a Linux root partition")
    return boot, root


def write_mbr(image: Path, parts: list[Partition], disk_id: int) -> None:
    mbr = bytearray(SECTOR)
    struct.pack_into("<I", mbr, 440, disk_id)
    for part in parts:
        chs = b"\xfe\xff\xff"  # LBA only
        struct.pack_into("<B3sB3sII", mbr, 446 + 16 * (part.number - 1), 0, chs, part.type_id,
                         chs, part.start_sector, part.sectors)  # fmt: skip
    mbr[510:512] = MBR_SIGNATURE
    with image.open("r+b") as f:
        f.write(mbr)


def _run(argv: list[str], what: str) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise HostEnvironmentError(f"{argv[0]} is not installed (needed to {what})")
    proc = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostEnvironmentError(f"{what}: {argv[0]} failed: {proc.stderr.strip()[-800:]}")


def _du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def build_test_card(rootfs: Path, out: Path, boot_mib: int = 64) -> tuple[Partition, Partition]:
    """A two-partition card image like Raspberry Pi OS's, with ``rootfs`` as its root."""
    if not (rootfs / "etc" / "os-release").exists():
        raise InputError(f"{rootfs} is not a root filesystem (no etc/os-release)")
    root_mib = int(_du(rootfs) * 1.4 / 2**20) + 128
    boot = Partition(1, TYPE_FAT32_LBA, ALIGN_SECTORS, boot_mib * 2048)
    root = Partition(2, TYPE_LINUX, boot.start_sector + boot.sectors, root_mib * 2048)
    out.unlink(missing_ok=True)
    with out.open("wb") as f:
        f.truncate(root.offset + root.size)
    write_mbr(out, [boot, root], disk_id=0x5EC0113C)
    _run(["mformat", "-i", f"{out}@@{boot.offset}", "-T", str(boot.sectors), "-h", "64", "-s", "32",
          "-F", "-v", "bootfs", "::"], "make the FAT boot partition")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        config, cmdline = Path(tmp) / "config.txt", Path(tmp) / "cmdline.txt"
        config.write_text("[all]\nkernel=kernel_2712.img\narm_64bit=1\n")
        cmdline.write_text("console=tty1 root=PARTUUID=5ec0113c-02 rootfstype=ext4 rootwait\n")
        _run(["mcopy", "-i", f"{out}@@{boot.offset}", str(config), str(cmdline), "::"],
             "copy config.txt and cmdline.txt")  # fmt: skip
    _run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(rootfs), "-E", f"offset={root.offset}",
          str(out), f"{root.size // 1024}k"], "make the ext4 root partition")  # fmt: skip
    return boot, root


# --- what the deploy copies onto the root partition ---------------------------------------


def nm_connection(address: str, gateway: str, dns: str) -> str:
    """A NetworkManager keyfile for the wired port: DHCP, or a static address when given."""
    lines = [
        "[connection]", "id=capturelab-wired", "type=ethernet", "interface-name=eth0",
        "autoconnect=true", "", "[ipv4]",
    ]  # fmt: skip
    if address:
        if "/" not in address:
            raise InputError(f"address {address!r} needs a prefix length, e.g. 10.10.1.21/24")
        lines += [
            "method=manual",
            f"address1={address},{gateway}" if gateway else f"address1={address}",
        ]
        if dns:
            lines.append(f"dns={dns.replace(',', ';')};")
    else:
        lines.append("method=auto")
    lines += ["", "[ipv6]", "method=auto", ""]
    return "\n".join(lines)


def stage_venv(stage: Path, wheelhouse: Path, venv: str = "/opt/capturelab/venv",
               python: str = "3.11") -> None:  # fmt: skip
    """A venv for the card's python3 with the wheelhouse's packages, built on the controller.

    Nothing runs on (or for) the card's CPU: pip installs the aarch64 wheels into the venv's
    site-packages with ``--platform``, and the venv's few files are written as ``python3 -m venv``
    writes them. The collector role later adds pip to it (``python3 -m venv`` again) if needed.
    """
    requirements = wheelhouse / "requirements.txt"
    if not requirements.exists():
        raise InputError(f"{wheelhouse} is not a capturelab wheelhouse (no requirements.txt)")
    root = stage / venv.lstrip("/")
    site = root / "lib" / f"python{python}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
            str(wheelhouse), "--only-binary=:all:", "--python-version", python,
            "--implementation", "cp", "--target", str(site), "-r", str(requirements)]  # fmt: skip
    for platform in PLATFORMS["arm64"]:
        argv += ["--platform", platform]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostEnvironmentError(f"pip could not stage the venv: {proc.stderr.strip()[-800:]}")
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts with the controller's shebang
    (root / "pyvenv.cfg").write_text(
        f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {python}\n"
        f"executable = /usr/bin/python{python}\ncommand = /usr/bin/python3 -m venv {venv}\n"
    )
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "python3", f"python{python}"):
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/python{python}")
    script = bin_dir / "capturelab"
    script.write_text(
        f"#!{venv}/bin/python3\nimport sys\n\nfrom capturelab.cli import main\n\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    if (root / "lib64").exists() or (root / "lib64").is_symlink():
        return
    (root / "lib64").symlink_to("lib")
