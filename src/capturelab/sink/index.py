"""The index record: one per stored batch, fixed size, self-checking.

``<32s collector id><Q first seq><I count><Q offset><I length><I frame crc32c><I record crc32c>``,
little-endian, 64 bytes. The record's own CRC32C (over its first 60 bytes) lets recovery tell a
torn or garbage tail from a real entry. ``offset``/``length`` locate the frame in the segment;
``frame crc`` is the frame header's CRC, so a reader can verify the frame it reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c

from capturelab.schema import COLLECTOR_ID_BYTES

RECORD = struct.Struct(f"<{COLLECTOR_ID_BYTES}sQIQII")
RECORD_SIZE = RECORD.size + 4  # 64


@dataclass(frozen=True, slots=True)
class IndexEntry:
    collector_id: str
    first_seq: int
    count: int
    offset: int
    length: int
    crc: int

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    @property
    def end(self) -> int:
        return self.offset + self.length

    def pack(self) -> bytes:
        body = RECORD.pack(
            self.collector_id.encode().ljust(COLLECTOR_ID_BYTES, b"\0"),
            self.first_seq,
            self.count,
            self.offset,
            self.length,
            self.crc,
        )
        return body + struct.pack("<I", crc32c.crc32c(body))


def unpack(record: bytes) -> IndexEntry | None:
    """The entry, or None when the record is torn or not an index record."""
    if len(record) != RECORD_SIZE:
        return None
    body, (check,) = record[: RECORD.size], struct.unpack("<I", record[RECORD.size :])
    if crc32c.crc32c(body) != check:
        return None
    cid, first, count, offset, length, crc = RECORD.unpack(body)
    try:
        collector = cid.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        return None
    return IndexEntry(collector, first, count, offset, length, crc)


def read_valid(path: Path) -> tuple[list[IndexEntry], int]:
    """The valid entries from the start of the file, and the byte length they occupy.

    Reading stops at the first torn or invalid record: everything after it was never
    acknowledged (offsets are committed only after the index is fsynced).
    """
    entries: list[IndexEntry] = []
    data = path.read_bytes() if path.exists() else b""
    pos = 0
    while pos + RECORD_SIZE <= len(data):
        entry = unpack(data[pos : pos + RECORD_SIZE])
        if entry is None:
            break
        entries.append(entry)
        pos += RECORD_SIZE
    return entries, pos


def iter_entries(path: Path) -> Iterator[IndexEntry]:
    yield from read_valid(path)[0]
