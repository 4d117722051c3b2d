"""The lab's and molecule's Ansible settings that every task's cost depends on.

The containers use the docker connection, which pipelines (one ``docker exec`` per module, not
five) only when the global ``[defaults] pipelining`` is on; ``[ssh_connection] pipelining`` is
read by the ssh connection alone (the storage VM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _effective(setting: str) -> object:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    argv = [str(Path(sys.executable).with_name("ansible-config")), "dump", "--format", "json"]
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    (entry,) = [
        e for e in json.loads(out.stdout) if isinstance(e, dict) and e.get("name") == setting
    ]
    return entry["value"]


def test_the_lab_pipelines_on_every_connection() -> None:
    assert _effective("ANSIBLE_PIPELINING") is True


def test_molecule_pipelines_too() -> None:
    config = yaml.safe_load((REPO / ".config/molecule/config.yml").read_text())
    assert config["provisioner"]["config_options"]["defaults"]["pipelining"] is True
