"""Helpers for the collector tests: a config on tmp paths, a running daemon, a topic reader."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import yaml
from confluent_kafka import Consumer

from capturelab import authority, keys
from capturelab.collector.config import CollectorConfig, parse_config
from capturelab.collector.daemon import Collector
from capturelab.consent import parse_record, sign_record, signed_document
from capturelab.schema import Batch, DeviceClass, InputEvent, decode_batch

SECRET = b"lab-secret-for-tests-0123456789"
CONSENT = """participant_id: p-0001
scopes: {scopes}
lawful_basis: consent
granted: 2026-01-01T00:00:00Z
expires: 2099-01-01T00:00:00Z
region: {region}
"""


def write_consent(path: Path, scopes: list[str], region: str = "us", **extra: str) -> None:
    """A record signed by the test's authority key (``authority.key`` next to it)."""
    text = CONSENT.format(scopes="[" + ", ".join(scopes) + "]", region=region)
    text += "".join(f"{k}: {v}\n" for k, v in extra.items())
    record = parse_record(yaml.safe_load(text))
    signed = sign_record(record, authority.load_authority(path.parent / "authority.key"), SECRET)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(signed_document(signed), sort_keys=False))
    tmp.replace(path)


def collector_config(tmp: Path, bootstrap: str, name: str = "c1", **extra: Any) -> CollectorConfig:
    (tmp / "secret").write_bytes(SECRET + b"\n")
    if not (tmp / "authority.key").exists():
        authority.generate(tmp / "authority.key", tmp / "authority.pub")
    data: dict[str, Any] = {
        "collector_id": name,
        "consent_file": str(tmp / "consent.yml"),
        "consent_authority_file": str(tmp / "authority.pub"),
        "lab_secret_file": str(tmp / "secret"),
        "spool_dir": str(tmp / "spool"),
        "runtime_dir": str(tmp / "run"),
        "bootstrap_servers": bootstrap,
        "inject_dir": str(tmp / "inject"),
        "context": "inject",
        "sysfs_input_dir": str(tmp / "no-sysfs"),
        "batch_interval_ms": 100,
        "batch_min_events": 1,
        "device_rescan_interval_s": 0.2,
        "consent_check_interval_s": 0.2,
        "status_interval_s": 0.2,
        "lock_screens": [],  # a locker running on the machine under test is not the test's
    }
    data.update(extra)
    return parse_config(data, "test config")


@contextmanager
def running(collector: Collector, max_seconds: float = 180) -> Iterator[Collector]:
    thread = threading.Thread(target=collector.run, kwargs={"max_seconds": max_seconds})
    thread.start()
    try:
        yield collector
    finally:
        collector.stop()
        thread.join(60)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def inject_and_settle(collector: Collector, injector: Any, session: Any, speed: float = 0) -> int:
    """Play a synth session into the daemon, wait until all of it is read, sealed and sent;
    the number of events sealed."""
    from capturelab.collector import synth  # noqa: PLC0415

    synth.play(session, injector, speed)
    assert synth.wait_drained(injector, 30)
    want = len(session.keyboard) + len(session.mouse)
    wait_for(lambda: collector.counters.read >= want, "every injected event read")
    wait_for(collector.settled, "everything sealed and delivered", timeout=120)
    return collector.counters.sealed_events


def read_topic(
    bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout: float = 60
) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(messages):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def batches(messages: list[Any]) -> list[Batch]:
    return [decode_batch(m.value()) for m in messages]


def event_count(messages: list[Any]) -> int:
    return sum(len(b.events) for b in batches(messages))


def typed_text(events: list[Any]) -> str:
    """Text a reader could rebuild from the key codes that left the collector (US layout)."""
    shift, out = False, []
    for e in events:
        if not isinstance(e, InputEvent) or e.device is not DeviceClass.KEYBOARD or e.type != 1:
            continue
        if e.code in keys.SHIFTS:
            shift = e.value != 0
        elif e.value == 1 and e.code in keys.TEXT:
            out.append(keys.TEXT[e.code][1 if shift else 0])
        elif e.value == 1 and e.code in keys.ENTERS:
            out.append("\n")
    return "".join(out)


class Gate:
    """A fake producer: acknowledges only while ``open``; records what it was given."""

    open = True
    sent: ClassVar[list[tuple[str, bytes]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.waiting: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.waiting.append((topic, value, on_delivery))

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        if not Gate.open:
            return 0
        waiting, self.waiting = self.waiting, []
        for topic, value, report in waiting:
            Gate.sent.append((topic, value))
            report(None, None)
        return len(waiting)

    def flush(self, timeout: float) -> int:
        return self.poll(0)
