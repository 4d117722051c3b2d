"""After converge, idempotence and a reboot: the array, its XFS geometry and the mount are there."""

from __future__ import annotations

import re

MEMBERS = [f"nvme{i}n1" for i in range(8)]
CHUNK_KIB = 512


def test_md0_is_an_active_raid0_of_eight_members(host):
    mdstat = host.file("/proc/mdstat").content_string
    line = next(row for row in mdstat.splitlines() if row.startswith("md0 :"))
    assert "active raid0" in line
    assert sorted(re.findall(r"(nvme\dn1)\[\d\]", line)) == MEMBERS
    assert f"{CHUNK_KIB}k chunks" in mdstat
    detail = host.check_output("mdadm --detail /dev/md0")
    assert re.search(r"Raid Level : raid0", detail)
    assert re.search(rf"Chunk Size : {CHUNK_KIB}K", detail)
    assert re.search(r"Raid Devices : 8", detail)


def test_xfs_stripe_is_chunk_times_members(host):
    info = host.check_output("xfs_info /srv/capture")
    bsize = int(re.search(r"^data\s+=\s+bsize=(\d+)", info, re.MULTILINE).group(1))
    sunit, swidth = (int(x) for x in re.search(r"sunit=(\d+)\s+swidth=(\d+) blks", info).groups())
    assert sunit * bsize == CHUNK_KIB * 1024
    assert swidth == 8 * sunit


def test_mounted_noatime_by_uuid(host):
    mount = host.mount_point("/srv/capture")
    assert mount.exists and mount.filesystem == "xfs"
    assert "noatime" in mount.options
    uuid = host.check_output("blkid -s UUID -o value /dev/md0").strip()
    fstab = host.file("/etc/fstab").content_string
    assert re.search(rf"^UUID={uuid}\s+/srv/capture\s+xfs\s+defaults,noatime", fstab, re.M)


def test_array_persisted_in_mdadm_conf(host):
    uuid = re.search(r"UUID=(\S+)", host.check_output("mdadm --detail --brief /dev/md0")).group(1)
    conf = host.file("/etc/mdadm/mdadm.conf").content_string
    assert re.search(rf"^ARRAY /dev/md0 .*UUID={uuid}", conf, re.M)


def test_survived_the_reboot(host):
    # side_effect rebooted the VM: uptime is short and the array came back without the role
    uptime = float(host.file("/proc/uptime").content_string.split()[0])
    assert uptime < 1800
    assert host.run("touch /srv/capture/.write-test && rm /srv/capture/.write-test").rc == 0
