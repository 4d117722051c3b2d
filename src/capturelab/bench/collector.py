"""``capturelab bench collector``: the edge pipeline's CPU cost and compression, on a real stream.

A synthetic session (``capturelab synth``'s model: typing at about 52 WPM plus a mouse at the
given report rate, 1000 Hz by default) is turned into the bytes a read of ``/dev/input`` returns
and pushed through the collector's own path, in one process:

    read (24-byte records from a pipe) -> check -> edge policy (scopes, text scrubbing)
    -> number and frame (schema) -> zstd -> produce (librdkafka, acks=all, idempotent)

The reference, run side by side on the same bytes: the least a collector could do, the raw
kernel records read from the same pipe, zstd-compressed per batch at the same level and produced
the same way. CPU is the process's user+system time (librdkafka's threads included), so the ratio
is what capturelab's policy and framing cost on top of shipping raw records.

The producer talks to librdkafka's built-in mock cluster unless ``--bootstrap`` names a broker;
the mock broker's threads run in this process, which inflates both sides alike.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import zstandard

from capturelab import gateway
from capturelab.collector import evdev, synth
from capturelab.collector.edge import EdgeFilter, number
from capturelab.consent import Scope
from capturelab.schema import (
    Batch,
    encode_batch,
    pseudonymize,
)
from capturelab.transport import producer_config

TARGET_COMPRESSION = 4.0
TARGET_CPU_SHARE = 0.02  # of one core, at the session's real event rate
SCOPES = {
    "timing": frozenset({Scope.KEYS_TIMING, Scope.MOUSE}),
    "text": frozenset({Scope.KEYS_TIMING, Scope.KEYS_TEXT, Scope.MOUSE}),
}


@dataclass
class Run:
    events: int
    cpu_s: float
    wall_s: float
    raw_bytes: int
    sent_bytes: int
    batches: int

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / self.events * 1e6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            cpu_s_per_million_events=round(self.cpu_s_per_million, 3),
            events_per_s=round(self.events / self.wall_s, 1),
            raw_bytes_per_event=round(self.raw_bytes / self.events, 2),
            sent_bytes_per_event=round(self.sent_bytes / self.events, 3),
            compression_ratio=round(self.raw_bytes / self.sent_bytes, 2),
        )
        return d


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


SEAL = 255  # a marker in the read stream: the batch interval ended


def session_stream(
    seconds: float, mouse_hz: int, seed: int, batch_ms: int = 1000, busy: bool = False
) -> tuple[list[tuple[int, bytes]], float, int]:
    """The session as device reads, a SEAL marker after each batch interval (as the daemon
    seals), its length in seconds, and its busiest second's event count. ``busy``: typing on
    top of continuous mouse motion (``synth.build_busy_session``)."""
    build = synth.build_busy_session if busy else synth.build_session
    session = build(seed, seconds, mouse_hz=mouse_hz)
    events = sorted([*session.keyboard, *session.mouse], key=lambda e: e[0])
    start = time.time_ns()
    interval_ns = batch_ms * 1_000_000
    chunks: dict[tuple[int, int], list[bytes]] = {}
    per_second: dict[int, int] = {}
    for t, device, etype, code, value in events:
        wall = start + t
        rec = evdev.pack(wall // 10**9, wall % 10**9 // 1000, etype, code, value)
        chunks.setdefault((t // interval_ns, int(device)), []).append(rec)
        per_second[t // 10**9] = per_second.get(t // 10**9, 0) + 1
    reads: list[tuple[int, bytes]] = []
    last = None
    for (interval, dev), recs in sorted(chunks.items()):
        if last is not None and interval != last:
            reads.append((SEAL, b""))
        reads.append((dev, b"".join(recs)))
        last = interval
    reads.append((SEAL, b""))
    length = events[-1][0] / 1e9 if events else seconds
    return reads, length, max(per_second.values(), default=0)


class _Producer:
    def __init__(self, bootstrap: str | None) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        config: dict[str, Any] = dict(
            producer_config(bootstrap or f"mock:{gateway.PLAINTEXT_PORT}", "bench-collector")
        )
        if bootstrap is None:
            config["test.mock.num.brokers"] = 1
        config["log_level"] = 3
        self.producer = Producer(config)
        self.topic = gateway.CAPTURE_TOPIC
        self.failed = 0

    def send(self, value: bytes) -> None:
        self.producer.produce(self.topic, value=value, key=b"bench", on_delivery=self._report)
        self.producer.poll(0)

    def _report(self, err: object, _msg: object) -> None:
        if err is not None:
            self.failed += 1

    def close(self) -> None:
        self.producer.flush(60)


def _through_pipe(reads: list[tuple[int, bytes]], consume: Any) -> None:
    """Write the reads into a pipe from a thread; ``consume(device, chunk)`` reads them back."""
    r, w = os.pipe()

    def writer() -> None:
        for device, data in reads:
            header = bytes([device]) + len(data).to_bytes(4, "little")
            os.write(w, header)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        os.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(r, "rb", buffering=1 << 20) as f:
        while header := f.read(5):
            consume(header[0], f.read(int.from_bytes(header[1:], "little")))
    thread.join()


@dataclass(frozen=True)
class SealRule:
    """The daemon's sealing rule in batch intervals: seal once ``min_events`` are held, or
    after ``max_ticks`` intervals (batch_max_interval_ms / batch_interval_ms)."""

    min_events: int = 256
    max_ticks: int = 5


def run_ours(reads: list[tuple[int, bytes]], scopes: frozenset[Scope], level: int,
             bootstrap: str | None, rule: SealRule = SealRule()) -> Run:  # fmt: skip
    producer = _Producer(bootstrap)
    edge = EdgeFilter(scopes)
    pseudonym = pseudonymize(b"bench-lab-secret-0123456789", "bench-participant")
    state = {"seq": 0, "events": 0, "raw": 0, "sent": 0, "batches": 0, "ticks": 0}
    check, process = evdev.check_raw, edge.process

    def consume(device_byte: int, chunk: bytes) -> None:
        from capturelab.schema import DeviceClass  # noqa: PLC0415

        if device_byte == SEAL:
            state["ticks"] += 1
            edge.flush()
            if len(edge.out) >= rule.min_events or state["ticks"] >= rule.max_ticks:
                _seal(edge, pseudonym, state, level, producer)
                state["ticks"] = 0
            return
        device = DeviceClass(device_byte)
        offset = time.monotonic_ns() - time.time_ns()
        n = 0
        for raw in evdev.INPUT_EVENT.iter_unpack(chunk):
            n += 1
            if check(raw, device) is None:
                process(device, raw, raw[0] * 1_000_000_000 + raw[1] * 1000 + offset)
        state["events"] += n
        state["raw"] += len(chunk)

    cpu0, t0 = _cpu(), time.perf_counter()
    _through_pipe(reads, consume)
    edge.flush()
    _seal(edge, pseudonym, state, level, producer)  # what the last interval held
    producer.close()
    return Run(state["events"], _cpu() - cpu0, time.perf_counter() - t0, state["raw"],
               state["sent"], state["batches"])  # fmt: skip


def _seal(edge: EdgeFilter, pseudonym: bytes, state: dict[str, int], level: int,
          producer: _Producer) -> None:  # fmt: skip
    if not edge.out:
        return
    events = number(edge.out, state["seq"])
    seq = events[-1].seq + 1
    edge.out = []
    frame = encode_batch(Batch("bench", pseudonym, tuple(events)), level=level)
    producer.send(frame)
    state["seq"], state["sent"], state["batches"] = (
        seq,
        state["sent"] + len(frame),
        state["batches"] + 1,
    )


def run_reference(
    reads: list[tuple[int, bytes]], level: int, bootstrap: str | None, rule: SealRule = SealRule()
) -> Run:
    producer = _Producer(bootstrap)
    compressor = zstandard.ZstdCompressor(level=level)
    totals = {"events": 0, "raw": 0, "sent": 0, "batches": 0, "ticks": 0}

    pending: list[bytes] = []

    def consume(device: int, chunk: bytes) -> None:
        if device != SEAL:
            pending.append(chunk)
            return
        totals["ticks"] += 1
        held = sum(len(c) for c in pending) // evdev.EVENT_SIZE
        if not (held >= rule.min_events or totals["ticks"] >= rule.max_ticks) or not held:
            return
        totals["ticks"] = 0
        raw = b"".join(pending)
        pending.clear()
        frame = compressor.compress(raw)
        producer.send(frame)
        totals["events"] += len(raw) // evdev.EVENT_SIZE
        totals["raw"] += len(raw)
        totals["sent"] += len(frame)
        totals["batches"] += 1

    cpu0, t0 = _cpu(), time.perf_counter()
    _through_pipe(reads, consume)
    if pending:
        totals["ticks"] = rule.max_ticks
        consume(SEAL, b"")
    producer.close()
    return Run(totals["events"], _cpu() - cpu0, time.perf_counter() - t0, totals["raw"],
               totals["sent"], totals["batches"])  # fmt: skip
