"""Three brokers: while a bounded idempotent producer writes, one broker stops and comes back.

Every acknowledged record must be consumed exactly once, in order per key. This asserts zero
loss, not speed. Traffic goes only to the three containers molecule created.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

# One run for the cluster, not one per host.
testinfra_hosts = ["ansible://kafka-c1"]

BROKERS = ("kafka-c1", "kafka-c2", "kafka-c3")
VICTIM = "kafka-c2"
RECORDS = 9000
KEYS = ("collector-a", "collector-b", "collector-c")
PAUSE_S = 0.002  # ~500 records/s: the broker stop and start fall inside the run


def _ip(container: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    networks = json.loads(out)[0]["NetworkSettings"]["Networks"]
    return next(iter(networks.values()))["IPAddress"]


def _bootstrap() -> str:
    return ",".join(f"{_ip(c)}:9092" for c in BROKERS)


def _wait_kafka_active(container: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run(
            ["docker", "exec", container, "systemctl", "is-active", "kafka"],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.stdout.strip() == "active":
            return
        time.sleep(2)
    raise AssertionError(f"kafka on {container} did not come back within {timeout} s")


def test_quorum_of_three(host):
    out = host.check_output(
        "java -cp '/opt/kafka/current/libs/*' org.apache.kafka.tools.MetadataQuorumCommand "
        "--bootstrap-server 127.0.0.1:9092 describe --status"
    )
    voters = next(line for line in out.splitlines() if line.startswith("CurrentVoters:"))
    assert voters.count('"id"') == 3 or voters.count("id") >= 3, out
    props = host.file("/etc/kafka/server.properties").content_string
    assert "default.replication.factor=3" in props
    assert "min.insync.replicas=2" in props


def _produce_across_a_restart(
    bootstrap: str, topic: str
) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Produce RECORDS records; stop VICTIM a third of the way in, start it at two thirds."""
    acked: list[tuple[str, int]] = []
    errors: list[str] = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            key, seq = msg.value().decode().split(":")
            acked.append((key, int(seq)))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 180000,
        }
    )
    seqs = dict.fromkeys(KEYS, 0)
    action = None
    try:
        for i in range(RECORDS):
            key = KEYS[i % len(KEYS)]
            producer.produce(
                topic, key=key, value=f"{key}:{seqs[key]}".encode(), on_delivery=on_delivery
            )
            seqs[key] += 1
            producer.poll(0)
            if i == RECORDS // 3:
                action = subprocess.Popen(["docker", "stop", VICTIM])
            elif i == 2 * RECORDS // 3 and action is not None:
                action.wait(timeout=120)
                action = subprocess.Popen(["docker", "start", VICTIM])
            time.sleep(PAUSE_S)
        remaining = producer.flush(180)
    finally:
        if action is not None:
            action.wait(timeout=120)
    assert remaining == 0, f"{remaining} records still unacknowledged after 180 s"
    assert errors == [], f"delivery failures: {errors[:5]}"
    return acked, seqs


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[str, int]]:
    """Read the topic from the start until `expected` records (then 5 s more, to catch extras)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 180
    extra_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if len(seen) >= expected and extra_until is None:
                extra_until = time.monotonic() + 5
            if extra_until is not None and time.monotonic() > extra_until:
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                continue
            key, seq = msg.value().decode().split(":")
            seen.append((key, int(seq)))
    finally:
        consumer.close()
    return seen


def test_no_loss_no_duplicate_across_a_broker_restart():
    bootstrap = _bootstrap()
    topic = f"cluster-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"}
            )
        ]
    )[topic].result(timeout=60)

    acked, seqs = _produce_across_a_restart(bootstrap, topic)
    assert len(acked) == RECORDS
    seen = _consume_all(bootstrap, topic, RECORDS)

    assert len(seen) == len(set(seen)), "a record was consumed twice"
    assert set(seen) == set(acked), f"lost: {len(set(acked) - set(seen))}"
    for key in KEYS:
        per_key = [s for k, s in seen if k == key]
        assert per_key == list(range(seqs[key])), f"{key}: out of order or gaps"
    _wait_kafka_active(VICTIM)
