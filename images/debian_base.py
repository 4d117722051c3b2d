"""Shared pyinfra steps for every Debian image the lab builds (node containers and the storage VM)."""

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, server


@deploy("Debian base: apt sources, minimal installs, current lists")
def apt_basics(mirror: str, suite: str, security_mirror: str | None = None) -> None:
    security = security_mirror or f"{mirror}-security"
    files.put(
        name="apt sources: the suite, its updates and security",
        src=StringIO(
            f"deb {mirror} {suite} main\n"
            f"deb {mirror} {suite}-updates main\n"
            f"deb {security} {suite}-security main\n"
        ),
        dest="/etc/apt/sources.list",
        mode="644",
    )
    files.put(
        name="apt: no recommends, as on a minimal server install",
        src=StringIO('APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'),
        dest="/etc/apt/apt.conf.d/90capturelab-minimal",
        mode="644",
    )
    server.shell(
        name="apt lists are current (Ansible's apt module needs them)",
        commands=["apt-get update -q && apt-get clean"],
    )


@deploy("Debian base: a fresh machine identity at first boot")
def fresh_identity() -> None:
    server.shell(
        name="no machine id baked in; each node gets its own at first boot",
        commands=["truncate -s 0 /etc/machine-id && rm -f /var/lib/dbus/machine-id"],
    )
