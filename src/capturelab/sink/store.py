"""Segment files: append, fsync, recover. Every batch lands once or is quarantined, never dropped,
except the batches of an erased participant, or of one whose grant was refused (``refused``) or
who has no signed grant here (``Admitter.cover``): those are counted and not kept. A batch that
no key certified for its collector signed (``Admitter.authenticate``) is quarantined and counted.

Durability protocol (the sink commits Kafka offsets only after ``flush`` returns):

1. ``put`` appends the frame to its hour's segment (not durable yet; with direct I/O it may still be
   in a staging buffer, ``capturelab.sink.appender``) and remembers an index entry;
2. ``flush`` syncs every touched segment, then appends their index entries, fsyncs the indexes
   and any new directories;
3. on start, ``recover`` trusts only valid index entries: segment bytes past the last indexed
   frame were never acknowledged and are cut off, so a crash at any point leaves no torn frame
   and no entry pointing at missing bytes. The uncommitted messages are redelivered and land.

A full volume raises ``DiskFullError`` *before* anything is written (free space below the reserve), or
rolls the write back on ENOSPC; nothing acknowledged is touched, and the caller pauses intake. A
failed write that took earlier unflushed frames of its segment with it makes the next ``flush``
fail too, so that no offset of a lost frame is ever committed.
"""

from __future__ import annotations

import enum
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import zstandard

from capturelab.durable import fsync_dir, write_atomic
from capturelab.errors import CapturelabError, InputError
from capturelab.schema import FrameError, FrameHeader, decode_batch, peek_batch, read_header
from capturelab.sink import index as idx
from capturelab.sink.appender import (
    WRITE_CHUNK,
    Appender,
    BufferedAppender,
    DirectAppender,
    Writer,
    direct_io_supported,
)
from capturelab.sink.layout import HourFile, Layout
from capturelab.sink.ledger import Ledger, Seen

log = logging.getLogger(__name__)


class DiskFullError(CapturelabError):
    """The array is (nearly) full: pause intake; nothing was lost or half-written."""


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # every event already stored: a redelivery, not written again
    ERASED = "erased"  # the pseudonym was erased and the batch predates the erasure
    REFUSED = "refused"  # the participant's grant was refused (an excluded region), or it has
    # no signed grant on this node: not kept
    QUARANTINED = "quarantined"
    UNKNOWN = "unknown"  # (put with final=False) the admission check needs the control topic
    # read further first: nothing was stored or counted; put it again with final=True


class Admission(enum.Enum):
    """The storage tier's verdict on who sent a frame and for whom (``Admitter``)."""

    STORE = "store"
    UNKNOWN = "unknown"  # not known yet (only when not final): its key or grant may be on its way
    FORGED = "forged"  # not signed by a key the authority certified for its collector: quarantined
    UNGRANTED = "ungranted"  # no signed grant for its participant here: not kept


@dataclass
class Counters:
    batches: int = 0
    events: int = 0
    bytes_written: int = 0
    duplicates: int = 0
    erased: int = 0
    refused: int = 0
    quarantined: int = 0
    unauthenticated: int = 0  # quarantined: no certified collector key signed them
    forged_not_kept: int = 0  # of those, past the day's quarantine allowance: counted only
    ungranted: int = 0  # not kept: their participant has no signed grant on this node
    recovered_bytes_cut: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Open:
    hour: HourFile
    appender: Appender
    new_dirs: set[Path] = field(default_factory=set)
    pending: list[idx.IndexEntry] = field(default_factory=list)


ErasedCheck = Callable[[str, int], bool]
RefusedCheck = Callable[[str], str]  # pseudonym -> why its frames are refused ('' = stored)


class Admitter(Protocol):
    """The storage tier's admission rules (``SinkService``); each answers UNKNOWN only when not
    ``final``. Asked in this order: who sent it, then (after the erased and refused checks) for
    whom."""

    def authenticate(self, frame: bytes, header: FrameHeader, final: bool) -> tuple[Admission, str]:
        """STORE, UNKNOWN or FORGED: did a key certified for ``header.collector_id`` sign it?"""
        ...

    def cover(self, pseudonym: str, wall_ns: int, final: bool) -> tuple[Admission, str]:
        """STORE, UNKNOWN or UNGRANTED: does a kept signed grant cover this participant then?"""
        ...


class _AdmitAll:
    def authenticate(self, frame: bytes, header: FrameHeader, final: bool) -> tuple[Admission, str]:
        return Admission.STORE, ""

    def cover(self, pseudonym: str, wall_ns: int, final: bool) -> tuple[Admission, str]:
        return Admission.STORE, ""


