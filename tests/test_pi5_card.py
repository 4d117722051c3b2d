"""The Pi 5 card: the image file's partition table, and the deploy on a real two-partition image.

The ``card`` tests build a small card from the arm64 node image's Debian root filesystem (the
Raspberry Pi OS download is unreachable here), run ``capturelab lab card`` on it twice, then
mount its root partition through an offset loop device and check what a first boot would see.
They run in ``make card-test`` (after the node images exist), as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from capturelab.cli import main
from capturelab.errors import InputError
from capturelab.lab.card import (
    TYPE_FAT32_LBA,
    TYPE_LINUX,
    Partition,
    card_partitions,
    nm_connection,
    read_mbr,
    write_mbr,
)


def test_mbr_round_trip(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (40 << 20))
    parts = [Partition(1, TYPE_FAT32_LBA, 8192, 16384), Partition(2, TYPE_LINUX, 24576, 57344)]
    write_mbr(image, parts, disk_id=0x12345678)
    assert read_mbr(image) == parts
    boot, root = card_partitions(image)
    assert (boot.offset, root.offset, root.size) == (8192 * 512, 24576 * 512, 57344 * 512)


def test_partition_errors_name_the_file(tmp_path: Path) -> None:
    image = tmp_path / "blank.img"
    image.write_bytes(b"\0" * 4096)
    with pytest.raises(InputError, match=r"blank\.img: no MBR partition table"):
        read_mbr(image)
    write_mbr(image, [Partition(1, TYPE_LINUX, 1, 2), Partition(2, TYPE_LINUX, 3, 2)], 1)
    with pytest.raises(InputError, match="partition 1 is not a FAT boot partition"):
        card_partitions(image)
    write_mbr(image, [Partition(1, TYPE_FAT32_LBA, 1, 100)], 1)
    with pytest.raises(InputError, match="partition 1 ends beyond the end of the file"):
        read_mbr(image)


def test_network_profile() -> None:
    assert "method=auto" in nm_connection("", "", "")
    static = nm_connection("10.10.1.21/24", "10.10.1.1", "10.10.1.1,1.1.1.1")
    assert "address1=10.10.1.21/24,10.10.1.1" in static and "dns=10.10.1.1;1.1.1.1;" in static
    with pytest.raises(InputError, match="needs a prefix length"):
        nm_connection("10.10.1.21", "", "")


ROOT_OK = os.geteuid() == 0 and all(
    shutil.which(t) for t in ("losetup", "mount", "mformat", "mcopy", "mkfs.ext4", "docker")
)


@contextmanager
def mounted_root(image: Path) -> Iterator[Path]:
    _boot, root = card_partitions(image)
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--offset", str(root.offset), "--sizelimit",
         str(root.size), str(image)], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    mnt = image.parent / "mnt"
    mnt.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount", loop, str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert ROOT_OK, "the card test needs root, losetup, mount, mtools, mkfs.ext4 and docker"
    image = tmp_path_factory.mktemp("card") / "card.img"
    key = image.parent / "admin_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert main(["lab", "card-test-image", "--out", str(image)]) == 0
    argv = ["lab", "card", "--image", str(image), "--hostname", "collector-07", "--ssh-key",
            f"{key}.pub", "--address", "10.10.1.27/24", "--gateway", "10.10.1.1"]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 0  # twice: the same card
    return image


@pytest.mark.card
def test_boot_partition_enables_ssh(card: Path) -> None:
    boot, _ = card_partitions(card)
    listing = subprocess.run(["mdir", "-b", "-i", f"{card}@@{boot.offset}", "::"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "::/ssh" in listing and "::/config.txt" in listing


@pytest.mark.card
def test_root_partition_is_a_ready_collector(card: Path) -> None:
    key = (card.parent / "admin_key.pub").read_text().strip()
    with mounted_root(card) as root:
        assert (root / "etc/hostname").read_text() == "collector-07\n"
        assert (root / "etc/hosts").read_text().count("127.0.1.1\tcollector-07") == 1
        assert sum(1 for line in (root / "etc/passwd").read_text().splitlines()
                   if line.startswith("capturelab-admin:")) == 1  # fmt: skip
        ssh = root / "home/capturelab-admin/.ssh"
        assert (ssh / "authorized_keys").read_text().strip() == key
        assert oct((ssh / "authorized_keys").stat().st_mode & 0o777) == "0o600"
        assert oct(ssh.stat().st_mode & 0o777) == "0o700"
        nm = root / "etc/NetworkManager/system-connections/capturelab-wired.nmconnection"
        assert "address1=10.10.1.27/24,10.10.1.1" in nm.read_text()
        assert oct(nm.stat().st_mode & 0o777) == "0o600"
        assert "NOPASSWD" in (root / "etc/sudoers.d/capturelab-admin").read_text()
        assert (
            "PasswordAuthentication no"
            in (root / "etc/ssh/sshd_config.d/capturelab.conf").read_text()
        )
        assert (root / "etc/machine-id").read_text() == ""
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        # Nothing about a participant is baked in.
        assert not (root / "etc/capturelab").exists()
        wheelhouses = list((root / "opt/capturelab/wheelhouse").iterdir())
        assert len(wheelhouses) == 1 and any(
            w.name.endswith("aarch64.whl") for w in wheelhouses[0].iterdir()
        )
        # Marked as the capturelab_venv role marks a finished copy, so first boot sends nothing;
        # the controller's archive is not baked in.
        folder = wheelhouses[0]
        assert (folder / ".complete").read_text() == (folder / "NODE.SHA256SUMS").read_text()
        assert not (folder / "wheels.tar").exists()


@pytest.mark.card
def test_preinstalled_capturelab_runs_on_arm64(card: Path) -> None:
    with mounted_root(card) as root:
        out = subprocess.run(
            ["chroot", str(root), "/opt/capturelab/venv/bin/python", "-c",
             "import platform, confluent_kafka, zstandard; from capturelab.cli import main; "
             "print(platform.machine())"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert out.strip() == "aarch64"
        version = subprocess.run(["chroot", str(root), "/opt/capturelab/venv/bin/capturelab", "--version"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert version.startswith("capturelab ")
