"""The service's commit discipline with a stand-in consumer: commit only after fsync; a failed
flush rewinds every partition to its first uncommitted message and pauses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consentkit import trust_file
from sinkdata import frame

from capturelab.sink.config import SinkConfig
from capturelab.sink.service import SinkService
from capturelab.sink.store import DiskFullError


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v


class FakeConsumer:
    def __init__(self, _conf: dict[str, Any]) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.paused = False

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append([(o.topic, o.partition, o.offset) for o in offsets])

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def assignment(self) -> list[Any]:
        return ["capture.events-0"]

    def pause(self, _parts: list[Any]) -> None:
        self.paused = True

    def position(self, _parts: list[Any]) -> list[Any]:
        return []  # nothing fetched yet: the status reports no lag rather than a made-up one


def _service(tmp_path: Path) -> SinkService:
    config = SinkConfig(
        root=tmp_path,
        bootstrap_servers="127.0.0.1:9",
        consent_authority_file=trust_file(tmp_path / "keys"),
        min_free_bytes=0,
        require_collector_auth=False,  # admission: tests/test_sink_admission.py
        require_grant=False,
    )
    return SinkService(config, consumer_factory=FakeConsumer)  # type: ignore[arg-type]


def test_offsets_are_committed_after_the_flush(tmp_path: Path):
    service = _service(tmp_path)
    consumer: FakeConsumer = service.consumer  # type: ignore[assignment]
    flushed: list[int] = []
    real_flush = service.store.flush

    def flush() -> None:
        real_flush()
        flushed.append(len(consumer.commits))

    service.store.flush = flush  # type: ignore[method-assign]
    service._process(
        [
            Msg("capture.events", 0, 10, frame("c1", 0, 5)),
            Msg("capture.events", 1, 7, frame("c2", 0, 5)),
        ]
    )
    assert flushed == [0]  # the flush happened before any commit
    assert consumer.commits == [[("capture.events", 0, 11), ("capture.events", 1, 8)]]


def test_failed_flush_rewinds_and_pauses(tmp_path: Path):
    service = _service(tmp_path)
    consumer: FakeConsumer = service.consumer  # type: ignore[assignment]

    def full() -> None:
        raise DiskFullError("test: volume full")

    service.store.flush = full  # type: ignore[method-assign]
    service._process(
        [
            Msg("capture.events", 0, 10, frame("c1", 0, 5)),
            Msg("capture.events", 0, 11, frame("c1", 5, 5)),
            Msg("capture.events", 2, 3, frame("c2", 0, 5)),
        ]
    )
    assert consumer.commits == []  # nothing durable, nothing committed
    assert sorted(consumer.seeks) == [("capture.events", 0, 10), ("capture.events", 2, 3)]
    assert consumer.paused and service.status.state == "paused"
    assert "volume full" in service.status.reason


def test_a_write_failure_mid_batch_rewinds_every_partition_it_touched(tmp_path: Path):
    """A put that fails after earlier frames of its segment were put but not flushed: those
    frames are gone with it, so the flush must fail and the rewind must also cover the failed
    message's partition, where nothing had been processed yet in this batch."""
    service = _service(tmp_path)
    consumer: FakeConsumer = service.consumer  # type: ignore[assignment]
    real_put = service.store.put
    calls: list[str] = []

    def put(value: bytes, origin: str, *, final: bool = True) -> Any:
        calls.append(origin)
        if origin == "capture.events-2-3":
            service.store._failed = OSError(28, "No space left on device")
            raise DiskFullError("test: write failed")
        return real_put(value, origin)

    service.store.put = put  # type: ignore[method-assign]
    service._process(
        [
            Msg("capture.events", 0, 10, frame("c1", 0, 5)),
            Msg("capture.events", 2, 3, frame("c2", 0, 5)),
            Msg("capture.events", 2, 4, frame("c2", 5, 5)),
        ]
    )
    assert calls == ["capture.events-0-10", "capture.events-2-3"]
    assert consumer.commits == []
    assert sorted(consumer.seeks) == [("capture.events", 0, 10), ("capture.events", 2, 3)]
    assert consumer.paused and service._backlog == []
    assert not list((tmp_path / "segments").rglob("*.idx")) or all(
        p.stat().st_size == 0 for p in (tmp_path / "segments").rglob("*.idx")
    )