NS_PER_HOUR = 3_600_000_000_000
FORGED_KEPT_PER_DAY = 1000  # forged frames quarantined per claimed collector and day
STATVFS_EVERY_S = 1.0
STATVFS_MARGIN = 64 << 20  # re-check free space once the estimate is this close to the reserve


class SegmentStore:
    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int = 0,
        max_open: int = 64,
        dictionaries: Mapping[int, zstandard.ZstdCompressionDict] | None = None,
        erased: ErasedCheck | None = None,
        refused: RefusedCheck | None = None,
        admit: Admitter | None = None,
        full_decode: bool = False,
        direct_io: bool | None = None,
        write_chunk: int = WRITE_CHUNK,
    ) -> None:
        self.layout = Layout(root)
        self.layout.create()
        self.min_free_bytes = min_free_bytes
        self.max_open = max_open
        self.dictionaries = dict(dictionaries or {})
        self.is_erased: ErasedCheck = erased or (lambda _p, _w: False)
        self.refusal: RefusedCheck = refused or (lambda _p: "")
        self.admit: Admitter = admit or _AdmitAll()
        self.last_refused = ("", "")  # (pseudonym, why) logged last: each participant once
        self._forged_kept: dict[tuple[str, str], int] = {}  # (day, claimed collector) -> kept
        # False: header + CRC32C + pseudonym prefix only (the CRC covers every byte); True: also
        # decode every event (the dataset builder does that anyway).
        self.full_decode = full_decode
        # None: O_DIRECT wherever the filesystem takes it; True: required; False: page cache.
        supported = direct_io is not False and direct_io_supported(self.layout.state)
        if direct_io is True and not supported:
            raise InputError(
                f"direct_io is direct, but the filesystem of {root} refuses O_DIRECT writes "
                "(set it to auto or buffered)"
            )
        self.writer = Writer(chunk=write_chunk) if supported else None
        self._failed: OSError | None = None  # a write failure that lost unflushed frames
        self.counters = Counters()
        self.ledger = Ledger()
        self._pending_ledger = Ledger()
        self._open: dict[tuple[str, int], _Open] = {}  # (pseudonym, hour number) -> open files
        self._free_checked_at = -1.0  # monotonic time of the last statvfs
        self._free_estimate = 0  # bytes free then, minus what was written since
        self.recover()

    @property
    def write_mode(self) -> str:
        """How segments are written: "direct" (O_DIRECT) or "buffered" (the page cache)."""
        return "buffered" if self.writer is None else "direct"

    # --- start-up ------------------------------------------------------------------------------

    def recover(self) -> None:
        """Cut unacknowledged tails, drop orphan segments, rebuild the dedup ledger."""
        self.ledger = Ledger()
        segments = self.layout.segments
        for seg in sorted(segments.glob("*/*/*/*/*" + ".seg")):
            if not seg.with_suffix(".idx").exists():
                log.warning("removing %s: no index entry was ever written for it", seg)
                self.counters.recovered_bytes_cut += seg.stat().st_size
                seg.unlink()
        for hour in self.layout.hour_files():
            entries, valid_len = idx.read_valid(hour.index)
            size = hour.segment.stat().st_size if hour.segment.exists() else 0
            keep = [e for e in entries if e.end <= size]
            if len(keep) != len(entries):
                log.error(
                    "%s: %d index entries point past the segment's end; dropping them",
                    hour.index,
                    len(entries) - len(keep),
                )
            if len(keep) != len(entries) or valid_len != hour.index.stat().st_size:
                write_atomic(hour.index, b"".join(e.pack() for e in keep))
            end = keep[-1].end if keep else 0
            if size > end:
                log.warning("%s: cutting %d unacknowledged bytes", hour.segment, size - end)
                self.counters.recovered_bytes_cut += size - end
                with hour.segment.open("r+b") as fh:
                    fh.truncate(end)
                    os.fsync(fh.fileno())
            for e in keep:
                self.ledger.add(e.collector_id, e.first_seq, e.count)

    # --- writing -------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        st = os.statvfs(self.layout.root)
        return st.f_bavail * st.f_frsize

    def _check_space(self, size: int) -> None:
        """DiskFullError before a write would dip into the reserve.

        statvfs runs at most every STATVFS_EVERY_S or once the writes since the last call could
        have used up the headroom above the reserve; in between, the estimate is decremented by
        what was written (a frame at a time on a full volume, where it matters).
        """
        now = time.monotonic()
        headroom = self._free_estimate - self.min_free_bytes - size
        if now - self._free_checked_at >= STATVFS_EVERY_S or headroom < STATVFS_MARGIN:
            self._free_estimate = self.free_bytes()
            self._free_checked_at = now
        if self._free_estimate - size < self.min_free_bytes:
            raise DiskFullError(
                f"{self.layout.root}: {self._free_estimate} bytes free, reserve is "
                f"{self.min_free_bytes}: intake paused"
            )
        self._free_estimate -= size

    def put(self, frame: bytes, origin: str, *, final: bool = True) -> Outcome:
        """Store one frame (not yet durable: call ``flush``). ``origin`` names it in quarantine.

        With ``final=False`` a frame the admission check cannot judge yet (a collector key or a
        grant not seen) comes back ``UNKNOWN``, untouched; with ``final=True`` it is judged."""
        try:
            if self.full_decode:
                batch = decode_batch(frame, dictionaries=self.dictionaries)
                header = read_header(frame)
                pseudonym, wall_ns = batch.pseudonym_hex, batch.events[0].wall_ns
            else:
                peek = peek_batch(frame, dictionaries=self.dictionaries)
                header = peek.header
                pseudonym, wall_ns = peek.pseudonym.hex(), peek.first_wall_ns
        except FrameError as exc:
            self.quarantine(frame, origin, str(exc))
            return Outcome.QUARANTINED
        collector, first, count, crc = (
            header.collector_id,
            header.first_seq,
            header.count,
            header.crc,
        )
        admitted = self._admit(
            frame, header, pseudonym=pseudonym, wall_ns=wall_ns, origin=origin, final=final
        )
        if admitted is not None:
            return admitted
        seen = self._seen(collector, first, count)
        if seen is Seen.STORED:
            self.counters.duplicates += 1
            return Outcome.DUPLICATE
        if seen is Seen.PARTIAL:
            self.quarantine(
                frame,
                origin,
                f"events {first}..{first + count - 1} of collector "
                f"{collector} overlap events already stored (re-framed batch)",
                pseudonym=pseudonym,
            )
            return Outcome.QUARANTINED
        self._check_space(len(frame))
        handle = self._handle(pseudonym, wall_ns)
        try:
            offset = handle.appender.append(frame)
        except OSError as exc:
            if handle.pending:  # earlier frames of this segment went with it: flush must fail
                self._failed = exc
            self._rollback(handle)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"{handle.hour.segment}: {exc.strerror}: intake paused"
                ) from None
            raise
        handle.pending.append(
            idx.IndexEntry(
                collector,
                first,
                count,
                offset,
                len(frame),
                crc,
            )
        )
        self._pending_ledger.add(collector, first, count)
        return Outcome.STORED

    def flush(self) -> None:
        """Make every stored frame durable; after this returns its offset may be committed."""
        dirty = [h for h in self._open.values() if h.pending]
        try:
            if self._failed is not None:
                failed, self._failed = self._failed, None
                raise failed
            for h in dirty:
                h.appender.sync()
            for h in dirty:
                with h.hour.index.open("ab") as fh:
                    fh.write(b"".join(e.pack() for e in h.pending))
                    fh.flush()
                    os.fsync(fh.fileno())
            for d in sorted({d for h in dirty for d in h.new_dirs}, key=lambda p: len(p.parts)):
                fsync_dir(d)
        except OSError as exc:
            for h in dirty:
                self._rollback(h)
            self._pending_ledger = Ledger()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"{self.layout.root}: {exc.strerror} while flushing") from None
            raise
        for h in dirty:
            for e in h.pending:
                self.ledger.add(e.collector_id, e.first_seq, e.count)
                self.counters.batches += 1
                self.counters.events += e.count
                self.counters.bytes_written += e.length
            h.pending.clear()
            h.new_dirs.clear()
        self._pending_ledger = Ledger()
        if len(self._open) > self.max_open:
            self.close()

    def discard_pending(self) -> None:
        """Drop what was put but not flushed (its messages will be redelivered)."""
        for h in self._open.values():
            if h.pending or h.appender.size != h.appender.durable_size:
                self._rollback(h)
        self._pending_ledger = Ledger()
        self._failed = None

    def close(self, pseudonym: str | None = None) -> None:
        """Close open segments (all, or one pseudonym's); pending writes must be flushed first."""
        for key, h in list(self._open.items()):
            if pseudonym is None or h.hour.pseudonym == pseudonym:
                if h.pending:
                    raise RuntimeError(f"{h.hour.segment} has unflushed frames")
                h.appender.close()
                del self._open[key]
        if pseudonym is None and self.writer is not None:
            self.writer.shutdown()

    def _admit(
        self, frame: bytes, header: FrameHeader, *, pseudonym: str, wall_ns: int, origin: str,
        final: bool,
    ) -> Outcome | None:  # fmt: skip
        """None when the frame may be stored; else what became of it. A forgery is a forgery
        whoever it names; only then the erased, refused and grant checks."""
        verdict, why = self.admit.authenticate(frame, header, final)
        if verdict is Admission.UNKNOWN and not final:
            return Outcome.UNKNOWN
        if verdict is not Admission.STORE:
            return self._forged(frame, header, pseudonym=pseudonym, origin=origin, why=why)
        return self._for_whom(pseudonym, wall_ns, origin, final)

    def _forged(
        self, frame: bytes, header: FrameHeader, *, pseudonym: str, origin: str, why: str
    ) -> Outcome:
        """Quarantine a forgery, up to FORGED_KEPT_PER_DAY per claimed collector: beyond that
        it is counted and logged, not kept (a principal that can write the topic must not be
        able to fill the array with them)."""
        self.counters.unauthenticated += 1
        day = (datetime.now(UTC).date().isoformat(), header.collector_id)
        kept = self._forged_kept.get(day, 0)
        if kept >= FORGED_KEPT_PER_DAY:
            self.counters.forged_not_kept += 1
            if kept == FORGED_KEPT_PER_DAY:
                log.error("%s: %d forged frames of collector %r quarantined today: further ones "
                          "are counted, not kept (%s)", origin, kept, header.collector_id, why)  # fmt: skip
                self._forged_kept[day] = kept + 1
            return Outcome.REFUSED
        self._forged_kept = {k: v for k, v in self._forged_kept.items() if k[0] == day[0]}
        self._forged_kept[day] = kept + 1
        self.quarantine(frame, origin, f"not authenticated: {why}", pseudonym=pseudonym)
        return Outcome.QUARANTINED

    def _for_whom(self, pseudonym: str, wall_ns: int, origin: str, final: bool) -> Outcome | None:
        if self.is_erased(pseudonym, wall_ns):
            self.counters.erased += 1
            return Outcome.ERASED
        refused = self.refusal(pseudonym)
        if refused:
            self.counters.refused += 1
            self._log_refusal(origin, pseudonym, refused)
            return Outcome.REFUSED
        verdict, why = self.admit.cover(pseudonym, wall_ns, final)
        if verdict is Admission.UNKNOWN and not final:
            return Outcome.UNKNOWN
        if verdict is not Admission.STORE:
            self.counters.ungranted += 1
            self._log_refusal(origin, pseudonym, why)
            return Outcome.REFUSED
        return None

    def _log_refusal(self, origin: str, pseudonym: str, why: str) -> None:
        if (pseudonym, why) != self.last_refused:
            log.warning("%s: frames of %s... not stored: %s", origin, pseudonym[:12], why)
            self.last_refused = (pseudonym, why)

    # --- quarantine ----------------------------------------------------------------------------

    def quarantine(self, frame: bytes, origin: str, reason: str, pseudonym: str = "") -> Path:
        """Keep a bad frame, byte for byte, with why; durable before the caller commits."""
        day = datetime.now(UTC)
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in origin)[:120]
        base = self.layout.quarantine / f"{day:%Y-%m-%d}" / safe
        write_atomic(base.parent / f"{base.name}.frame", frame)
        meta = {"origin": origin, "reason": reason, "at": day.isoformat(), "bytes": len(frame)}
        if pseudonym:
            meta["pseudonym"] = pseudonym
        write_atomic(base.parent / f"{base.name}.json", json.dumps(meta, sort_keys=True).encode())
        self.counters.quarantined += 1
        log.error("quarantined %s: %s", origin, reason)
        return base

    # --- internals -----------------------------------------------------------------------------

    def _seen(self, collector_id: str, first: int, count: int) -> Seen:
        durable = self.ledger.seen(collector_id, first, count)
        pending = self._pending_ledger.seen(collector_id, first, count)
        if Seen.STORED in (durable, pending):
            return Seen.STORED
        if Seen.PARTIAL in (durable, pending):
            return Seen.PARTIAL
        return Seen.NEW

    def _handle(self, pseudonym: str, wall_ns: int) -> _Open:
        key = (pseudonym, wall_ns // NS_PER_HOUR)
        handle = self._open.get(key)
        if handle is not None:
            return handle
        hour = self.layout.hour_file(pseudonym, wall_ns)
        new_dirs: set[Path] = set()
        parent = hour.segment.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir()
            new_dirs.add(d.parent)
        if not hour.segment.exists() or not hour.index.exists():
            new_dirs.add(hour.segment.parent)
            hour.index.touch()
        appender: Appender = (
            DirectAppender(hour.segment, self.writer)
            if self.writer is not None
            else BufferedAppender(hour.segment)
        )
        handle = _Open(hour, appender, new_dirs)
        self._open[key] = handle
        return handle

    def _rollback(self, h: _Open) -> None:
        h.pending.clear()
        h.appender.rollback()
