"""pyinfra deploy (run with ``@local``): a Raspberry Pi OS image file -> a ready collector card.

    pyinfra -y @local images/pi5/card.py --data image=raspios-bookworm-arm64-lite.img \
        --data hostname=collector-01 --data ssh_key=~/.ssh/id_ed25519.pub \
        --data wheelhouse=~/.cache/capturelab/wheelhouse/arm64-py3.11-<key> \
        [--data address=10.10.1.21/24 --data gateway=10.10.1.1 --data dns=10.10.1.1]

``capturelab lab card`` runs it with the right wheelhouse. What it does to the image, as root:

- boot partition (FAT, edited with mtools at its byte offset; this kernel has no vfat): an
  empty ``ssh`` file, so sshd starts on first boot;
- root partition (ext4, mounted through a loop device at its byte offset; no partition-table
  support needed): the hostname, an admin account with the SSH key and passwordless sudo (no
  password login), a NetworkManager profile for the wired port (DHCP, or a static address),
  the capturelab venv and wheelhouse preinstalled (aarch64 wheels, staged on the controller),
  a fresh machine id, no SSH host keys (Raspberry Pi OS makes new ones on first boot, so cards
  written from one image never share keys).

No consent record and no lab secret are baked in: the collector role deploys those. Running
the deploy twice leaves the same card.
"""

import atexit
import shlex
import shutil
import tempfile
from pathlib import Path

from pyinfra import host
from pyinfra.operations import server

from capturelab.lab.card import card_partitions, nm_connection, stage_venv
from capturelab.lab.wheelhouse import ARCHIVE, NODE_MANIFEST

image = Path(str(host.data.get("image") or "")).expanduser()
hostname = str(host.data.get("hostname") or "")
ssh_key = Path(str(host.data.get("ssh_key") or "")).expanduser()
wheelhouse = Path(str(host.data.get("wheelhouse") or "")).expanduser()
admin = str(host.data.get("admin_user") or "capturelab-admin")

for name, ok in (("image", image.is_file()), ("hostname", bool(hostname)),
                 ("ssh_key", ssh_key.is_file()), ("wheelhouse", wheelhouse.is_dir())):  # fmt: skip
    if not ok:
        raise SystemExit(f"images/pi5/card.py: --data {name}=... is missing or does not exist")
key_text = ssh_key.read_text().strip()
if not key_text.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in key_text:
    raise SystemExit(f"images/pi5/card.py: {ssh_key} is not an SSH public key")

boot, root = card_partitions(image)
# The deploy file's globals may be collected once pyinfra has read its operations, which is before
# they run: a TemporaryDirectory object would then delete the staging tree too early. Remove it
# when the pyinfra process exits instead.
stage = Path(tempfile.mkdtemp(prefix="capturelab-card-"))
atexit.register(shutil.rmtree, stage, ignore_errors=True)
tree = stage / "root"
(stage / "boot").mkdir()
(stage / "boot" / "ssh").write_text("")
(stage / "authorized_keys").write_text(key_text + "\n")
nm = tree / "etc/NetworkManager/system-connections/capturelab-wired.nmconnection"
nm.parent.mkdir(parents=True)
nm.write_text(
    nm_connection(
        str(host.data.get("address") or ""),
        str(host.data.get("gateway") or ""),
        str(host.data.get("dns") or ""),
    )
)
(tree / "etc/sudoers.d").mkdir(parents=True)
(tree / f"etc/sudoers.d/{admin}").write_text(f"{admin} ALL=(ALL) NOPASSWD:ALL\n")
(tree / "etc/ssh/sshd_config.d").mkdir(parents=True)
(tree / "etc/ssh/sshd_config.d/capturelab.conf").write_text(
    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
)
stage_venv(tree, wheelhouse)
wh_target = tree / "opt/capturelab/wheelhouse" / wheelhouse.name
shutil.copytree(wheelhouse, wh_target, ignore=shutil.ignore_patterns(ARCHIVE))
# As the capturelab_venv role leaves a finished copy: it finds this one and sends nothing.
shutil.copy(wh_target / NODE_MANIFEST, wh_target / ".complete")

img = shlex.quote(str(image))
server.shell(
    name="Boot partition: enable sshd on first boot (mtools at the partition's offset)",
    commands=[f"mcopy -o -i {img}@@{boot.offset} {stage}/boot/ssh ::ssh"],
)

script = f"""
set -euo pipefail
M=$(mktemp -d)
L=$(losetup --find --show --offset {root.offset} --sizelimit {root.size} {img})
cleanup() {{ umount "$M" 2>/dev/null || true; losetup -d "$L"; rmdir "$M"; }}
trap cleanup EXIT
mount "$L" "$M"
test -e "$M/etc/os-release"
grep -q '^{admin}:' "$M/etc/passwd" || useradd -R "$M" -m -s /bin/bash -c 'capturelab admin' {admin}
cp -a {stage}/root/. "$M/"
chown -R root:root "$M/opt/capturelab" "$M/etc/sudoers.d/{admin}" "$M/etc/NetworkManager" "$M/etc/ssh/sshd_config.d"
chmod 0600 "$M/etc/NetworkManager/system-connections/capturelab-wired.nmconnection"
chmod 0440 "$M/etc/sudoers.d/{admin}"
ids=$(awk -F: '$1=="{admin}" {{print $3":"$4}}' "$M/etc/passwd")
install -d -m 0700 -o "${{ids%:*}}" -g "${{ids#*:}}" "$M/home/{admin}/.ssh"
install -m 0600 -o "${{ids%:*}}" -g "${{ids#*:}}" {stage}/authorized_keys "$M/home/{admin}/.ssh/authorized_keys"
echo {shlex.quote(hostname)} > "$M/etc/hostname"
sed -i '/^127\\.0\\.1\\.1[[:space:]]/d' "$M/etc/hosts"
printf '127.0.1.1\\t%s\\n' {shlex.quote(hostname)} >> "$M/etc/hosts"
: > "$M/etc/machine-id"
rm -f "$M"/etc/ssh/ssh_host_*
rm -rf "$M/etc/capturelab"
sync
"""
server.shell(
    name="Root partition: hostname, admin and SSH key, network, capturelab venv (loop at offset)",
    commands=[f"bash -c {shlex.quote(script)}"],
)
