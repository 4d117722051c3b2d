"""The collector against a TLS + SASL/SCRAM listener: a wrong password spools and says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from collectorkit import batches, collector_config, read_topic, running, wait_for, write_consent
from kafka_local import LocalKafka, require_libs

from capturelab.collector import synth
from capturelab.collector.daemon import Collector

PASSWORD = "collector-scram-password-0123"  # noqa: S105 - a throwaway test broker user


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-sasl"), require_libs(), {"c1": PASSWORD})
    broker.start()
    yield broker
    broker.stop()


def secure_config(tmp: Path, kafka: LocalKafka, password: str, topic: str, control: str):  # type: ignore[no-untyped-def]
    (tmp / "password").write_text(password + "\n")
    security = {
        "username": "c1",
        "password_file": str(tmp / "password"),
        "ca_file": str(kafka.ca_file),
    }
    return collector_config(tmp, kafka.secure_bootstrap, security=security, capture_topic=topic,
                            control_topic=control, message_timeout_ms=5000)  # fmt: skip


def test_wrong_password_spools_says_so_and_the_right_one_drains(
    secure_kafka: LocalKafka, tmp_path: Path
):
    topic = secure_kafka.create_topic("sasl.events", 1)
    control = secure_kafka.create_topic("sasl.control", 1, **{"cleanup.policy": "compact"})
    session = synth.build_session(4, 20, canaries=False)
    injector = synth.FifoInjector(tmp_path / "inject")
    config = secure_config(tmp_path, secure_kafka, "not-the-password", topic, control)
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    with running(Collector(config)) as c:
        wait_for(lambda: len(c.readers) == 2, "capture")
        synth.play(session, injector, 0)
        assert synth.wait_drained(injector, 30)
        wait_for(
            lambda: "authentication failed" in c.status()["delivery"]["last_error"], "the error"
        )
        time.sleep(1)
        held = c.spool.depth()[0]
        assert held >= 1 and c.status()["delivery"]["delivered_items"] == 0
        sealed = c.counters.sealed_events
    injector.close()
    config = secure_config(tmp_path, secure_kafka, PASSWORD, topic, control)
    with running(Collector(config)) as c:
        wait_for(c.settled, "the spool to drain with the right password")
        assert c.status()["delivery"]["delivered_items"] >= held
    messages = read_topic(
        secure_kafka.bootstrap, topic, lambda m: sum(len(b.events) for b in batches(m)) >= sealed
    )
    seqs = sorted(e.seq for b in batches(messages) for e in b.events)
    assert seqs == list(range(sealed))
