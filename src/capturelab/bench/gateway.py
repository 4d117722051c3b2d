"""``capturelab bench gateway``: Kafka's own ProducerPerformance vs capturelab's producer path.

Both run against the same broker, the same fresh topic, the same record size and the same
producer settings (``capturelab.transport``), alternating for ``rounds`` rounds; the median
round of each is reported with the ratio ours / Kafka-tool. Our records are real frames
(``capturelab.schema``: synthetic events, zstd, CRC) sized to the requested record size, sent
with confluent-kafka exactly as the collector sends them. Bounded: a fixed record count, and a
time limit on every step.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported at runtime

from capturelab.errors import CapturelabError, HostEnvironmentError, InputError
from capturelab.schema import (
    Batch,
    DeviceClass,
    EventFlag,
    InputEvent,
    KeyClass,
    encode_batch,
    pseudonymize,
)
from capturelab.transport import java_properties

MIB = 1024 * 1024
SUMMARY_RE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th"
)


@dataclass(frozen=True)
class Measurement:
    tool: str
    records: int
    record_size: float
    seconds: float
    records_per_s: float
    mb_per_s: float  # MiB/s, as ProducerPerformance counts
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_producer_performance(output: str, record_size: int) -> Measurement:
    """The final summary line of ProducerPerformance (the last match wins)."""
    matches = list(SUMMARY_RE.finditer(output))
    if not matches:
        raise CapturelabError(f"ProducerPerformance printed no summary line:\n{output[-1500:]}")
    m = matches[-1]
    records, rps = int(m["records"]), float(m["rps"])
    return Measurement(
        tool="org.apache.kafka.tools.ProducerPerformance",
        records=records,
        record_size=record_size,
        seconds=records / rps if rps else 0.0,
        records_per_s=rps,
        mb_per_s=float(m["mbps"]),
        p50_ms=float(m["p50"]),
        p99_ms=float(m["p99"]),
    )


def synthetic_events(
    rng: random.Random, first_seq: int, n: int, wall0_ns: int = 1_795_000_000_000_000_000
) -> list[InputEvent]:
    """``n`` plausible events (mouse motion and key classes) from ``first_seq`` on."""
    events = []
    t = 1_000_000_000
    for i in range(n):
        t += rng.randint(1_000_000, 60_000_000)
        if rng.random() < 0.6:
            events.append(
                InputEvent(
                    first_seq + i,
                    t,
                    wall0_ns + t,
                    DeviceClass.MOUSE,
                    2,
                    rng.choice((0, 1)),
                    rng.randint(-12, 12),
                )
            )
        else:
            events.append(
                InputEvent(
                    first_seq + i,
                    t,
                    wall0_ns + t,
                    DeviceClass.KEYBOARD,
                    1,
                    rng.choice(list(KeyClass)),
                    rng.choice((0, 1)),
                    EventFlag.KEY_CLASS,
                )
            )
    return events


def events_per_frame(record_size: int, frame: Callable[[int, int], bytes]) -> int:
    """The event count whose frame lands closest to ``record_size`` bytes."""
    if record_size < 200:
        raise InputError(
            f"--record-size {record_size} is below the smallest useful frame (200 bytes)"
        )
    low, high = 1, 1
    while len(frame(0, high)) < record_size and high < 1_000_000:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if len(frame(0, mid)) < record_size:
            low = mid
        else:
            high = mid
    return min((low, high), key=lambda k: abs(len(frame(0, k)) - record_size))


def synthetic_frames(record_size: int, pool: int = 64, seed: int = 7) -> list[bytes]:
    """``pool`` distinct frames whose size is as close to ``record_size`` as the framing allows."""
    rng = random.Random(seed)  # noqa: S311 - synthetic input data, not cryptography
    pseudonym = pseudonymize(b"bench-lab-secret-not-for-real-use", "bench-participant")

    def frame(first_seq: int, n: int) -> bytes:
        events = tuple(synthetic_events(rng, first_seq, n))
        return encode_batch(Batch("bench-collector", pseudonym, events))

    n = events_per_frame(record_size, frame)
    return [frame(i * n, n) for i in range(pool)]


def run_reference(
    libs: Path,
    config: dict[str, Any],
    topic: str,
    *,
    records: int,
    record_size: int,
    timeout: float,
) -> Measurement:
    jars = list(libs.glob("kafka-tools-*.jar"))
    if not jars:
        raise HostEnvironmentError(
            f"no kafka-tools jar in {libs}: converge the kafka role once (it caches the jars there) "
            "or pass --kafka-libs"
        )
    argv = [
        "java",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        *java_properties(config),
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except FileNotFoundError:
        raise HostEnvironmentError(
            "java is not installed on this machine (needed for ProducerPerformance)"
        ) from None
    except subprocess.TimeoutExpired:
        raise CapturelabError(
            f"ProducerPerformance did not finish within {timeout:.0f} s"
        ) from None
    if proc.returncode != 0:
        raise CapturelabError(f"ProducerPerformance failed: {proc.stderr[-1500:]}")
    return parse_producer_performance(proc.stdout, record_size)


def run_ours(
    config: dict[str, Any], topic: str, records: int, frames: list[bytes], timeout: float
) -> Measurement:
    latencies: list[float] = []
    errors: list[str] = []

    def delivered(started: float) -> Callable[[Any, Any], None]:
        def callback(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                latencies.append((time.perf_counter() - started) * 1000)

        return callback

    producer = Producer(config)
    sent_bytes = 0
    deadline = time.monotonic() + timeout
    start = time.perf_counter()
    for i in range(records):
        value = frames[i % len(frames)]
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=b"bench-collector",
                    on_delivery=delivered(time.perf_counter()),
                )
                break
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                raise CapturelabError(f"produce failed: {exc}") from None
            if time.monotonic() > deadline:
                raise CapturelabError(f"our producer did not finish within {timeout:.0f} s")
        sent_bytes += len(value)
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - start
    if remaining or errors:
        raise CapturelabError(f"our producer: {remaining} unacknowledged, errors: {errors[:3]}")
    latencies.sort()
    return Measurement(
        tool="capturelab (schema frames + confluent-kafka, transport settings)",
        records=records,
        record_size=sent_bytes / records,
        seconds=seconds,
        records_per_s=records / seconds,
        mb_per_s=sent_bytes / seconds / MIB,
        p50_ms=latencies[len(latencies) // 2],
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )


def create_topic(bootstrap: str, partitions: int, timeout: float = 60) -> str:
    topic = f"capturelab-bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])[
            topic
        ].result(timeout=timeout)
    except Exception as exc:
        raise CapturelabError(f"cannot create the bench topic on {bootstrap}: {exc}") from None
    return topic


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep the handle alive until the result
    admin.delete_topics([topic])[topic].result(timeout=60)
