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

from capturelab.collector import evdev, synth
from capturelab.collector.edge import EdgeFilter
from capturelab.consent import Scope
from capturelab.schema import (
    Batch,
    ContextEvent,
    Event,
    EventFlag,
    InputEvent,
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


def session_stream(
    seconds: float, mouse_hz: int, seed: int
) -> tuple[list[tuple[int, bytes]], float]:
    """The session as (device, bytes) reads of one second each, in time order, and its length."""
    session = synth.build_session(seed, seconds, mouse_hz=mouse_hz)
    events = sorted([*session.keyboard, *session.mouse], key=lambda e: e[0])
    start = time.time_ns()
    reads: list[tuple[int, bytes]] = []
    by_second: dict[tuple[int, int], list[bytes]] = {}
    for t, device, etype, code, value in events:
        wall = start + t
        rec = evdev.pack(wall // 10**9, wall % 10**9 // 1000, etype, code, value)
        by_second.setdefault((t // 10**9, int(device)), []).append(rec)
    for (_sec, dev), recs in sorted(by_second.items()):
        reads.append((dev, b"".join(recs)))
    return reads, events[-1][0] / 1e9 if events else seconds


def peak_events_per_s(reads: list[tuple[int, bytes]]) -> int:
    """The busiest second of the session (both devices), in kernel records."""
    per_second: dict[int, int] = {}
    for _device, data in reads:
        for sec, *_ in evdev.INPUT_EVENT.iter_unpack(data[: evdev.EVENT_SIZE]):
            per_second[sec] = per_second.get(sec, 0) + len(data) // evdev.EVENT_SIZE
    return max(per_second.values(), default=0)


class _Producer:
    def __init__(self, bootstrap: str | None) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        config: dict[str, Any] = dict(producer_config(bootstrap or "mock:9092", "bench-collector"))
        if bootstrap is None:
            config["test.mock.num.brokers"] = 1
        config["log_level"] = 3
        self.producer = Producer(config)
        self.topic = "capture.events"
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


def run_ours(reads: list[tuple[int, bytes]], scopes: frozenset[Scope], level: int,
             bootstrap: str | None) -> Run:  # fmt: skip
    producer = _Producer(bootstrap)
    edge = EdgeFilter(scopes)
    pseudonym = pseudonymize(b"bench-lab-secret-0123456789", "bench-participant")
    state = {"seq": 0, "events": 0, "raw": 0, "sent": 0, "batches": 0}
    check, process = evdev.check_raw, edge.process

    def consume(device_byte: int, chunk: bytes) -> None:
        from capturelab.schema import DeviceClass  # noqa: PLC0415

        device = DeviceClass(device_byte)
        offset = time.monotonic_ns() - time.time_ns()
        n = 0
        for raw in evdev.INPUT_EVENT.iter_unpack(chunk):
            n += 1
            if check(raw, device) is None:
                process(device, raw, raw[0] * 1_000_000_000 + raw[1] * 1000 + offset)
        state["events"] += n
        state["raw"] += len(chunk)
        edge.flush()
        _seal(edge, pseudonym, state, level, producer)

    cpu0, t0 = _cpu(), time.perf_counter()
    _through_pipe(reads, consume)
    producer.close()
    return Run(state["events"], _cpu() - cpu0, time.perf_counter() - t0, state["raw"],
               state["sent"], state["batches"])  # fmt: skip


def _seal(edge: EdgeFilter, pseudonym: bytes, state: dict[str, int], level: int,
          producer: _Producer) -> None:  # fmt: skip
    if not edge.out:
        return
    seq = state["seq"]
    events: list[Event] = []
    for item in edge.out:
        if len(item) == 7:
            mono, wall, device, etype, code, value, flags = item
            events.append(InputEvent(seq, mono, wall, device, etype, code, value, EventFlag(flags)))
        else:
            mono, wall, app, title, flags = item
            events.append(ContextEvent(seq, mono, wall, app, title, EventFlag(flags)))
        seq += 1
    edge.out = []
    frame = encode_batch(Batch("bench", pseudonym, tuple(events)), level=level)
    producer.send(frame)
    state["seq"], state["sent"], state["batches"] = (
        seq,
        state["sent"] + len(frame),
        state["batches"] + 1,
    )


def run_reference(reads: list[tuple[int, bytes]], level: int, bootstrap: str | None) -> Run:
    producer = _Producer(bootstrap)
    compressor = zstandard.ZstdCompressor(level=level)
    totals = {"events": 0, "raw": 0, "sent": 0, "batches": 0}

    def consume(_device: int, chunk: bytes) -> None:
        frame = compressor.compress(chunk)
        producer.send(frame)
        totals["events"] += len(chunk) // evdev.EVENT_SIZE
        totals["raw"] += len(chunk)
        totals["sent"] += len(frame)
        totals["batches"] += 1

    cpu0, t0 = _cpu(), time.perf_counter()
    _through_pipe(reads, consume)
    producer.close()
    return Run(totals["events"], _cpu() - cpu0, time.perf_counter() - t0, totals["raw"],
               totals["sent"], totals["batches"])  # fmt: skip
