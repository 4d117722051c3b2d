"""Read the sink's store back: every indexed batch, checked, decoded, grouped into sessions.

The reader trusts nothing it reads: each frame must match its index entry (collector, first
sequence, count, CRC) and decode with its CRC32C; a frame that does not is counted with the
reason and skipped, never half-used. Events are grouped per pseudonym and collector, ordered by
sequence (the same event stored twice is kept once), and cut into sessions where the wall clock
jumps by more than ``session_gap_s``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import zstandard

from capturelab.schema import Event, FrameError, decode_batch
from capturelab.sink import index as idx
from capturelab.sink.layout import Layout


@dataclass
class ReadStats:
    frames: int = 0
    events: int = 0
    duplicates: int = 0
    corrupt: Counter[str] = field(default_factory=Counter)  # reason -> frames


@dataclass(frozen=True)
class Session:
    """One collector's contiguous activity for one pseudonym."""

    id: str
    pseudonym: str
    collector_id: str
    events: tuple[Event, ...]


def session_id(pseudonym: str, collector_id: str, first_seq: int) -> str:
    """Opaque and stable: the same stored session has the same id in every build."""
    return hashlib.sha256(f"{pseudonym}:{collector_id}:{first_seq}".encode()).hexdigest()[:16]


def _frames(
    layout: Layout,
    pseudonym: str,
    stats: ReadStats,
    dictionaries: Mapping[int, zstandard.ZstdCompressionDict],
) -> Iterator[tuple[str, Event]]:
    for hour in layout.hour_files(pseudonym):
        data = hour.segment.read_bytes() if hour.segment.exists() else b""
        for entry in idx.iter_entries(hour.index):
            stats.frames += 1
            frame = data[entry.offset : entry.end]
            if len(frame) != entry.length:
                stats.corrupt["frame shorter than its index entry"] += 1
                continue
            try:
                batch = decode_batch(frame, dictionaries=dictionaries)
            except FrameError as exc:
                stats.corrupt[_reason(str(exc))] += 1
                continue
            first = batch.events[0].seq if batch.events else -1
            if (
                batch.collector_id != entry.collector_id
                or first != entry.first_seq
                or len(batch.events) != entry.count
                or batch.pseudonym.hex() != pseudonym
            ):
                stats.corrupt["frame does not match its index entry"] += 1
                continue
            for event in batch.events:
                yield batch.collector_id, event


def _reason(message: str) -> str:
    """Group frame errors by kind, not by the numbers in them."""
    return message.split(":", maxsplit=1)[0]


def sessions(
    layout: Layout,
    pseudonym: str,
    stats: ReadStats,
    *,
    session_gap_s: float,
    dictionaries: Mapping[int, zstandard.ZstdCompressionDict] | None = None,
) -> list[Session]:
    by_collector: dict[str, dict[int, Event]] = {}
    for collector, event in _frames(layout, pseudonym, stats, dictionaries or {}):
        seen = by_collector.setdefault(collector, {})
        if event.seq in seen:
            stats.duplicates += 1
            continue
        seen[event.seq] = event
        stats.events += 1
    gap_ns = int(session_gap_s * 1e9)
    out: list[Session] = []
    for collector, events in sorted(by_collector.items()):
        current: list[Event] = []
        for seq in sorted(events):
            event = events[seq]
            if current and event.wall_ns - current[-1].wall_ns > gap_ns:
                out.append(_session(pseudonym, collector, current))
                current = []
            current.append(event)
        if current:
            out.append(_session(pseudonym, collector, current))
    return out


def _session(pseudonym: str, collector: str, events: list[Event]) -> Session:
    return Session(
        session_id(pseudonym, collector, events[0].seq), pseudonym, collector, tuple(events)
    )
