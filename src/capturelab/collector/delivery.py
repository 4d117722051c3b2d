"""Delivery: a thread that sends the spool to Kafka in order and deletes what Kafka acknowledged.

The producer is capturelab's durable one (``transport.producer_config``: acks=all, idempotent,
ordered). A control message is a barrier: nothing queued after it is sent before Kafka
acknowledged it, so a collector key certificate or a grant is on the control topic before any
frame that needs it is on the capture topic. An item leaves the spool only in its delivery
report's success callback, so an unreachable gateway, a failed authentication or a crash all
leave it on disk to be sent again.
A resend after a failed report can repeat an item Kafka already has; (collector id, sequence) lets
the sink drop the repeat, so the stream downstream has no loss and no duplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from capturelab.collector.spool import Item, Spool

log = logging.getLogger(__name__)


class ProducerLike(Protocol):
    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...


@dataclass
class DeliveryStatus:
    delivered_items: int = 0
    delivered_bytes: int = 0
    failed_reports: int = 0
    last_delivery: float | None = None
    last_error: str = ""
    error_since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered_items": self.delivered_items,
            "delivered_bytes": self.delivered_bytes,
            "failed_reports": self.failed_reports,
            "last_delivery": self.last_delivery,
            "last_error": self.last_error,
            "error_since": self.error_since,
        }


def _default_factory(config: Mapping[str, Any]) -> ProducerLike:
    from confluent_kafka import Producer  # noqa: PLC0415 - librdkafka only where we deliver

    return cast("ProducerLike", Producer(dict(config)))


def explain(code_name: str, text: str) -> str:
    """A sentence for the status: what failed, and that nothing is lost."""
    if "AUTHENTICATION" in code_name or "SASL" in text.upper():
        return f"Kafka authentication failed ({text}): batches stay in the spool"
    if code_name in ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE"):
        return f"gateway unreachable ({text}): batches stay in the spool"
    return f"{code_name}: {text}: batches stay in the spool"


class Delivery(threading.Thread):
    def __init__(
        self,
        spool: Spool,
        config: Mapping[str, Any],
        capture_topic: str,
        collector_id: str,
        *,
        max_in_flight: int = 64,
        producer_factory: Callable[[Mapping[str, Any]], ProducerLike] = _default_factory,
    ) -> None:
        super().__init__(name="delivery", daemon=True)
        self.spool = spool
        self.capture_topic = capture_topic
        self.key = collector_id.encode()
        self.max_in_flight = max_in_flight
        self.status = DeliveryStatus()
        self._config = dict(config)
        self._config["error_cb"] = self._on_error
        self._factory = producer_factory
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._drain_until = 0.0
        self._retry_after = 0.0
        self._fatal = False

    # --- callbacks (run inside poll/flush, on this thread) ----------------------------------

    def _on_error(self, err: Any) -> None:
        code_name = str(err.name()) if hasattr(err, "name") else "error"
        message = explain(code_name, str(err.str() if hasattr(err, "str") else err))
        with self._lock:
            if self.status.error_since is None:
                self.status.error_since = time.time()
            self.status.last_error = message
        if getattr(err, "fatal", lambda: False)():
            self._fatal = True
        log.warning("%s", message)

    def _report(self, item: Item) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _msg: Any) -> None:
            with self._lock:
                self._in_flight.discard(item.number)
            if err is not None:
                self._on_error(err)
                with self._lock:
                    self.status.failed_reports += 1
                self._retry_after = time.monotonic() + 1.0
                return
            self.spool.done(item)
            with self._lock:
                self.status.delivered_items += 1
                self.status.delivered_bytes += item.size
                self.status.last_delivery = time.time()
                self.status.last_error = ""
                self.status.error_since = None

        return on_delivery

    # --- the loop ---------------------------------------------------------------------------

    def _send_pending(self, producer: ProducerLike) -> None:
        if time.monotonic() < self._retry_after:
            return
        for item in self.spool.pending():
            with self._lock:
                if item.number in self._in_flight:
                    if item.is_control:
                        return  # a barrier: nothing queued after it leaves before it is acked
                    continue
                if len(self._in_flight) >= self.max_in_flight:
                    return
            try:
                if item.is_control:
                    topic, key, value = Spool.read_control(item)
                else:
                    topic, key, value = self.capture_topic, self.key, item.path.read_bytes()
            except FileNotFoundError:
                continue  # delivered and deleted meanwhile
            try:
                producer.produce(topic, value=value, key=key, on_delivery=self._report(item))
            except BufferError:
                return  # the local queue is full: poll, then go on
            with self._lock:
                self._in_flight.add(item.number)
            if item.is_control:
                return

    def run(self) -> None:
        producer = self._factory(self._config)
        while True:
            if self._fatal:
                log.error("the producer hit a fatal error: starting a new one")
                producer.flush(5)
                with self._lock:
                    self._in_flight.clear()
                self._fatal = False
                producer = self._factory(self._config)
            self._send_pending(producer)
            producer.poll(0.05)
            if self._stopping.is_set():
                with self._lock:
                    idle = not self._in_flight
                if (idle and not self.spool.pending()) or time.monotonic() >= self._drain_until:
                    break
        producer.flush(max(0.0, self._drain_until - time.monotonic()))

    def stop(self, drain_s: float = 5.0) -> None:
        """Stop after sending what is spooled, waiting at most ``drain_s`` seconds."""
        self._drain_until = time.monotonic() + drain_s
        self._stopping.set()
        self.join(drain_s + 10)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            doc = self.status.to_dict()
            doc["in_flight"] = len(self._in_flight)
        return doc
