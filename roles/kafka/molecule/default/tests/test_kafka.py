"""Verify a single KRaft node: service, listeners, quorum, topics, clients (secure or sim PLAINTEXT)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from capturelab.gateway import CAPTURE_TOPIC, CONTROL_TOPIC, PLAINTEXT_PORT, SASL_PORT

CP = "/opt/kafka/current/libs/*"
FILTERS = Path(__file__).resolve().parents[3] / "filter_plugins" / "kafka.py"


def _filters():
    spec = importlib.util.spec_from_file_location("kafka_filters", FILTERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hv(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def secure(hv) -> bool:
    return bool(hv.get("kafka_security_enabled", False))


@pytest.fixture(scope="module")
def ip(host) -> str:
    return host.check_output("hostname -I").split()[0]


@pytest.fixture(scope="module")
def admin(secure) -> list[str]:
    """Bootstrap and client settings for Kafka's tools, as the role's own admin client."""
    if secure:
        return [
            "--bootstrap-server",
            f"127.0.0.1:{SASL_PORT}",
            "--command-config",
            "/etc/kafka/admin.properties",
        ]
    return ["--bootstrap-server", f"127.0.0.1:{PLAINTEXT_PORT}"]


def _java(host, main: str, *args: str) -> str:
    return host.check_output(f"java -cp '{CP}' {main} {' '.join(args)}")


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


def test_listeners(host, secure):
    assert host.socket("tcp://0.0.0.0:9093").is_listening
    assert host.socket(f"tcp://0.0.0.0:{SASL_PORT}").is_listening == secure
    assert host.socket(f"tcp://0.0.0.0:{PLAINTEXT_PORT}").is_listening != secure


def test_quorum_has_a_leader(host, admin):
    out = _java(
        host, "org.apache.kafka.tools.MetadataQuorumCommand", *admin, "describe", "--status"
    )
    leader = next(line for line in out.splitlines() if line.startswith("LeaderId:"))
    assert leader.split(":")[1].strip() == "1"


def test_storage_formatted_with_derived_cluster_id(host):
    meta = host.file("/var/lib/kafka/metadata/meta.properties").content_string
    props = dict(
        line.split("=", 1) for line in meta.splitlines() if "=" in line and not line.startswith("#")
    )
    assert props["node.id"] == "1"
    assert len(props["cluster.id"]) == 22
    assert host.file("/etc/kafka/server.properties").contains(f"Cluster {props['cluster.id']}")


def _topic_summary(host, admin, topic: str) -> str:
    out = _java(host, "org.apache.kafka.tools.TopicCommand", *admin, "--describe", "--topic", topic)
    return out.splitlines()[0]


def test_topics_with_declared_configs(host, admin):
    capture = _topic_summary(host, admin, CAPTURE_TOPIC)
    assert "PartitionCount: 6" in capture
    assert "ReplicationFactor: 1" in capture
    assert "retention.ms=432000000" in capture, "120 h"
    assert "cleanup.policy=delete" in capture
    control = _topic_summary(host, admin, CONTROL_TOPIC)
    assert "cleanup.policy=compact" in control
    assert "retention.ms=-1" in control


def _client_config(host, hv, principal: str) -> str:
    """A Java client properties file for ``principal`` (TLS + SCRAM) on the node; returns its path."""
    password = _filters().kafka_scram_password(hv["kafka_principal_secret"], principal)
    path = f"/tmp/client-{principal}.properties"
    host.run(
        f"cat > {path} <<'EOF'\n"
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{principal}" password="{password}";\n'
        "ssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/tls/ca.pem\nEOF\nchmod 600 "
        + path
    )
    return path


def _console(host, ip, tool: str, config: str, *args: str):
    """Run one of Kafka's console consumers (org.apache.kafka.tools.consumer) as a principal."""
    return host.run(
        f"java -cp '{CP}' org.apache.kafka.tools.consumer.{tool} --bootstrap-server {ip}:{SASL_PORT} "
        f"{'--producer.config' if tool == 'ConsoleProducer' else '--consumer.config'} {config} "
        + " ".join(args)
    )


def test_round_trip(host, ip, hv, secure):
    """A collector principal writes, the sink reads; TLS + SCRAM when secure.

    Secure: Kafka's own Java console clients. Debian bookworm's kcat links librdkafka 2.0.2,
    whose SCRAM client-final-message Kafka 4.x rejects (fixed in librdkafka 2.6.1:
    confluentinc/librdkafka#4895, edenhill/kcat#462); kcat is used over the sim's PLAINTEXT.
    """
    marker = uuid.uuid4().hex
    if not secure:
        host.check_output(
            f"echo '{marker}' | kcat -b {ip}:{PLAINTEXT_PORT} -P -t {CAPTURE_TOPIC} -k collector-test "
            "-X acks=all -X enable.idempotence=true"
        )
        consumed = host.check_output(
            f"kcat -b {ip}:{PLAINTEXT_PORT} -C -t {CAPTURE_TOPIC} -o beginning -e -J -q"
        )
        messages = [json.loads(line) for line in consumed.splitlines() if line.strip()]
        assert any(m["payload"] == marker and m["key"] == "collector-test" for m in messages)
        return
    produced = host.run(
        f"echo 'collector-test:{marker}' | java -cp '{CP}' org.apache.kafka.tools.ConsoleProducer "
        f"--bootstrap-server {ip}:{SASL_PORT} --topic {CAPTURE_TOPIC} --producer.config "
        f"{_client_config(host, hv, 'collector-test')} --property parse.key=true --property key.separator=: "
        "--producer-property acks=all --producer-property enable.idempotence=true"
    )
    assert produced.rc == 0, produced.stderr
    sink = _client_config(host, hv, "sink")
    wanted = f"collector-test\t{marker}"
    for _attempt in range(3):
        # The group's first join creates __consumer_offsets and waits out the initial rebalance
        # delay; on a loaded 2-core CI machine that has taken longer than one 30 s read (CI stop
        # 28). Nothing is committed by a read that saw nothing, so the next one starts over.
        consumed = _console(
            host,
            ip,
            "ConsoleConsumer",
            sink,
            f"--topic {CAPTURE_TOPIC}",
            "--group sink",
            "--from-beginning",
            "--timeout-ms 30000",
            "--property print.key=true",
        )
        if wanted in consumed.stdout:
            break
    assert wanted in consumed.stdout, consumed.stderr[-2000:]


