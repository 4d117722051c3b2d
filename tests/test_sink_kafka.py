"""The sink against a real Kafka broker: exactly once through the faults the issue names.

Each test produces numbered batches with the capturelab producer settings, runs the sink, and
proves with the store's audit that every event landed once: no gap, no duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from collectorkit import wait_for
from confluent_kafka import Producer
from consentkit import OTHER, certificate_message, collector_key, erasure, granted, trust_file
from kafka_local import LocalKafka
from sinkdata import frames, pseudonym

from capturelab.consent import ConsentRecord, ControlMessage, ControlType, LawfulBasis, Scope
from capturelab.sink import grants
from capturelab.sink.audit import audit
from capturelab.sink.config import load_config
from capturelab.sink.layout import Layout
from capturelab.sink.service import SinkService
from capturelab.transport import producer_config

BATCH = 50  # events per frame
GRANT = ConsentRecord(
    "set per participant",
    frozenset({Scope.KEYS_TIMING, Scope.MOUSE}),
    LawfulBasis.CONSENT,
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2027, 1, 1, tzinfo=UTC),
    region="us",
)


def produce(
    kafka: LocalKafka, topic: str, items: list[tuple[str, bytes]], partition: int | None = None
) -> None:
    producer = Producer(producer_config(kafka.bootstrap, "test-producer"))
    errors: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    where = {} if partition is None else {"partition": partition}
    for key, value in items:
        producer.produce(topic, value=value, key=key.encode(), on_delivery=report, **where)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors


def grants_for(*who_and_collector: tuple[str, str]) -> list[tuple[str, bytes]]:
    """Consent-granted control messages (key, value) for (participant, collector) pairs."""
    out = []
    for who, collector in who_and_collector:
        msg = granted(pseudonym(who), GRANT, collector)
        out.append((msg.pseudonym.hex(), msg.encode()))
    return out


def sink_config(
    tmp: Path, kafka: LocalKafka, name: str, root: Path | None = None, **extra: object
) -> Path:
    data = {
        "root": str(root or tmp / "array"),
        "bootstrap_servers": kafka.bootstrap,
        "consent_authority_file": str(trust_file(tmp / "keys")),
        "group_id": f"sink-{name}",
        "client_id": f"sink-{name}",
        "capture_topic": f"{name}.events",
        "control_topic": f"{name}.control",
        "min_free_bytes": 0,
        "flush_max_messages": 20,
        "status_interval_s": 0.5,
        # Unsigned frames: admission against a real broker is test_admission_over_a_real_broker.
        "require_collector_auth": False,
        "require_grant": False,
        **extra,
    }
    path = tmp / f"{name}-{data['client_id']}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def topics(kafka: LocalKafka, name: str, partitions: int = 2) -> tuple[str, str]:
    events = kafka.create_topic(f"{name}.events", partitions)
    control = kafka.create_topic(f"{name}.control", 1, **{"cleanup.policy": "compact"})
    return events, control


@contextmanager
def running(config: Path) -> Iterator[SinkService]:
    service = SinkService(load_config(config))
    thread = threading.Thread(
        target=service.run, kwargs={"max_seconds": 120, "install_signals": False}, daemon=True
    )
    thread.start()
    try:
        yield service
    finally:
        service.request_stop()
        thread.join(30)
        assert not thread.is_alive()


def events_stored(root: Path) -> int:
    return audit(root).events


def test_round_trip_two_collectors_exactly_once(kafka: LocalKafka, tmp_path: Path):
    events, _ = topics(kafka, "rt")
    sent = [("c1", f) for f in frames("c1", 30, BATCH, "p1")]
    sent += [("c2", f) for f in frames("c2", 30, BATCH, "p2")]
    produce(kafka, events, sent)
    config = sink_config(tmp_path, kafka, "rt")
    root = tmp_path / "array"
    with running(config):
        wait_for(lambda: events_stored(root) == 60 * BATCH, "all events stored")
    result = audit(root, frames=True)
    assert result.ok(), result.to_dict()
    assert {c: v["events"] for c, v in result.to_dict()["collectors"].items()} == {
        "c1": 30 * BATCH,
        "c2": 30 * BATCH,
    }
    status = json.loads((root / "state" / "status.json").read_text())
    assert status["state"] == "stopped" and status["counters"]["batches"] == 60
    assert status["last_commit"]
    # a second run of the same group finds nothing new: offsets were committed
    with running(config) as again:
        time.sleep(3)
        assert again.store.counters.batches == 0 and again.store.counters.duplicates == 0


def test_sink_killed_mid_write_then_restarted_loses_and_duplicates_nothing(
    kafka: LocalKafka, tmp_path: Path
):
    events, _ = topics(kafka, "kill", partitions=3)
    batches = frames("c1", 400, BATCH)
    produce(kafka, events, [("c1", f) for f in batches])
    config = sink_config(tmp_path, kafka, "kill", flush_max_messages=5)
    root = tmp_path / "array"
    cmd = [sys.executable, "-m", "capturelab.cli", "sink", "run", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: events_stored(root) >= 40 * BATCH, "the sink to be mid-way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored_at_kill = events_stored(root)
    assert stored_at_kill < 400 * BATCH, "the kill came too late to prove anything"
    # the producer side retries some batches too (a duplicate delivery)
    produce(kafka, events, [("c1", f) for f in batches[:25]])
    with running(config) as service:
        wait_for(lambda: events_stored(root) == 400 * BATCH, "every event after the restart")
        time.sleep(1)
    result = audit(root, frames=True)
    assert result.ok(), result.to_dict()
    assert result.events == 400 * BATCH
    assert service.store.counters.duplicates >= 25


def test_broker_restart_under_consumption(kafka: LocalKafka, tmp_path: Path):
    events, _ = topics(kafka, "restart")
    first, second = frames("c1", 100, BATCH)[:50], frames("c1", 100, BATCH)[50:]
    config = sink_config(tmp_path, kafka, "restart")
    root = tmp_path / "array"
    with running(config):
        produce(kafka, events, [("c1", f) for f in first])
        wait_for(lambda: events_stored(root) > 0, "the sink to start consuming")
        kafka.stop()
        time.sleep(2)
        kafka.start()
        produce(kafka, events, [("c1", f) for f in second])
        wait_for(lambda: events_stored(root) == 100 * BATCH, "every event across the restart", 120)
    result = audit(root, frames=True)
    assert result.ok() and result.events == 100 * BATCH


def test_erasure_request_leaves_zero_records(
    kafka: LocalKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Forged control messages are refused first; then a signed revocation erases p1."""
    events, control = topics(kafka, "erase")
    produce(kafka, events, [("c1", f) for f in frames("c1", 20, BATCH, "p1")])
    produce(kafka, events, [("c2", f) for f in frames("c2", 20, BATCH, "p2")])
    config = sink_config(tmp_path, kafka, "erase")
    root = tmp_path / "array"
    p1 = pseudonym("p1")
    produce(kafka, control, grants_for(("p1", "c1"), ("p2", "c2")))
    caplog.set_level(logging.WARNING, logger="capturelab.sink.service")
    with running(config) as service:
        wait_for(lambda: events_stored(root) == 40 * BATCH, "both participants stored")
        wait_for(lambda: len(list((root / "consent").glob("*.json"))) == 2, "both grants kept")
        assert grants.load(Layout(root), p1.hex())[0].scopes == GRANT.scopes
        # Forgeries first: each is refused, counted and logged; nothing is stored or erased.
        now = datetime.now(UTC)
        live = replace(GRANT, participant_id=p1.hex())
        forged = [
            ControlMessage(ControlType.ERASURE_REQUESTED, p1, "c2", now, "unsigned"),
            granted(pseudonym("p3"), GRANT, "c2", signer=OTHER),  # a key nobody trusts
            # p1's own signed grant is still live: a collector cannot end it by itself
            replace(granted(p1, GRANT, "c2"), type=ControlType.ERASURE_REQUESTED, at=now),
        ]
        produce(kafka, control, [(m.pseudonym.hex(), m.encode()) for m in forged])
        wait_for(lambda: service.status.refused_control_messages == 3, "3 forgeries refused")
        assert "unsigned" in caplog.text and "does not trust" in caplog.text
        assert "live until" in service.status.last_refused
        assert audit(root).pseudonyms.get(p1.hex()) == 20 * BATCH, "nothing erased"
        assert not list((root / "tombstones").glob("*.json"))
        assert not (root / "consent" / f"{pseudonym('p3').hex()}.json").exists()
        assert live.window_end() > now
        revoked = erasure(p1, datetime.now(UTC), ctype=ControlType.CONSENT_REVOKED)
        produce(kafka, control, [(p1.hex(), revoked.encode())])
        wait_for((root / "tombstones" / f"{p1.hex()}.json").exists, "the tombstone")
        wait_for(lambda: audit(root).pseudonyms.get(p1.hex(), 0) == 0, "p1 erased")
    assert audit(root).pseudonyms == {pseudonym("p2").hex(): 20 * BATCH}
    assert not (root / "segments" / p1.hex()).exists()
    assert [p.stem for p in (root / "consent").glob("*.json")] == [pseudonym("p2").hex()]
    # A new consumer group re-reads the whole buffer: the erased pseudonym does not come back.
    replay = sink_config(tmp_path, kafka, "erase", group_id="sink-erase-replay", client_id="replay")
    with running(replay) as service:
        wait_for(lambda: service.store.counters.erased == 20, "the replay to reach p1's batches")
    assert audit(root).pseudonyms == {pseudonym("p2").hex(): 20 * BATCH}
    assert not (root / "consent" / f"{p1.hex()}.json").exists()  # the old grant stays erased


