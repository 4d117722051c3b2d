"""The collector against a real Kafka broker on loopback: consent gate, delivery, spool, erasure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from collectorkit import (
    SECRET,
    batches,
    collector_config,
    event_count,
    inject_and_settle,
    read_topic,
    running,
    typed_text,
    wait_for,
    write_consent,
)
from kafka_local import LocalKafka

from capturelab import keys
from capturelab.collector import evdev, synth
from capturelab.collector.daemon import Collector
from capturelab.consent import ControlMessage, ControlType, Scope
from capturelab.errors import HostEnvironmentError
from capturelab.schema import DeviceClass, EventFlag, InputEvent, KeyClass, pseudonymize


def topics(kafka: LocalKafka, name: str) -> dict[str, str]:
    return {
        "capture_topic": kafka.create_topic(f"{name}.events", 2),
        "control_topic": kafka.create_topic(f"{name}.control", 1, **{"cleanup.policy": "compact"}),
    }


def contiguous(messages: list) -> list[int]:
    seqs = sorted(e.seq for b in batches(messages) for e in b.events)
    assert seqs == list(range(len(seqs))), "gap or duplicate in the sequence numbers"
    return seqs


def test_refuses_without_consent_then_captures_classes_only(kafka: LocalKafka, tmp_path: Path):
    names = topics(kafka, "gate")
    config = collector_config(tmp_path, kafka.bootstrap, **names)
    session = synth.build_session(8, 20, canaries=False)  # typing, then the mouse
    with running(Collector(config)) as c:
        wait_for(lambda: c.state == "refused", "the refusal")
        injector = synth.FifoInjector(config.inject_dir, write_timeout_s=0.5)
        with pytest.raises(HostEnvironmentError, match="did not read the injected events"):
            synth.play(session, injector, 0)
        assert c.readers == {} and c.counters.read == 0
        assert "no consent record" in json.loads(config.status_path.read_text())["reason"]
        injector.close()  # unread input is gone with the last writer: it was never captured
        write_consent(config.consent_file, ["keys:timing", "mouse"])
        wait_for(lambda: c.state == "capturing" and len(c.readers) == 2, "capture to start")
        injector = synth.FifoInjector(config.inject_dir)
        sealed = inject_and_settle(c, injector, session)
        injector.close()
    messages = read_topic(
        kafka.bootstrap, names["capture_topic"], lambda m: event_count(m) >= sealed
    )
    assert contiguous(messages)[-1] == sealed - 1
    assert {m.key() for m in messages} == {b"c1"}
    found = batches(messages)
    assert {b.pseudonym for b in found} == {pseudonymize(SECRET, "p-0001")}
    events = [e for b in found for e in b.events if isinstance(e, InputEvent)]
    pressed = [e for e in events if e.device is DeviceClass.KEYBOARD and e.type == keys.EV_KEY]
    assert pressed and all(
        e.code >= KeyClass.UNKNOWN and e.flags & EventFlag.KEY_CLASS for e in pressed
    )
    assert any(e.device is DeviceClass.MOUSE and e.type == keys.EV_REL for e in events)


def test_keys_text_canaries_never_leave_but_ordinary_text_does(kafka: LocalKafka, tmp_path: Path):
    names = topics(kafka, "canary")
    config = collector_config(tmp_path, kafka.bootstrap, **names)
    write_consent(config.consent_file, ["keys:text", "mouse", "context"])
    session = synth.build_session(11, 90)
    kinds = {c.kind for c in session.canaries}
    assert kinds == set(synth.CANARY_KINDS), kinds
    injector = synth.FifoInjector(config.inject_dir)  # makes the FIFOs the daemon reads
    with running(Collector(config)) as c:
        wait_for(lambda: len(c.readers) == 2, "capture to start")
        sealed = inject_and_settle(c, injector, session)
        injector.close()
    messages = read_topic(
        kafka.bootstrap, names["capture_topic"], lambda m: event_count(m) >= sealed
    )
    contiguous(messages)
    events = [e for b in batches(messages) for e in b.events]
    text = typed_text(events)
    assert any(p in text for p in synth.PHRASES), text  # ordinary content is kept
    for canary in session.canaries:
        value = canary.value
        assert value not in text and value.lower() not in text.lower(), canary
        assert value.replace(" ", "")[-6:] not in text.replace(" ", ""), canary
    flags = EventFlag(0)
    for e in events:
        flags |= e.flags
    assert flags & EventFlag.SECURE_INPUT and flags & EventFlag.REDACTED


def test_spools_while_the_gateway_is_down_and_drains_in_order(kafka: LocalKafka, tmp_path: Path):
    names = topics(kafka, "outage")
    config = collector_config(tmp_path, kafka.bootstrap, **names)
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    session = synth.build_session(5, 30, canaries=False)
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config)) as c:
        wait_for(lambda: len(c.readers) == 2, "capture to start")
        kafka.stop()
        try:
            synth.play(session, injector, 10)  # 30 s of session in 3 s: many batches
            assert synth.wait_drained(injector, 30)
            injector.close()
            wait_for(lambda: c.spool.depth()[0] >= 3, "batches in the spool")
            time.sleep(2)
            assert c.spool.depth()[0] >= 3, "delivered while the gateway was down?"
            status = json.loads(config.status_path.read_text())
            assert status["spool"]["items"] >= 3 and status["delivery"]["last_error"]
        finally:
            kafka.start()
        wait_for(c.settled, "the spool to drain", timeout=90)
        sealed = c.counters.sealed_events
    messages = read_topic(
        kafka.bootstrap, names["capture_topic"], lambda m: event_count(m) >= sealed
    )
    assert len(contiguous(messages)) == sealed


def test_revocation_stops_capture_and_requests_erasure_once(kafka: LocalKafka, tmp_path: Path):
    names = topics(kafka, "revoke")
    config = collector_config(tmp_path, kafka.bootstrap, **names)
    write_consent(config.consent_file, ["keys:timing"])
    with running(Collector(config)) as c:
        wait_for(lambda: c.state == "capturing", "capture")
        write_consent(config.consent_file, ["keys:timing"], revoked="2026-06-01T00:00:00Z")
        wait_for(lambda: c.state == "refused" and "revoked" in c.reason, "the revocation")
        wait_for(lambda: c.spool.depth()[0] == 0, "delivery")
        assert c.readers == {}
    with running(Collector(config)) as c:  # a restart does not ask twice
        wait_for(lambda: c.state == "refused", "refusal after restart")
        time.sleep(1)
    messages = read_topic(
        kafka.bootstrap, names["control_topic"], lambda m: len(m) >= 3, timeout=20
    )
    decoded = [ControlMessage.decode(m.value()) for m in messages]
    assert [d.type for d in decoded] == [
        ControlType.CONSENT_GRANTED,  # announced once when capture started, without the id
        ControlType.CONSENT_REVOKED,
        ControlType.ERASURE_REQUESTED,
    ]
    grant = decoded[0].grant
    assert grant is not None and grant.scopes == {Scope.KEYS_TIMING}
    assert grant.participant_id == pseudonymize(SECRET, "p-0001").hex()
    assert b"p-0001" not in messages[0].value()
    assert all(d.pseudonym == pseudonymize(SECRET, "p-0001") for d in decoded)
    assert all(d.collector_id == "c1" for d in decoded)


def test_malformed_records_are_counted_and_quarantined(kafka: LocalKafka, tmp_path: Path):
    config = collector_config(tmp_path, kafka.bootstrap, **topics(kafka, "bad"))
    write_consent(config.consent_file, ["keys:timing"])
    with running(Collector(config)) as c:
        injector = synth.FifoInjector(config.inject_dir)
        wait_for(lambda: len(c.readers) == 2, "capture to start")
        now = int(time.time())
        good = evdev.pack(now, 0, keys.EV_KEY, 30, 1) + evdev.pack(now, 0, 0, 0, 0)
        bad = evdev.pack(now, 0, 0x40, 1, 1) + evdev.pack(now, 0, keys.EV_KEY, 30, 7)
        injector.key(DeviceClass.KEYBOARD, good + bad)
        assert synth.wait_drained(injector, 10)
        injector.close()
        wait_for(lambda: c.counters.malformed == 2 and c.counters.read == 4, "the count")
    log = (config.spool_dir / "quarantine" / "records.jsonl").read_text().splitlines()
    assert len(log) == 2 and "EV_MAX" in log[0] and "key value 7" in log[1]


def test_a_missing_device_waits_and_says_so(kafka: LocalKafka, tmp_path: Path):
    config = collector_config(tmp_path, kafka.bootstrap, devices=["/dev/input/event99"])
    write_consent(config.consent_file, ["keys:timing"])
    with running(Collector(config)) as c:
        wait_for(lambda: "/dev/input/event99" in c.status()["devices"], "the waiting device")
        assert "waiting" in c.status()["devices"]["/dev/input/event99"]
        assert c.state == "capturing"
    assert config.status_path.exists()


def test_full_spool_pauses_capture_while_the_gateway_is_down(kafka: LocalKafka, tmp_path: Path):
    """A 1 MiB spool fills while Kafka is stopped: capture pauses (devices closed), nothing
    sealed is dropped, and it resumes once the restarted gateway took the backlog."""
    import random  # noqa: PLC0415

    names = topics(kafka, "full")
    config = collector_config(tmp_path, kafka.bootstrap, spool_max_bytes=1 << 20, zstd_level=1,
                              batch_interval_ms=50, **names)  # fmt: skip
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    injector = synth.FifoInjector(config.inject_dir, write_timeout_s=2)
    rng = random.Random(1)  # noqa: S311 - test data: random motion hardly compresses
    injector.focus("xterm", "~")  # with a context source, nothing is captured before it
    with running(Collector(config)) as c:
        wait_for(lambda: len(c.readers) == 2 and not c.status()["excluded"], "capture")
        kafka.stop()
        try:
            now = int(time.time())
            for _ in range(200):
                if c.state == "paused":
                    break
                records = b"".join(
                    evdev.pack(
                        now,
                        rng.randrange(10**6),
                        keys.EV_REL,
                        rng.randrange(2),
                        rng.randrange(-(2**30), 2**30),
                    )
                    for _ in range(2000)
                )
                try:
                    injector.key(DeviceClass.MOUSE, records)
                except HostEnvironmentError:
                    break  # the daemon stopped reading: it paused
                time.sleep(0.05)
            wait_for(lambda: c.state == "paused" and "spool full" in c.reason, "the pause")
            assert c.readers == {} and c.status()["spool"]["full"]
        finally:
            kafka.start()
        wait_for(lambda: c.state == "capturing" and len(c.readers) == 2, "the resume", timeout=120)
        wait_for(c.settled, "the backlog delivered", timeout=120)
        sealed = c.counters.sealed_events
    injector.close()
    messages = read_topic(
        kafka.bootstrap, names["capture_topic"], lambda m: event_count(m) >= sealed
    )
    assert sealed > 0 and len(contiguous(messages)) == sealed  # all of it, once
