"""Prove what the store holds: per collector, which sequences, any gap, any duplicate.

``capturelab sink verify`` and the end-to-end suite use this: "every event sent is stored exactly
once" means, per collector, one contiguous range from 0 with no repeat. With ``--frames`` each
indexed frame is read back and decoded whole (CRC32C, decompression with the frame's dictionary,
every event's sequence): a frame whose CRC is valid but whose payload does not decode is bad.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from capturelab.schema import FrameError, decode_batch, read_header
from capturelab.sink import index as idx
from capturelab.sink.layout import Layout


@dataclass
class CollectorAudit:
    events: int = 0
    batches: int = 0
    duplicates: int = 0  # events stored more than once
    intervals: list[tuple[int, int]] = field(default_factory=list)

    def gaps(self) -> list[tuple[int, int]]:
        """Missing sequence ranges between the first stored sequence and the last."""
        out = []
        merged = _merge(self.intervals)
        for (_, end), (start, _) in itertools.pairwise(merged):
            out.append((end + 1, start - 1))
        return out

    def window(self, first: int, last: int) -> dict[str, Any]:
        """Sequences ``first..last`` (one run's events): how many are stored, once each?"""
        clipped = [
            (max(s, first), min(e, last)) for s, e in self.intervals if e >= first and s <= last
        ]
        merged = _merge(clipped)
        stored = sum(e - s + 1 for s, e in merged)
        missing, cursor = [], first
        for s, e in merged:
            if s > cursor:
                missing.append([cursor, s - 1])
            cursor = e + 1
        if cursor <= last:
            missing.append([cursor, last])
        return {
            "first_seq": first,
            "last_seq": last,
            "expected": last - first + 1,
            "stored": stored,
            "missing": missing,
            "duplicates": sum(e - s + 1 for s, e in clipped) - stored,
        }


@dataclass
class Audit:
    collectors: dict[str, CollectorAudit] = field(default_factory=dict)
    pseudonyms: dict[str, int] = field(default_factory=dict)  # events per pseudonym
    bad_frames: list[str] = field(default_factory=list)
    bytes: int = 0

    @property
    def events(self) -> int:
        return sum(c.events for c in self.collectors.values())

    def ok(self) -> bool:
        return not self.bad_frames and all(
            c.duplicates == 0 and not c.gaps() for c in self.collectors.values()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok(),
            "events": self.events,
            "bytes": self.bytes,
            "pseudonyms": len(self.pseudonyms),
            "bad_frames": self.bad_frames,
            "collectors": {
                cid: {
                    "events": c.events,
                    "batches": c.batches,
                    "duplicates": c.duplicates,
                    "first_seq": _merge(c.intervals)[0][0] if c.intervals else None,
                    "last_seq": _merge(c.intervals)[-1][1] if c.intervals else None,
                    "gaps": [list(g) for g in c.gaps()],
                }
                for cid, c in sorted(self.collectors.items())
            },
        }


def audit(
    root: Path,
    *,
    frames: bool = False,
    pseudonym: str | None = None,
    dictionaries: Mapping[int, zstandard.ZstdCompressionDict] | None = None,
) -> Audit:
    """Walk the index files under ``root``; with ``frames`` decode every frame (``dictionaries`` by id)."""
    result = Audit()
    for hour in Layout(root).hour_files(pseudonym):
        entries = list(idx.iter_entries(hour.index))
        data = hour.segment.read_bytes() if frames and hour.segment.exists() else b""
        for e in entries:
            c = result.collectors.setdefault(e.collector_id, CollectorAudit())
            c.events += e.count
            c.batches += 1
            c.intervals.append((e.first_seq, e.last_seq))
            result.pseudonyms[hour.pseudonym] = result.pseudonyms.get(hour.pseudonym, 0) + e.count
            result.bytes += e.length
            if frames:
                frame = data[e.offset : e.end]
                try:
                    header = read_header(frame)
                    decode_batch(frame, dictionaries=dictionaries)
                    if (header.collector_id, header.first_seq, header.count, header.crc) != (
                        e.collector_id,
                        e.first_seq,
                        e.count,
                        e.crc,
                    ):
                        raise FrameError("frame does not match its index entry")
                except FrameError as exc:
                    result.bad_frames.append(f"{hour.segment}@{e.offset}: {exc}")
    for c in result.collectors.values():
        c.duplicates = sum(e - s + 1 for s, e in c.intervals) - sum(
            e - s + 1 for s, e in _merge(c.intervals)
        )
    return result


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out
