"""The gateway's client settings live in one place per side, and every tier follows them.

``roles/capturelab_gateway/defaults/main.yml`` (Ansible) and ``capturelab.gateway`` (Python) hold
the group, the ports and the topic names; the kafka role, the common role's firewall, the
collector and the sink take them from there. Overriding the capture topic's one variable must
reach the kafka role's topic list and both clients' configs, and the old name must be written
nowhere but those two places; overriding a port must move the broker's listener, the gateway's
firewall rule and the clients' bootstrap servers, and leave the old port in none of them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from capturelab import gateway

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "capturelab_gateway"
PLAYBOOK = Path(__file__).parent / "playbooks" / "render_gateway_clients.yml"
CLIENT_OK = {
    "collector_lab_secret": "a-lab-secret-of-16+chars",
    "collector_region": "us",
    "sink_region": "us",
}


def _filters() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gateway_filters", ROLE / "filter_plugins" / "gateway.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_role_defaults_equal_the_python_module():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert {k: v for k, v in defaults.items() if k != "capturelab_gateway_ca_file"} == {
        "capturelab_gateway_group": gateway.GATEWAY_GROUP,
        "capturelab_gateway_plaintext_port": gateway.PLAINTEXT_PORT,
        "capturelab_gateway_sasl_port": gateway.SASL_PORT,
        "capturelab_gateway_controller_port": gateway.CONTROLLER_PORT,
        "capturelab_gateway_capture_topic": gateway.CAPTURE_TOPIC,
        "capturelab_gateway_control_topic": gateway.CONTROL_TOPIC,
    }


def test_bootstrap_servers_follow_the_advertised_address():
    bootstrap = _filters().capturelab_bootstrap_servers
    hostvars = {
        "gw-1": {"ansible_default_ipv4": {"address": "10.0.0.1"}, "lab_ipv4": "172.30.0.9"},
        "gw-2": {"lab_ipv4": "172.30.0.12"},
        "gw-3": {"ansible_default_ipv4": {}},
    }
    assert bootstrap(["gw-1", "gw-2", "gw-3"], hostvars, "9094") == (
        "10.0.0.1:9094,172.30.0.12:9094,gw-3:9094"
    )
    assert bootstrap([], hostvars, 9092) == ""


def _render(tmp_path: Path, env: dict[str, str], extra: dict[str, object]) -> dict[str, str]:
    out = tmp_path / "out"
    out.mkdir()
    inventory = {
        "all": {
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "children": {
                "gateways": {"hosts": {"gw-1": {}}},
                "collectors": {"hosts": {"pi5-1": {"client_role": "collector"}}},
                "storage": {"hosts": {"storage-01": {"client_role": "sink"}}},
            },
        }
    }
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    res = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(PLAYBOOK),
         "-e", json.dumps({"out_dir": str(out), **CLIENT_OK, **extra})],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:]
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


PORTS = {
    "plaintext": gateway.PLAINTEXT_PORT,
    "controller": gateway.CONTROLLER_PORT,
    "sasl": gateway.SASL_PORT,
}
MOVED = {"plaintext": 19092, "controller": 19093, "sasl": 19094}


def _firewall_ports(nft: str) -> set[int]:
    return {int(m) for m in re.findall(r"tcp dport (\d+) accept", nft)}


@pytest.mark.parametrize(
    ("extra", "topic", "ports"),
    [
        ({}, gateway.CAPTURE_TOPIC, PORTS),
        ({"capturelab_gateway_capture_topic": "lab.frames",
          **{f"capturelab_gateway_{k}_port": v for k, v in MOVED.items()}},
         "lab.frames", MOVED),
    ],
)  # fmt: skip
def test_one_variable_reaches_every_tier(
    tmp_path: Path, tool_env: dict[str, str], extra: dict[str, object], topic: str,
    ports: dict[str, int],
):  # fmt: skip
    rendered = _render(tmp_path, tool_env, extra)
    assert set(rendered) == {
        "kafka_topics.json", "server.properties", "nftables.conf", "collector.yml", "sink.yml"
    }  # fmt: skip
    assert json.loads(rendered["kafka_topics.json"]) == [topic, gateway.CONTROL_TOPIC]
    for name in ("collector.yml", "sink.yml"):
        config = yaml.safe_load(rendered[name])
        assert config["capture_topic"] == topic, name
        assert config["control_topic"] == gateway.CONTROL_TOPIC, name
        assert config["bootstrap_servers"] == f"gw-1:{ports['plaintext']}", name
    props = rendered["server.properties"]
    assert f"PLAINTEXT://0.0.0.0:{ports['plaintext']}" in props
    assert f"CONTROLLER://0.0.0.0:{ports['controller']}" in props
    assert f"1@gw-1:{ports['controller']}" in props
    opened = _firewall_ports(rendered["nftables.conf"])
    assert set(ports.values()) <= opened, opened
    if ports != PORTS:
        assert not set(PORTS.values()) & opened, opened
        assert not any(re.search(rf"\b{p}\b", props) for p in PORTS.values()), props
    if topic != gateway.CAPTURE_TOPIC:
        assert not any(gateway.CAPTURE_TOPIC in text for text in rendered.values())


# The two places that define the names; everything else reads them.
DEFINED_IN = {
    "roles/capturelab_gateway/defaults/main.yml",
    "roles/capturelab_gateway/meta/argument_specs.yml",
    "src/capturelab/gateway.py",
}


SECURE = {
    "kafka_security_enabled": True,
    "kafka_plaintext_enabled": False,
    "kafka_keystore_password": "render-keystore-pw",
    "kafka_principal_secret": "render-principal-secret-0123456789",
    "collector_security_enabled": True,
    "collector_kafka_password": "pw",
    "sink_security_enabled": True,
    "sink_kafka_password": "pw",
}


@pytest.mark.parametrize("sasl", [gateway.SASL_PORT, 19094])
def test_the_sasl_port_reaches_broker_firewall_and_clients(
    tmp_path: Path, tool_env: dict[str, str], sasl: int
):
    """With TLS + SASL the broker listens, advertises and is reached on capturelab_gateway_sasl_port."""
    rendered = _render(tmp_path, tool_env, {**SECURE, "capturelab_gateway_sasl_port": sasl})
    props = rendered["server.properties"]
    assert f"SASL_SSL://0.0.0.0:{sasl}" in props, props
    assert re.search(rf"advertised\.listeners=.*SASL_SSL://[^,\s]+:{sasl}", props), props
    assert "PLAINTEXT://" not in props.replace("SASL_PLAINTEXT", ""), props
    assert sasl in _firewall_ports(rendered["nftables.conf"])
    for name in ("collector.yml", "sink.yml"):
        assert yaml.safe_load(rendered[name])["bootstrap_servers"] == f"gw-1:{sasl}", name


def test_the_names_are_written_nowhere_else():
    where = [REPO / d for d in ("roles", "src", "playbooks", "inventory", "validation", "images")]
    literals = (gateway.CAPTURE_TOPIC, gateway.CONTROL_TOPIC)
    found = sorted(
        str(path.relative_to(REPO))
        for root in where
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".yml", ".yaml", ".j2", ".cfg", ".ini", ".toml"}
        and any(name in path.read_text(errors="replace") for name in literals)
    )
    assert set(found) == DEFINED_IN, (
        f"the topic names are also written in {sorted(set(found) - DEFINED_IN)}"
    )
