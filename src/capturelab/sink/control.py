"""The control topic, read whole by every sink instance.

Capture partitions are shared through the consumer group: each instance lands its share on its own
array. Control messages (consent granted, revoked, erasure requested) must reach *every* array, so
the control topic is not consumed through the group: its partitions are assigned by hand and the
position is kept beside the data, in ``<root>/state/control-<topic>.json``, written (fsynced) only
after the messages before it took effect. A new array reads the control topic from its start
(compacted, long retention): it learns every grant and tombstone it needs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition

from capturelab.durable import write_atomic
from capturelab.errors import InputError

log = logging.getLogger(__name__)
REFRESH_EVERY_S = 60.0  # partitions added to the control topic are picked up this often


class ControlConsumer(Protocol):
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def incremental_assign(self, partitions: list[TopicPartition]) -> None: ...
    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def list_topics(self, topic: str, timeout: float) -> Any: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]: ...
    def close(self) -> None: ...


def load_position(path: Path) -> dict[int, int]:
    """``{partition: next offset}``; an absent file means: from the start."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        position = {int(p): int(o) for p, o in dict(raw["next"]).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"{path}: the control topic's position is unreadable ({exc}); remove the file to "
            "re-read the control topic from its start (grants and erasures are idempotent)"
        ) from exc
    bad = sorted(p for p, o in position.items() if p < 0 or o < 0)
    if bad:
        raise InputError(f"{path}: negative partition or offset for partition(s) {bad}")
    return position


class ControlFeed:
    def __init__(self, consumer: ControlConsumer, topic: str, state: Path) -> None:
        self.consumer = consumer
        self.topic = topic
        self.path = state / f"control-{topic}.json"
        self.next = load_position(self.path)
        self._saved = dict(self.next)
        self._assigned: set[int] = set()
        self._last_refresh = 0.0

    def start(self) -> None:
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Assign partitions of the control topic not assigned yet (it may have grown)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < REFRESH_EVERY_S:
            return
        self._last_refresh = now
        try:
            meta = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        except KafkaException as exc:  # a broker away (restarting): try again next time
            log.warning("control topic %s: metadata unavailable (%s)", self.topic, exc)
            return
        if meta is None or meta.error is not None:
            log.warning("control topic %s: no metadata yet (%s)", self.topic, meta and meta.error)
            return
        new = sorted(set(meta.partitions) - self._assigned)
        if not new:
            return
        parts = [TopicPartition(self.topic, p, self.next.get(p, OFFSET_BEGINNING)) for p in new]
        if self._assigned:
            self.consumer.incremental_assign(parts)
        else:
            self.consumer.assign(parts)
        self._assigned.update(new)
        log.info("control topic %s: reading partitions %s", self.topic, new)

    @property
    def partitions(self) -> list[int]:
        return sorted(self._assigned)

    def poll(self, max_messages: int, timeout: float = 0) -> list[Message]:
        if not self._assigned:
            return []
        return self.consumer.consume(num_messages=max_messages, timeout=timeout)

    def behind(self) -> dict[int, int] | None:
        """``{partition: high watermark}`` for each partition not read up to its end now, asked
        of the broker; None when that cannot be known (no partition assigned yet, or a
        watermark the broker did not give)."""
        if not self._assigned:
            return None
        out: dict[int, int] = {}
        for p in sorted(self._assigned):
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=5, cached=False
                )
            except KafkaException as exc:
                log.warning("control topic %s-%d: end unknown (%s)", self.topic, p, exc)
                return None
            if high < 0:
                return None
            if self.next.get(p, 0) < high:
                out[p] = high
        return out

    def done(self, msg: Message) -> None:
        """``msg`` took effect (its grant or tombstone is durable)."""
        self.next[msg.partition() or 0] = (msg.offset() or 0) + 1

    def retry(self, msg: Message) -> None:
        """``msg`` could not take effect now: read it again next time."""
        self.consumer.seek(TopicPartition(self.topic, msg.partition() or 0, msg.offset() or 0))

    def save(self) -> None:
        if self.next == self._saved:
            return
        doc = {"topic": self.topic, "next": {str(p): o for p, o in sorted(self.next.items())}}
        write_atomic(self.path, json.dumps(doc, indent=1).encode())
        self._saved = dict(self.next)

    def close(self) -> None:
        self.consumer.close()
