"""pyinfra deploy (run with ``@docker/<container>``): turn an imported rootfs into a lab node image.

Step two of the node image. The harness starts a container from the imported rootfs, runs
this deploy against it (from the images/ folder, so ``debian_base`` imports) and commits the
result under a tag derived from the hash of the recipe files (``capturelab/node:<arch>-<hash>``),
so the image is rebuilt only when a recipe changes. The result looks like a freshly installed
Debian / Raspberry Pi OS host: systemd as PID 1, python3 for Ansible, apt sources, no machine
id, nothing capturelab-specific (roles add that).
"""

from debian_base import apt_basics, fresh_identity
from pyinfra import host
from pyinfra.operations import server

suite = host.data.get("suite", "bookworm")
mirror = host.data.get("mirror")
if not mirror:
    raise SystemExit("images/node.py: --data mirror=... is required")

apt_basics(mirror=mirror, suite=suite)

server.shell(
    name="systemd in a container: no consoles to spawn, nothing that needs real hardware",
    commands=[
        "systemctl mask getty@tty1.service console-getty.service serial-getty@.service "
        "systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket "
        "sys-kernel-config.mount sys-kernel-debug.mount",
    ],
)

fresh_identity()