def test_two_sinks_share_the_partitions(kafka: LocalKafka, tmp_path: Path):
    events, _ = topics(kafka, "scale", partitions=4)
    items = []
    for c in ("c1", "c2", "c3", "c4"):
        items += [(c, f) for f in frames(c, 15, BATCH, c)]
    root = tmp_path / "array"
    a = sink_config(tmp_path, kafka, "scale", client_id="sink-a")
    b = sink_config(tmp_path, kafka, "scale", client_id="sink-b", root=tmp_path / "array-b")
    with running(a) as one, running(b) as two:
        wait_for(lambda: bool(one.status.assigned) and bool(two.status.assigned), "both assigned")
        produce(kafka, events, items)
        wait_for(
            lambda: events_stored(root) + events_stored(tmp_path / "array-b") == 60 * BATCH,
            "all events across both sinks",
        )
        assigned = set(one.status.assigned) & set(two.status.assigned)
    assert not assigned, "a partition was consumed by both instances"
    combined = (
        audit(root).to_dict()["collectors"] | audit(tmp_path / "array-b").to_dict()["collectors"]
    )
    assert sorted(combined) == ["c1", "c2", "c3", "c4"]
    assert all(c["events"] == 15 * BATCH and not c["gaps"] for c in combined.values())


def test_every_instance_acts_on_every_control_message(kafka: LocalKafka, tmp_path: Path):
    """Capture partitions are shared, control messages are not: a revocation must erase the
    participant on every instance's array, and every array keeps every grant."""
    events, control = topics(kafka, "fanout", partitions=4)
    produce(kafka, control, grants_for(("p1", "c0"), ("p2", "c9")))
    roots = [tmp_path / "array", tmp_path / "array-b"]
    a = sink_config(tmp_path, kafka, "fanout", client_id="sink-a")
    b = sink_config(tmp_path, kafka, "fanout", client_id="sink-b", root=roots[1])
    p1, p2 = pseudonym("p1").hex(), pseudonym("p2").hex()
    with running(a) as one, running(b) as two:
        wait_for(
            lambda: all(
                len([p for p in s.status.assigned if p.startswith(events)]) == 2 for s in (one, two)
            ),
            "two capture partitions each",
        )
        for part in range(4):  # p1 on every partition, so on both arrays; p2 on one
            mine = frames(f"c{part}", 10, BATCH, "p1")
            produce(kafka, events, [(f"c{part}", f) for f in mine], part)
        produce(kafka, events, [("c9", f) for f in frames("c9", 10, BATCH, "p2")], 0)
        wait_for(
            lambda: sum(events_stored(r) for r in roots) == 50 * BATCH, "all events on the arrays"
        )
        assert all(audit(r).pseudonyms.get(p1, 0) > 0 for r in roots), "p1 on both arrays"
        wait_for(
            lambda: all(len(list((r / "consent").glob("*.json"))) == 2 for r in roots),
            "both grants on both arrays",
        )
        revoked = erasure(pseudonym("p1"), datetime.now(UTC), "c0", ControlType.CONSENT_REVOKED)
        produce(kafka, control, [(p1, revoked.encode())])
        wait_for(
            lambda: all((r / "tombstones" / f"{p1}.json").exists() for r in roots),
            "the tombstone on both arrays",
        )
        wait_for(lambda: all(p1 not in audit(r).pseudonyms for r in roots), "p1 erased on both")
    assert sum(audit(r).pseudonyms.get(p2, 0) for r in roots) == 10 * BATCH
    for root in roots:
        assert not (root / "segments" / p1).exists()
        assert [p.stem for p in (root / "consent").glob("*.json")] == [p2]
        position = json.loads((root / "state" / "control-fanout.control.json").read_text())
        assert position["next"] == {"0": 3}  # two grants and the revocation, each acted on
    # Restarted, an instance does not act on the control messages again.
    with running(a) as again:
        wait_for(lambda: again.control.partitions == [0], "the control topic assigned")
        time.sleep(2)
        assert again.status.control_messages == 0


