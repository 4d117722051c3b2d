"""Verify a single KRaft node: service, listeners, quorum, topics, a produce/consume round trip."""

from __future__ import annotations

import json
import uuid

import pytest

CP = "/opt/kafka/current/libs/*"


def _java(host, main: str, *args: str) -> str:
    return host.check_output(f"java -cp '{CP}' {main} {' '.join(args)}")


@pytest.fixture(scope="module")
def ip(host) -> str:
    return host.check_output("hostname -I").split()[0]


def test_service_running_hardened(host):
    svc = host.service("kafka")
    assert svc.is_running
    assert svc.is_enabled
    unit = host.file("/etc/systemd/system/kafka.service").content_string
    assert "kafka.Kafka /etc/kafka/server.properties" in unit
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "LimitNOFILE=",
    ):
        assert setting in unit
    assert host.check_output("systemctl show -p User --value kafka") == "kafka"


@pytest.mark.parametrize("port", [9092, 9093])
def test_listening(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_quorum_has_a_leader(host, ip):
    out = _java(
        host,
        "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-server",
        f"{ip}:9092",
        "describe",
        "--status",
    )
    assert "LeaderId:" in out
    leader = next(line for line in out.splitlines() if line.startswith("LeaderId:"))
    assert leader.split(":")[1].strip() == "1"


def test_storage_formatted_with_derived_cluster_id(host):
    meta = host.file("/var/lib/kafka/metadata/meta.properties").content_string
    props = dict(
        line.split("=", 1) for line in meta.splitlines() if "=" in line and not line.startswith("#")
    )
    assert props["node.id"] == "1"
    assert len(props["cluster.id"]) == 22
    assert props["cluster.id"] in host.file("/etc/kafka/server.properties").content_string


def _topic_summary(host, ip: str, topic: str) -> str:
    out = _java(
        host,
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        f"{ip}:9092",
        "--describe",
        "--topic",
        topic,
    )
    return out.splitlines()[0]


def test_topics_with_declared_configs(host, ip):
    capture = _topic_summary(host, ip, "capture.events")
    assert "PartitionCount: 6" in capture
    assert "ReplicationFactor: 1" in capture
    assert "retention.ms=432000000" in capture, "120 h"
    assert "cleanup.policy=delete" in capture
    control = _topic_summary(host, ip, "capture.control")
    assert "cleanup.policy=compact" in control
    assert "retention.ms=-1" in control


def test_round_trip_with_kcat(host, ip):
    marker = uuid.uuid4().hex
    host.check_output(
        f"echo '{marker}' | kcat -P -b {ip}:9092 -t capture.events -k collector-test "
        "-X acks=all -X enable.idempotence=true"
    )
    consumed = host.check_output(f"kcat -C -b {ip}:9092 -t capture.events -o beginning -e -J -q")
    messages = [json.loads(line) for line in consumed.splitlines() if line.strip()]
    assert any(m["payload"] == marker and m["key"] == "collector-test" for m in messages)
