"""How the suites reach each node: Ansible's own connection settings, rendered once.

The inventory's connection variables may be Jinja templates (the sim lab's container names, the
VM's forwarded port and key path), which only Ansible renders. One ad-hoc ``debug`` run (it runs
on the controller and contacts no host) renders them for every host; ssh and docker connections
then become native Testinfra hosts (a command costs a ``docker exec`` or one ssh round trip on a
shared master connection), and anything else goes through Ansible itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from capturelab.errors import HostEnvironmentError
from capturelab.lab.process import venv_tool

FIELDS = {
    "connection": "ansible_connection | default('ssh')",
    "host": "ansible_host | default(inventory_hostname)",
    "port": "ansible_port | default(none)",
    "user": "ansible_user | default(none)",
    "key": "ansible_ssh_private_key_file | default(ansible_private_key_file | default(none))",
    "ssh_args": "ansible_ssh_common_args | default('')",
    "become": "ansible_become | default(false)",
}
SSH = ("ssh", "ansible.builtin.ssh", "smart")
DOCKER = ("docker", "community.docker.docker")
LOCAL = ("local", "ansible.builtin.local")


@dataclass(frozen=True)
class Connection:
    node: str
    connection: str
    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    ssh_args: str = ""
    become: bool = False

    def spec(self, inventory: Path) -> tuple[str, dict[str, Any]]:
        """A Testinfra host spec and its keyword arguments."""
        user = f"{quote(self.user)}@" if self.user else ""
        if self.connection in DOCKER and not self.become:
            return f"docker://{user}{self.host}", {}
        if self.connection in LOCAL:
            return "local://", {}
        if self.connection in SSH and not self.become:
            port = f":{self.port}" if self.port else ""
            kwargs: dict[str, Any] = {
                "ssh_extra_args": self.ssh_args.strip(),
                # one master connection per node for the run (%C, doubled for testinfra: a hash of the target)
                "controlpath": str(Path(tempfile.gettempdir()) / "capturelab-ssh-%%C"),
            }
            if self.key:
                kwargs["ssh_identity_file"] = self.key
            return f"ssh://{user}{self.host}{port}", kwargs
        return (f"ansible://{self.node}?ansible_inventory={inventory}&force_ansible=true", {})


def parse_rendered(stdout: str) -> dict[str, Connection]:
    """The ``ansible.posix.json`` output of the rendering run -> one Connection per host."""
    start = stdout.find("\n{") + 1 if not stdout.startswith("{") else 0  # after any other output
    try:
        data, _ = json.JSONDecoder().raw_decode(stdout, start)
    except json.JSONDecodeError as exc:
        raise HostEnvironmentError(f"ansible's JSON output could not be parsed: {exc}") from None
    out: dict[str, Connection] = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for node, res in task.get("hosts", {}).items():
                msg = res.get("msg")
                if res.get("failed") or not isinstance(msg, dict):
                    raise HostEnvironmentError(
                        f"{node}: its connection variables do not render: {res.get('msg')}"
                    )
                port = msg.get("port")
                key = msg.get("key")
                out[node] = Connection(
                    node=node,
                    connection=str(msg["connection"]),
                    host=str(msg["host"]),
                    port=int(port) if port not in (None, "") else None,
                    user=str(msg["user"]) if msg.get("user") else None,
                    key=str(Path(str(key)).expanduser().resolve()) if key else None,
                    ssh_args=str(msg.get("ssh_args") or ""),
                    become=bool(msg.get("become")),
                )
    return out


def rendered_connections(inventory: Path, pattern: str = "all") -> dict[str, Connection]:
    expression = "{" + ", ".join(f"'{k}': {v}" for k, v in FIELDS.items()) + "}"
    env = dict(
        os.environ,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    )
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # profile_tasks, timer: they print on stdout too
    proc = subprocess.run(  # noqa: S603 - argv we built, no shell
        [
            venv_tool("ansible"),
            "-i",
            str(inventory),
            pattern,
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={{{{ {expression} }}}}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if proc.returncode not in (0, 2):
        raise HostEnvironmentError(
            f"rendering the connections of {inventory} failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    return parse_rendered(proc.stdout)