FULL_BATCHES = 1500  # schema v2 frames are ~220 bytes each


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs for the full volume needs root")
def test_full_volume_pauses_reports_and_resumes(kafka: LocalKafka, tmp_path: Path):
    events, _ = topics(kafka, "full")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        batches = frames("c1", FULL_BATCHES, BATCH)  # ~330 KB: more than the 160 KB free
        produce(kafka, events, [("c1", f) for f in batches])
        config = sink_config(tmp_path, kafka, "full", root=mnt, min_free_bytes=96 * 1024)
        status_file = mnt / "state" / "status.json"
        with running(config):
            wait_for(
                lambda: (
                    status_file.exists()
                    and json.loads(status_file.read_text())["state"] == "paused"
                ),
                "the sink to pause on the full volume",
            )
            status = json.loads(status_file.read_text())
            assert "reserve" in status["reason"] and status["total_lag"] > 0
            paused_at = audit(mnt, frames=True)
            assert paused_at.ok() and 0 < paused_at.events < FULL_BATCHES * BATCH  # no torn frame
            subprocess.run(["mount", "-o", "remount,size=32m", str(mnt)], check=True)
            wait_for(
                lambda: events_stored(mnt) == FULL_BATCHES * BATCH, "intake to resume and finish"
            )
            wait_for(lambda: json.loads(status_file.read_text())["state"] == "running", "running")
        result = audit(mnt, frames=True)
        assert result.ok() and result.events == FULL_BATCHES * BATCH
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_frames_with_a_trained_dictionary_need_it_configured(kafka: LocalKafka, tmp_path: Path):
    """A collector's dictionary frames land when the sink has the dictionary, else quarantine."""
    from capturelab.cli import main  # noqa: PLC0415
    from capturelab.schema import Batch, decode_batch, encode_batch, load_dictionary  # noqa: PLC0415

    dict_path = tmp_path / "zstd.dict"
    assert main(["collector", "train-dictionary", "--out", str(dict_path), "--seconds", "120"]) == 0
    dictionary = load_dictionary(dict_path)
    plain = [decode_batch(f) for f in frames("cd", 10, BATCH)]
    with_dict = [encode_batch(Batch(b.collector_id, b.pseudonym, b.events), dictionary=dictionary)
                 for b in plain]  # fmt: skip
    events, _ = topics(kafka, "dict")
    produce(kafka, events, [("cd", f) for f in with_dict])
    root = tmp_path / "array"
    with running(sink_config(tmp_path, kafka, "dict", dictionaries=[str(dict_path)])):
        wait_for(lambda: events_stored(root) == 10 * BATCH, "frames stored with the dictionary")
    assert audit(root, frames=True, dictionaries={dictionary.dict_id(): dictionary}).ok()
    assert len(audit(root, frames=True).bad_frames) == 10  # decoding --frames needs it too
    other = tmp_path / "other"
    config = sink_config(tmp_path, kafka, "dict-none", root=other, capture_topic=events,
                         control_topic="dict.control")  # fmt: skip
    with running(config) as service:
        wait_for(lambda: service.store.counters.quarantined == 10, "frames quarantined without it")
    assert events_stored(other) == 0


