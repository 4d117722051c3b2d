"""With storage_array_force the member that carried ext4 was wiped and the array built over it."""

from __future__ import annotations

import re


def test_array_built_over_the_wiped_member(host):
    mdstat = host.file("/proc/mdstat").content_string
    line = next(row for row in mdstat.splitlines() if row.startswith("md0 :"))
    assert "active raid0" in line
    assert sorted(re.findall(r"(nvme\dn1)\[\d\]", line)) == [f"nvme{i}n1" for i in range(4)]


def test_the_old_filesystem_is_gone(host):
    assert (
        host.check_output("blkid -p -s TYPE -o value /dev/nvme2n1").strip() == "linux_raid_member"
    )
    assert host.mount_point("/srv/capture").filesystem == "xfs"
