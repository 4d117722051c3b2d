"""pyinfra deploy (run with ``@local``): a Debian root filesystem made by debootstrap.

Step one of every node image. The harness (``capturelab lab images``) runs it as::

    pyinfra -y @local images/rootfs.py --data arch=arm64 --data suite=bookworm \
        --data mirror=http://deb.debian.org/debian --data target=/cache/rootfs-arm64-<hash> \
        --data include=python3,systemd

A foreign architecture (arm64 on an amd64 controller) runs through qemu-user-static and
binfmt_misc, which the harness checks before it starts. The rootfs is marked complete only
when debootstrap succeeded, so an interrupted build is redone rather than reused.
"""

from pyinfra import host
from pyinfra.operations import files, server

arch = host.data.get("arch")
suite = host.data.get("suite", "bookworm")
mirror = host.data.get("mirror")
target = host.data.get("target")
include = host.data.get("include", "")
variant = host.data.get("variant", "minbase")

for name, value in (("arch", arch), ("mirror", mirror), ("target", target)):
    if not value:
        raise SystemExit(f"images/rootfs.py: --data {name}=... is required")

marker = f"{target}/.capturelab-rootfs-complete"

files.directory(name="Rootfs parent directory exists", path=str(target).rsplit("/", 1)[0])

server.shell(
    name=f"debootstrap {suite} ({arch}, {variant})",
    commands=[
        # Redo from scratch unless a previous run completed: a half-made rootfs is never reused.
        f"test -e {marker} || {{ rm -rf {target} && "
        f"debootstrap --arch={arch} --variant={variant} --include={include} "
        f"{suite} {target} {mirror} && touch {marker}; }}",
    ],
)
