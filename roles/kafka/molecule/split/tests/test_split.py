"""Split roles: a controller that only controls, brokers that only serve, one working cluster."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

CONTROLLER = "kafka-s1"
BROKERS = ("kafka-s2", "kafka-s3")
QUORUM = (
    "java -cp '/opt/kafka/current/libs/*' org.apache.kafka.tools.MetadataQuorumCommand "
    "--bootstrap-server 127.0.0.1:9092 describe --status"
)


def _ip(container: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    return next(iter(json.loads(out)[0]["NetworkSettings"]["Networks"].values()))["IPAddress"]


def test_each_node_has_only_its_role(host):
    props = host.file("/etc/kafka/server.properties").content_string
    name = host.backend.get_hostname()
    if name == CONTROLLER:
        assert "process.roles=controller\n" in props
        assert host.socket("tcp://0.0.0.0:9093").is_listening
        assert not host.socket("tcp://0.0.0.0:9092").is_listening
    else:
        assert "process.roles=broker\n" in props
        assert host.socket("tcp://0.0.0.0:9092").is_listening
        assert not host.socket("tcp://0.0.0.0:9093").is_listening
        assert "default.replication.factor=2" in props
        assert "min.insync.replicas=1" in props


def test_brokers_see_the_single_controller_as_leader(host):
    if host.backend.get_hostname() == CONTROLLER:
        return
    out = host.check_output(QUORUM)
    assert "LeaderId:                1" in out or "LeaderId: 1" in " ".join(out.split()), out
    voters = next(line for line in out.splitlines() if line.startswith("CurrentVoters:"))
    assert voters.count('"id"') == 1, out


def test_round_trip_through_the_brokers(host):
    if host.backend.get_hostname() != BROKERS[0]:
        return
    bootstrap = ",".join(f"{_ip(b)}:9092" for b in BROKERS)
    topic = f"split-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=2)])[topic].result(60)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(200):
        producer.produce(topic, key=str(i % 4), value=str(i))
    assert producer.flush(60) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            seen.add(int(msg.value()))
        if len(seen) == 200:
            break
    consumer.close()
    assert seen == set(range(200))