def test_round_trip_with_librdkafka_over_tls_scram(ip, hv, secure):
    """A third-party client over TLS + SCRAM: librdkafka 2.16 (confluent-kafka's wheel).

    Debian's kcat cannot do this (librdkafka 2.0.2, see above); this is the client every capturelab
    tier uses. It runs on the controller against the container, trusting only the lab CA.
    """
    if not secure:
        pytest.skip("TLS and SCRAM are off in this scenario")
    from confluent_kafka import Consumer, Producer  # noqa: PLC0415 - only the secure case needs it

    def conf(principal: str) -> dict[str, str]:
        return _librdkafka(ip, hv, principal)

    marker = uuid.uuid4().hex.encode()
    producer = Producer({**conf("collector-test"), "acks": "all", "enable.idempotence": True})
    producer.produce(CAPTURE_TOPIC, key=b"collector-test", value=marker)
    assert producer.flush(60) == 0
    consumer = Consumer({**conf("sink"), "group.id": "sink", "auto.offset.reset": "earliest"})
    consumer.subscribe([CAPTURE_TOPIC])
    found = False
    deadline = time.monotonic() + 60
    while not found and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        found = msg is not None and msg.error() is None and msg.value() == marker
    consumer.close()
    assert found, "the sink principal did not read the record over TLS + SCRAM"


def _librdkafka(ip: str, hv, principal: str) -> dict[str, str]:
    """confluent-kafka settings for ``principal`` over TLS + SCRAM, trusting the lab CA only."""
    ca = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pki" / "ca.crt"
    return {
        "bootstrap.servers": f"{ip}:{SASL_PORT}",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": principal,
        "sasl.password": _filters().kafka_scram_password(hv["kafka_principal_secret"], principal),
        "ssl.ca.location": str(ca),
    }


def test_acl_the_sink_cannot_write_and_a_collector_reads_no_topic(ip, hv, secure):
    """Issue 18 part 2's ACLs by name: collectors write (capture, control) and read nothing;
    the sink reads and writes nothing."""
    if not secure:
        pytest.skip("the sim's PLAINTEXT listener has no principals or ACLs")
    from confluent_kafka import Consumer, KafkaError, Producer  # noqa: PLC0415

    errors: list[int] = []
    sink = Producer({**_librdkafka(ip, hv, "sink"), "message.timeout.ms": 20000})
    for topic in (CAPTURE_TOPIC, CONTROL_TOPIC):
        sink.produce(topic, value=b"forged", key=b"sink",
                     on_delivery=lambda err, _m: errors.append(err.code() if err else 0))  # fmt: skip
    sink.flush(40)
    assert errors == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 2, errors
    reader = Consumer({**_librdkafka(ip, hv, "collector-test"), "group.id": "collector-test",
                       "auto.offset.reset": "earliest"})  # fmt: skip
    reader.subscribe([CONTROL_TOPIC])
    refused = None
    deadline = time.monotonic() + 30
    while refused is None and time.monotonic() < deadline:
        msg = reader.poll(1.0)
        if msg is not None and msg.error() is not None:
            refused = msg.error().code()
        assert msg is None or msg.error() is not None, "a collector read the control topic"
    reader.close()
    assert refused in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    ), refused


def test_acl_denies_a_collector_reading(host, ip, hv, secure):
    if not secure:
        pytest.skip("the sim's PLAINTEXT listener has no principals or ACLs")
    # Assigned partition, no consumer group: what is refused is reading the topic itself.
    attempt = _console(
        host,
        ip,
        "ConsoleConsumer",
        _client_config(host, hv, "collector-test"),
        f"--topic {CAPTURE_TOPIC}",
        "--partition 0",
        "--offset earliest",
        "--timeout-ms 15000",
    )
    out = attempt.stdout + attempt.stderr
    assert "TopicAuthorizationException" in out, out[-2000:]
    assert f"Not authorized to access topics: [{CAPTURE_TOPIC}]" in out


def test_tls_certificate_from_the_lab_ca(host, secure):
    if not secure:
        pytest.skip("TLS is off in this scenario")
    out = host.run(
        f"echo | openssl s_client -connect 127.0.0.1:{SASL_PORT} -CAfile /etc/kafka/tls/ca.pem -verify_return_error"
    )
    assert "Verify return code: 0 (ok)" in out.stdout
    key = host.file("/etc/kafka/tls/node.key")
    assert key.mode == 0o600 and key.user == "root"
