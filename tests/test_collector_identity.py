"""The collector's own key (issue 18 part 2): every frame signed before the spool, the
certificate announced before the grant and before any frame, a bad key refused by name."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collectorkit import collector_config, running, wait_for, write_consent
from test_collector_consent import _capturing, _refused
from test_collector_units import Gate

from capturelab import authority, identity
from capturelab.collector import synth
from capturelab.collector.cli import render_status
from capturelab.collector.daemon import Collector
from capturelab.collector.delivery import Delivery
from capturelab.collector.spool import Spool
from capturelab.schema import frame_trailer, read_header

ISSUED = datetime(2026, 11, 1, tzinfo=UTC)


def _identity(tmp: Path, collector: str = "c1", certify_as: str = "c1") -> dict[str, str]:
    """A key for the collector and the test authority's certificate of it, as the role makes them."""
    key, _ = identity.ensure_key(tmp / "collector.key")
    signer = authority.load_authority(tmp / "authority.key")
    cert = identity.certify(signer, certify_as, key.public, ISSUED)
    (tmp / "collector.cert.json").write_text(json.dumps(cert.encode()))
    return {
        "identity_key": str(tmp / "collector.key"),
        "identity_certificate": str(tmp / "collector.cert.json"),
    }


def test_every_frame_is_signed_and_the_certificate_goes_first(tmp_path: Path):
    config = collector_config(tmp_path, "127.0.0.1:9092")  # makes the authority key
    config = collector_config(tmp_path, "127.0.0.1:9092", **_identity(tmp_path))
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        _capturing(c)
        synth.play(synth.build_session(3, 5, canaries=False), injector, 0)
        assert synth.wait_drained(injector, 10)
        wait_for(c.settled, "delivery")
        status = c.status()
    injector.close()
    kinds = ["frame" if t == "capture.events" else json.loads(v)["type"] for t, v in Gate.sent]
    assert kinds[:2] == ["collector_key", "consent_granted"] and set(kinds[2:]) == {"frame"}
    trust = authority.load_trust(config.consent_authority_file)
    ring = identity.Keyring(tmp_path / "ring", trust)
    cert = identity.control_certificate(Gate.sent[0][1], "control")
    assert cert is not None
    ring.add(cert, trust, "control")
    frames = [v for t, v in Gate.sent if t == "capture.events"]
    assert len(frames) >= 1
    for frame in frames:
        assert ring.check(frame, read_header(frame)) == (identity.Verdict.OK, "")
    assert status["frame_key"] == identity.load_key(config.identity_key).key_id  # type: ignore[arg-type]
    assert re.search(rf"^frame key +{status['frame_key']}$", render_status(status), re.M)
    spooled = list((config.spool_dir / "queue").glob("*"))
    assert spooled == []  # all delivered (and they were signed in the spool: see above)


def test_a_certificate_for_another_collector_or_key_is_refused_by_name(tmp_path: Path):
    collector_config(tmp_path, "127.0.0.1:9092")
    config = collector_config(tmp_path, "127.0.0.1:9092", **_identity(tmp_path, certify_as="c2"))
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    Gate.open, Gate.sent = True, []
    with running(Collector(config, producer_factory=Gate)) as c:
        _refused(c, "collector key refused (")
        assert "certifies collector 'c2', this is 'c1'" in c.reason
        assert str(config.identity_certificate) in c.reason
        assert c.status()["frame_key"] == "refused (see reason)"
        # the operator deploys the right certificate: capture starts, same process
        _identity(tmp_path)
        time.sleep(0.05)
        _capturing(c)
    assert [json.loads(v)["type"] for _t, v in Gate.sent][:1] == ["collector_key"]


def test_a_key_refused_mid_capture_still_seals_what_was_captured_with_the_certified_key(
    tmp_path: Path,
):
    collector_config(tmp_path, "127.0.0.1:9092")
    config = collector_config(tmp_path, "127.0.0.1:9092", **_identity(tmp_path))
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    key = identity.load_key(tmp_path / "collector.key")
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        _capturing(c)
        synth.play(synth.build_session(4, 5, canaries=False), injector, 0)
        assert synth.wait_drained(injector, 10)
        (tmp_path / "collector.key").chmod(0o644)  # the key is refused now
        time.sleep(0.05)
        (tmp_path / "collector.cert.json").touch()
        _refused(c, "the collector key has mode 0644")
        assert c.status()["frame_key"] == (
            f"refused (see reason); what was captured before is sealed with {key.key_id}"
        )
        wait_for(c.settled, "what was held sealed and sent")
    injector.close()
    frames = [v for t, v in Gate.sent if t == "capture.events"]
    assert frames
    for data in frames:
        header = read_header(data)
        assert header.signed, "a frame went unsigned"
        assert frame_trailer(data, header)[0].hex() == key.key_id


def test_the_certificate_is_announced_even_while_consent_is_refused(tmp_path: Path):
    collector_config(tmp_path, "127.0.0.1:9092")
    config = collector_config(tmp_path, "127.0.0.1:9092", **_identity(tmp_path))
    write_consent(config.consent_file, ["keys:timing"], expires="2026-01-02T00:00:00Z")
    Gate.open, Gate.sent = True, []
    with running(Collector(config, producer_factory=Gate)) as c:
        _refused(c, "consent expired")
        wait_for(c.settled, "the certificate sent")
    assert [json.loads(v)["type"] for _t, v in Gate.sent] == ["collector_key"]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path):
    collector_config(tmp_path, "127.0.0.1:9092")
    config = collector_config(tmp_path, "127.0.0.1:9092", **_identity(tmp_path))
    write_consent(config.consent_file, ["keys:timing"])
    (tmp_path / "collector.key").chmod(0o644)
    with running(Collector(config, producer_factory=Gate)) as c:
        _refused(c, "the collector key has mode 0644")


class _Holding:
    """A producer that acknowledges nothing until told; records what it was given."""

    def __init__(self, _config: Any) -> None:
        self.given: list[tuple[str, Any]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.given.append((topic, on_delivery))

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_a_control_message_is_a_barrier_nothing_after_it_leaves_before_its_ack(tmp_path: Path):
    spool = Spool(tmp_path / "spool", 1 << 24)
    spool.put_batch(b"frame-0", 1)
    spool.put_control("capture.control", b"k", b"certificate")
    spool.put_batch(b"frame-1", 2)
    made: list[_Holding] = []

    def factory(config: Any) -> _Holding:
        made.append(_Holding(config))
        return made[-1]

    delivery = Delivery(spool, {}, "capture.events", "c1", producer_factory=factory)  # type: ignore[arg-type]
    producer = factory({})
    delivery._send_pending(producer)  # type: ignore[arg-type]
    assert [t for t, _ in producer.given] == ["capture.events", "capture.control"]
    delivery._send_pending(producer)  # type: ignore[arg-type]
    assert len(producer.given) == 2  # frame-1 waits for the control message's ack
    producer.given[1][1](None, None)  # acknowledged
    delivery._send_pending(producer)  # type: ignore[arg-type]
    assert [t for t, _ in producer.given] == [
        "capture.events", "capture.control", "capture.events",
    ]  # fmt: skip