def test_admission_over_a_real_broker(kafka: LocalKafka, tmp_path: Path):
    """Issue 18 part 2 through a real broker: the certificate and grant on the control topic,
    then signed frames, frames under c1's id signed by a key nobody certified, unsigned ones,
    and c1's frames of a participant with no grant. Only the first kind is stored."""
    events, control = topics(kafka, "admit")
    produce(kafka, control, [
        (key.decode(), value) for key, value in (certificate_message("c1"),)
    ] + grants_for(("p1", "c1")))  # fmt: skip
    good = frames("c1", 10, BATCH, "p1", key=collector_key("c1"))
    forged = frames("c1", 4, BATCH, "p1", key=collector_key("c-forger"))
    unsigned = frames("c1", 3, BATCH, "p1")
    ungranted = frames("c1", 2, BATCH, "p9", key=collector_key("c1"))
    produce(kafka, events, [("c1", f) for f in forged + unsigned + ungranted + good], 0)
    root = tmp_path / "array"
    secure = {"require_collector_auth": True, "require_grant": True}
    with running(sink_config(tmp_path, kafka, "admit", **secure)) as sink:
        wait_for(lambda: events_stored(root) == 10 * BATCH, "the signed, granted frames stored")
        wait_for(lambda: sink.store.counters.ungranted == 2, "the ungranted frames judged")
        counters = sink.store.counters
        assert (counters.unauthenticated, counters.ungranted) == (7, 2)
    assert audit(root).pseudonyms == {pseudonym("p1").hex(): 10 * BATCH}
    assert len(list((root / "quarantine").rglob("*.frame"))) == 7
    status = json.loads((root / "state" / "status.json").read_text())
    assert status["collector_keys"] == 1 and status["counters"]["unauthenticated"] == 7
