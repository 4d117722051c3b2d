"""pyinfra deploy (run with ``@chroot/<rootfs>``): the storage node's VM image.

The storage node is a qemu VM in the sim lab because md RAID needs a real kernel (containers
share the host's, which has no md). The rootfs comes from images/rootfs.py with a Debian kernel,
mdadm and xfsprogs included; this deploy makes it bootable under qemu with ``-kernel``:

- root on the virtio disk by label, DHCP through systemd-networkd (qemu user networking),
  slirp's DNS,
- no SSH host keys and no authorised key baked in: a first-boot unit creates host keys and
  installs the lab's public key, which the harness passes on the kernel command line as
  ``capturelab.ssh_key=<base64>`` (so one image serves every lab, each with its own key).
"""

from io import StringIO

from debian_base import apt_basics, fresh_identity
from pyinfra import host
from pyinfra.operations import files, server

suite = host.data.get("suite", "bookworm")
mirror = host.data.get("mirror")
if not mirror:
    raise SystemExit("images/storage_vm.py: --data mirror=... is required")

apt_basics(mirror=mirror, suite=suite)

files.put(
    name="fstab: root by label",
    src=StringIO("LABEL=capturelab-root / ext4 defaults,noatime,errors=remount-ro 0 1\n"),
    dest="/etc/fstab",
    mode="644",
)

files.put(
    name="systemd-networkd: DHCP on the first Ethernet interface",
    src=StringIO("[Match]\nName=e*\n\n[Network]\nDHCP=ipv4\n"),
    dest="/etc/systemd/network/10-lab.network",
    mode="644",  # read by the systemd-network user, not root
)

files.put(
    name="the first-boot script",
    src=StringIO(
        """#!/bin/sh
# capturelab first boot: host keys, and the lab's authorised key from the kernel command line.
set -eu
ssh-keygen -A
for word in $(cat /proc/cmdline); do
  case "$word" in
    capturelab.ssh_key=*)
      install -d -m 700 /root/.ssh
      echo "${word#capturelab.ssh_key=}" | base64 -d > /root/.ssh/authorized_keys.new
      chmod 600 /root/.ssh/authorized_keys.new
      mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
      ;;
  esac
done
"""
    ),
    dest="/usr/local/sbin/capturelab-firstboot",
    mode="755",
)

files.put(
    name="the first-boot unit",
    src=StringIO(
        "[Unit]\n"
        "Description=capturelab: SSH host keys and the lab's authorised key\n"
        "Before=ssh.service\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/local/sbin/capturelab-firstboot\n"
        "RemainAfterExit=yes\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    dest="/etc/systemd/system/capturelab-firstboot.service",
    mode="644",
)

server.shell(
    # systemctl enable works offline (it only writes symlinks); pyinfra's systemd facts need a
    # running systemd, which a chroot has not.
    name="enable the first-boot unit, networkd and sshd",
    commands=["systemctl enable capturelab-firstboot.service systemd-networkd.service ssh.service"],
)

server.shell(
    name="no SSH host keys in the image",
    commands=["rm -f /etc/ssh/ssh_host_*"],
)

files.put(
    name="resolver: qemu user networking's DNS",
    src=StringIO("nameserver 10.0.2.3\n"),
    dest="/etc/resolv.conf",
    mode="644",
)

server.shell(
    name="mdadm: assemble only the arrays that mdadm.conf declares (AUTO -all)",
    # qemu boots this image with -kernel/-initrd taken from the cache, so the guest can never
    # rebuild the initramfs it boots from. That initramfs (built here, before any array exists)
    # would otherwise auto-assemble the storage array as /dev/md127 before the root filesystem's
    # mdadm.conf is read. With AUTO -all it assembles nothing undeclared, and udev on the root
    # filesystem assembles the array under the name the storage_array role declared (md0): the
    # outcome of a real node whose initramfs the role rebuilt with that ARRAY line.
    commands=[
        "grep -qx 'AUTO -all' /etc/mdadm/mdadm.conf || echo 'AUTO -all' >> /etc/mdadm/mdadm.conf",
        "update-initramfs -u -k all",
    ],
)

fresh_identity()
