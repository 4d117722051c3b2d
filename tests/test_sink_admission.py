"""The sink's admission (issue 18 part 2): a frame is stored only when a collector key the
authority certified for its collector signed it, and a signed grant of its participant is kept.

Stand-in consumers (tests/test_sink_control.py); tests/test_sink_kafka.py runs the same through
a real broker."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from consentkit import OTHER, certificate_message, collector_key, granted
from sinkdata import frame, pseudonym
from test_sink_control import FakeControl, _service
from test_sink_service import FakeConsumer, Msg

from capturelab.cli import main
from capturelab.consent import ConsentRecord, LawfulBasis, Scope
from capturelab.sink.audit import audit
from capturelab.sink.service import SinkService
from capturelab.sink.store import DiskFullError

TOPIC = "capture.control"
EVENTS = "capture.events"
GRANT = ConsentRecord(
    "x", frozenset({Scope.MOUSE}), LawfulBasis.CONSENT,
    datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), region="us",
)  # fmt: skip


def _secure(tmp_path: Path) -> tuple[SinkService, FakeConsumer, FakeControl]:
    return _service(tmp_path, require_collector_auth=True, require_grant=True)


def _cert(collector: str, offset: int, **kwargs: Any) -> Msg:
    return Msg(TOPIC, 0, offset, certificate_message(collector, **kwargs)[1])


def _grant(who: str, offset: int) -> Msg:
    return Msg(TOPIC, 0, offset, granted(pseudonym(who), GRANT).encode())


def _deliver(service: SinkService, msgs: list[Msg]) -> None:
    """Consume ``msgs``; whatever the service sought back to is delivered again (as Kafka does)."""
    consumer: FakeConsumer = service.consumer  # type: ignore[assignment]
    for _ in range(len(msgs) + 1):
        consumer.seeks.clear()
        service._process(msgs)
        if not consumer.seeks:
            return
        back = {(t, p): o for t, p, o in consumer.seeks}
        msgs = [m for m in msgs if m.offset() >= back.get((m.topic(), m.partition()), 1 << 62)]
    raise AssertionError("the service kept seeking back")


def test_a_frame_whose_key_and_grant_are_still_unread_waits_for_them_and_is_stored(tmp_path):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]  # written before the frame, not read yet
    signed = frame("c1", 0, 5, key=collector_key("c1"))
    _deliver(
        service,
        [Msg(EVENTS, 0, 7, signed), Msg(EVENTS, 0, 8, frame("c1", 5, 5, key=collector_key("c1")))],
    )
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 10}
    assert service.status.catch_ups == 1 and service.status.collector_keys == 1
    counters = service.store.counters
    assert (counters.unauthenticated, counters.ungranted, counters.quarantined) == (0, 0, 0)
    assert (
        json.loads((tmp_path / "collectors" / "c1.json").read_text())[0]["body"]["collector_id"]
        == "c1"
    )


def test_frames_no_certified_key_signed_are_quarantined_counted_and_logged(
    tmp_path, caplog, capsys
):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _cert("c2", 1), _grant("p1", 2)]
    service.control_step()
    forged = {
        "unsigned": frame("c1", 0, 5),
        "under c1's id with c2's key": frame("c1", 0, 5, key=collector_key("c2")),
        "a collector nobody certified": frame("c7", 0, 5, key=collector_key("c7")),
    }
    with caplog.at_level(logging.ERROR, "capturelab.sink.store"):
        _deliver(service, [Msg(EVENTS, 0, i, f) for i, f in enumerate(forged.values())])
    assert audit(tmp_path).pseudonyms == {}  # nothing stored
    assert service.store.counters.unauthenticated == 3
    kept = [json.loads(p.read_text()) for p in (tmp_path / "quarantine").rglob("*.json")]
    assert sorted(k["origin"] for k in kept) == [f"{EVENTS}-0-{i}" for i in range(3)]
    assert {k["pseudonym"] for k in kept} == {pseudonym("p1").hex()}  # erasure finds them
    text = caplog.text
    assert "not authenticated: collector 'c1': the frame is unsigned" in text
    assert "which is certified for collector 'c2'" in text
    assert f"collector 'c7': key {collector_key('c7').key_id} is not certified for it" in text
    status = tmp_path / "state" / "status.json"
    service.write_status(force=True)
    assert json.loads(status.read_text())["counters"]["unauthenticated"] == 3
    config = tmp_path / "sink.yml"
    config.write_text(
        f"root: {tmp_path}\nbootstrap_servers: 127.0.0.1:9\n"
        "consent_authority_file: /etc/capturelab/authority.pub\n"
    )
    capsys.readouterr()
    assert main(["sink", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^frames not authenticated +3 \(quarantined, 0 over the day's allowance only counted; "
        r"collector keys held: 2;",
        out,
        re.M,
    )


def test_a_participant_without_a_signed_grant_is_not_kept(tmp_path, caplog):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]
    service.control_step()
    key = collector_key("c1")
    with caplog.at_level(logging.WARNING, "capturelab.sink.store"):
        _deliver(service, [
            Msg(EVENTS, 0, 0, frame("c1", 0, 5, who="nobody", key=key)),
            Msg(EVENTS, 0, 1, frame("c1", 5, 5, who="p1", key=key)),
        ])  # fmt: skip
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}
    assert service.store.counters.ungranted == 1
    assert "no grant signed by the consent authority is kept for them" in caplog.text


def test_a_certificate_from_an_untrusted_signer_is_refused_and_its_key_stays_unknown(tmp_path):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0, signer=OTHER), _grant("p1", 1)]
    service.control_step()
    assert service.status.refused_control_messages == 1
    assert "collector key" in service.status.last_refused
    _deliver(service, [Msg(EVENTS, 0, 0, frame("c1", 0, 5, key=collector_key("c1")))])
    assert audit(tmp_path).pseudonyms == {}
    assert service.store.counters.unauthenticated == 1


def test_the_keyring_and_grants_survive_a_restart(tmp_path):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]
    service.control_step()
    again, _g, _c = _secure(tmp_path)
    _deliver(again, [Msg(EVENTS, 0, 0, frame("c1", 0, 5, key=collector_key("c1")))])
    assert again.status.catch_ups == 0  # known at once
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}


def test_an_erasure_ends_the_grant_so_later_frames_are_not_kept(tmp_path):
    from consentkit import erasure  # noqa: PLC0415

    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]
    service.control_step()
    control.queue = [
        Msg(TOPIC, 0, 2, erasure(pseudonym("p1"), datetime(2026, 11, 1, tzinfo=UTC)).encode())
    ]
    service.control_step()
    _deliver(service, [Msg(EVENTS, 0, 0, frame("c1", 0, 5, key=collector_key("c1")))])
    assert audit(tmp_path).pseudonyms == {}
    assert service.store.counters.ungranted == 1


@pytest.mark.parametrize("field", ["require_collector_auth", "require_grant"])
def test_the_admission_switches_must_be_booleans(field):
    from capturelab.errors import InputError  # noqa: PLC0415
    from capturelab.sink.config import parse_config  # noqa: PLC0415

    data = {"root": "/srv", "bootstrap_servers": "k:9092", "consent_authority_file": "/etc/a.pub"}
    assert getattr(parse_config(data, "sink.yml"), field) is True  # secure by default
    with pytest.raises(InputError, match=f"sink.yml: field {field} must be true or false"):
        parse_config({**data, field: "no"}, "sink.yml")


def test_a_frame_outside_every_kept_grants_window_is_not_kept(tmp_path, caplog):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]
    service.control_step()
    before = int(datetime(2025, 12, 31, tzinfo=UTC).timestamp() * 1e9)  # before it was granted
    key = collector_key("c1")
    with caplog.at_level(logging.WARNING, "capturelab.sink.store"):
        _deliver(service, [Msg(EVENTS, 0, 0, frame("c1", 0, 5, wall_ns=before, key=key))])
    assert audit(tmp_path).pseudonyms == {}
    assert service.store.counters.ungranted == 1
    assert "no grant signed by the consent authority and kept here covers 2025-12-31" in caplog.text


def test_a_frame_is_not_judged_while_the_control_topics_end_is_unknown(tmp_path, monkeypatch):
    """A broker that cannot say where the control topic ends: nothing is judged, counted or
    committed; the frame is read again, and stored once the control topic can be read."""
    service, group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]

    def away(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    monkeypatch.setattr(control, "get_watermark_offsets", away)
    msg = Msg(EVENTS, 0, 3, frame("c1", 0, 5, key=collector_key("c1")))
    service._process([msg])
    assert group.seeks == [(EVENTS, 0, 3)]  # read again later, not judged
    counters = service.store.counters
    assert (counters.batches, counters.unauthenticated, counters.ungranted) == (0, 0, 0)
    assert not any((EVENTS, 0, 4) in c for c in group.commits)
    monkeypatch.undo()
    service._consumed_at = time.monotonic()  # the redelivery is a later fetch
    service._process([msg])
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}


def test_one_catch_up_serves_every_frame_fetched_before_it(tmp_path):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]
    unknown = [frame(f"c{i}", 0, 5, key=collector_key(f"c{i}")) for i in range(5, 9)]
    good = frame("c1", 0, 5, key=collector_key("c1"))
    service._consumed_at = time.monotonic()
    service._process([Msg(EVENTS, 0, i, f) for i, f in enumerate([*unknown, good])])
    assert service.status.catch_ups == 1
    assert service.store.counters.unauthenticated == 4
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}


def test_a_region_refused_participant_counts_as_refused_without_a_catch_up(tmp_path):
    service, _group, control = _secure(tmp_path)
    eu = granted(pseudonym("p2"), replace(GRANT, region="eu"))
    control.queue = [_cert("c1", 0), Msg(TOPIC, 0, 1, eu.encode())]
    service.control_step()
    service._process([Msg(EVENTS, 0, 0, frame("c1", 0, 5, who="p2", key=collector_key("c1")))])
    counters = service.store.counters
    assert (counters.refused, counters.ungranted, service.status.catch_ups) == (1, 0, 0)


def test_each_participant_without_a_grant_is_logged(tmp_path, caplog):
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0)]
    service.control_step()
    key = collector_key("c1")
    with caplog.at_level(logging.WARNING, "capturelab.sink.store"):
        service._process([
            Msg(EVENTS, 0, 0, frame("c1", 0, 5, who="x1", key=key)),
            Msg(EVENTS, 0, 1, frame("c1", 5, 5, who="x2", key=key)),
            Msg(EVENTS, 0, 2, frame("c1", 10, 5, who="x2", key=key)),
        ])  # fmt: skip
    logged = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert len(logged) == 2 and pseudonym("x1").hex()[:12] in logged[0]
    assert pseudonym("x2").hex()[:12] in logged[1]


def test_a_forgery_for_an_erased_participant_still_counts_as_a_forgery(tmp_path):
    from consentkit import erasure  # noqa: PLC0415

    service, _group, control = _secure(tmp_path)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    control.queue = [_cert("c1", 0), Msg(TOPIC, 0, 1, erasure(pseudonym("p1"), at).encode())]
    service.control_step()
    service._process([Msg(EVENTS, 0, 0, frame("c1", 0, 5, key=collector_key("c9")))])
    assert service.store.counters.unauthenticated == 1 and service.store.counters.erased == 0


def test_a_rollback_during_a_catch_up_rewinds_the_frame_and_what_follows(tmp_path):
    service, group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0), _grant("p1", 1)]
    service.control_step()
    key = collector_key("c1")
    service.store.put(frame("c1", 0, 5, key=key), "consumed before")  # pending, not yet durable

    def full() -> None:
        raise DiskFullError("test: volume full")

    service.store.flush = full  # type: ignore[method-assign]
    service._process([
        Msg(EVENTS, 1, 9, frame("c7", 0, 5, key=collector_key("c7"))),  # unknown: a catch-up
        Msg(EVENTS, 2, 4, frame("c1", 5, 5, key=key)),
    ])  # fmt: skip
    assert service.status.state == "paused"
    assert set(group.seeks) >= {(EVENTS, 1, 9), (EVENTS, 2, 4)}
    assert service.store.counters.unauthenticated == 0 and not service._backlog


def test_forgeries_past_the_days_allowance_are_counted_not_kept(tmp_path, monkeypatch):
    from capturelab.sink import store  # noqa: PLC0415

    monkeypatch.setattr(store, "FORGED_KEPT_PER_DAY", 2)
    service, _group, control = _secure(tmp_path)
    control.queue = [_cert("c1", 0)]
    service.control_step()
    forged = [frame("c1", 5 * i, 5, key=collector_key("c9")) for i in range(4)]
    service._process([Msg(EVENTS, 0, i, f) for i, f in enumerate(forged)])
    counters = service.store.counters
    assert (counters.unauthenticated, counters.forged_not_kept) == (4, 2)
    assert len(list((tmp_path / "quarantine").rglob("*.frame"))) == 2
