"""The control feed with a stand-in consumer: every partition read, the position kept with the data
only once the message took effect, a message that could not take effect read again, a replayed
erasure not repeated. (tests/test_sink_kafka.py runs two instances against a real broker.)"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException
from consentkit import erasure, trust_file
from sinkdata import T0, frame, pseudonym
from test_sink_service import FakeConsumer, Msg

from capturelab.cli import main
from capturelab.consent import ControlType
from capturelab.errors import InputError
from capturelab.sink.audit import audit
from capturelab.sink.config import SinkConfig
from capturelab.sink.control import ControlFeed, load_position
from capturelab.sink.service import SinkService
from capturelab.sink.store import DiskFullError

TOPIC = "capture.control"


class _Meta:
    def __init__(self, partitions: int) -> None:
        self.partitions = {p: object() for p in range(partitions)}
        self.error = None


class FakeControl(FakeConsumer):
    """Serves queued control messages; records assignments and seeks."""

    def __init__(self, conf: dict[str, Any], partitions: int = 2) -> None:
        super().__init__(conf)
        self.conf = conf
        self.partitions = partitions
        self.assigned: list[tuple[int, int]] = []
        self.queue: list[Msg] = []
        self.high: dict[int, int] = {}

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: _Meta(self.partitions)})

    def assign(self, parts: list[Any]) -> None:
        self.assigned += [(p.partition, p.offset) for p in parts]

    incremental_assign = assign

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        out, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return out

    def seek(self, tp: Any) -> None:
        super().seek(tp)
        self.queue = [m for m in self.queue if m.partition() != tp.partition]  # re-fetched

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        """The end of a partition: one past the last message queued in it (or written before)."""
        assert not cached  # a catch-up must ask the broker, not an old fetch response
        offsets = [m.offset() for m in self.queue if m.partition() == tp.partition]
        self.high[tp.partition] = max([self.high.get(tp.partition, 0), *(o + 1 for o in offsets)])
        return 0, self.high[tp.partition]

    def close(self) -> None:
        pass


def _service(
    tmp_path: Path, root: Path | None = None, **config: Any
) -> tuple[SinkService, FakeConsumer, FakeControl]:
    """A service over ``root`` (default ``tmp_path``) with stand-in consumers; ``config``: more
    SinkConfig fields."""
    made: list[Any] = []

    def factory(conf: dict[str, Any]) -> Any:
        made.append(
            FakeControl(conf) if conf["client.id"].endswith("-control") else FakeConsumer(conf)
        )
        return made[-1]

    # Admission (collector keys, grants) has tests of its own: tests/test_sink_admission.py.
    config = {"require_collector_auth": False, "require_grant": False, **config}
    sink_config = SinkConfig(
        root=root or tmp_path,
        bootstrap_servers="127.0.0.1:9",
        consent_authority_file=trust_file(tmp_path / "keys"),
        min_free_bytes=0,
        **config,
    )
    service = SinkService(sink_config, consumer_factory=factory)
    service.control.start()
    return service, made[0], made[1]


def _revoke(who: str, at: datetime, offset: int, partition: int = 0) -> Msg:
    msg = erasure(pseudonym(who), at, ctype=ControlType.CONSENT_REVOKED)
    return Msg(TOPIC, partition, offset, msg.encode())


AFTER = datetime.fromtimestamp(T0 / 1e9, UTC) + timedelta(hours=1)


def test_the_control_reader_is_no_group_member_and_reads_every_partition(tmp_path: Path):
    _, group, control = _service(tmp_path)
    assert "group.instance.id" not in control.conf  # never joins: the group would split it
    assert control.assigned == [(0, OFFSET_BEGINNING), (1, OFFSET_BEGINNING)]
    assert group is not control


def test_the_position_is_saved_after_the_erasure_and_used_on_restart(tmp_path: Path):
    service, _group, control = _service(tmp_path)
    service._process([Msg("capture.events", 0, 0, frame("c1", 0, 5))])
    control.queue = [_revoke("p1", AFTER, 4, partition=1)]
    service.control_step()
    assert audit(tmp_path).pseudonyms == {}
    saved = json.loads((tmp_path / "state" / f"control-{TOPIC}.json").read_text())
    assert saved == {"topic": TOPIC, "next": {"1": 5}}
    _again, _group2, control2 = _service(tmp_path)
    assert control2.assigned == [(0, OFFSET_BEGINNING), (1, 5)]


def test_an_erasure_that_cannot_be_made_durable_is_read_again(tmp_path: Path):
    service, _group, control = _service(tmp_path)
    service._process([Msg("capture.events", 0, 0, frame("c1", 0, 5))])
    service.store.put(frame("c1", 5, 5), "capture.events-0-1")  # consumed, not yet durable
    real_flush = service.store.flush

    def full() -> None:
        raise DiskFullError("test: volume full")

    service.store.flush = full  # type: ignore[method-assign]
    control.queue = [_revoke("p1", AFTER, 0), _revoke("p2", AFTER, 1)]
    service.control_step()
    assert control.seeks == [(TOPIC, 0, 0)]  # the first, and nothing after it, again later
    assert not (tmp_path / "state" / f"control-{TOPIC}.json").exists()
    assert service.status.state == "paused"
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}  # not erased yet
    service.store.flush = real_flush  # type: ignore[method-assign]
    control.queue = [_revoke("p1", AFTER, 0), _revoke("p2", AFTER, 1)]
    service.control_step()  # still paused for space: the erasure goes ahead regardless
    assert audit(tmp_path).pseudonyms == {}
    assert service.control.next == {0: 2}


def test_a_replayed_erasure_does_not_take_a_later_consents_data(tmp_path: Path):
    service, _group, control = _service(tmp_path)
    service._process([Msg("capture.events", 0, 0, frame("c1", 0, 5))])
    control.queue = [_revoke("p1", AFTER, 0)]
    service.control_step()
    later = T0 + 2 * 3_600_000_000_000  # captured after a new consent
    service._process([Msg("capture.events", 0, 1, frame("c1", 5, 5, wall_ns=later))])
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}
    control.queue = [_revoke("p1", AFTER, 0)]  # the same message again (a lost position)
    service.control_step()
    assert audit(tmp_path).pseudonyms == {pseudonym("p1").hex(): 5}
    assert service.status.erasures == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "unreadable"),
        ('{"next": {"x": 1}}', "unreadable"),
        ('{"next": {"0": -3}}', "negative"),
        ("[]", "unreadable"),
    ],
)
def test_a_damaged_position_file_is_named(tmp_path: Path, text: str, needle: str):
    path = tmp_path / "control.json"
    path.write_text(text)
    with pytest.raises(InputError, match=needle) as err:
        load_position(path)
    assert str(path) in str(err.value)


def test_a_control_topic_that_grows_is_picked_up(tmp_path: Path):
    control = FakeControl({}, partitions=1)
    feed = ControlFeed(control, TOPIC, tmp_path)
    feed.start()
    control.partitions = 3
    feed.refresh(force=True)
    assert control.assigned == [(0, OFFSET_BEGINNING), (1, OFFSET_BEGINNING), (2, OFFSET_BEGINNING)]
    assert feed.partitions == [0, 1, 2]


def test_status_shows_how_far_the_control_topic_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    service, _group, control = _service(tmp_path)
    service.status.state = "running"
    control.queue = [_revoke("p1", AFTER, 6, partition=1)]
    service.control_step()
    service.write_status(force=True)
    config = tmp_path / "sink.yml"
    config.write_text(
        f"root: {tmp_path}\nbootstrap_servers: 127.0.0.1:9\nconsent_authority_file: /etc/capturelab/authority.pub\n"
    )
    assert main(["sink", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^control read up to +1:7$", out, re.MULTILINE)
    assert main(["sink", "status", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["control_partitions"] == [0, 1] and doc["control_next"] == {"1": 7}


def test_a_broker_away_during_a_refresh_is_tried_again_later(tmp_path: Path):
    control = FakeControl({}, partitions=1)
    feed = ControlFeed(control, TOPIC, tmp_path)
    real = control.list_topics

    def away(topic: str, timeout: float) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    control.list_topics = away  # type: ignore[method-assign]
    feed.start()  # logged, not raised: the service keeps running
    assert feed.partitions == [] and feed.poll(10) == []
    control.list_topics = real  # type: ignore[method-assign]
    feed.refresh(force=True)
    assert feed.partitions == [0]
