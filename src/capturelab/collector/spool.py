"""The collector's bounded on-disk spool: every sealed batch is written here before it is sent.

Layout under the spool directory (the only path the service may write):

``queue/<item>.batch``   a framed batch (the exact Kafka value), named by a 20-digit item number
``queue/<item>.ctl``     a control message (JSON: topic, key, value) such as an erasure request
``state.json``           the next sequence number and item number (written atomically)
``lock``                 held (``flock``, exclusive) by the one process that owns the spool; it
                         holds that process's pid for the message a second one gets
``quarantine/``          malformed raw input records, with a reason log
``tmp/``                 files being written (renamed into ``queue/`` once fsync'd)

One process owns a spool: a second ``Spool`` on the same folder (another daemon, a second
collector configured with the same spool) is refused, naming the folder and the holder's pid.
The kernel drops the lock with its holder, so the lock of a killed daemon is taken over (and
said so) by the next start; there is no stale lock to clean by hand.

Items are delivered in item order and deleted once Kafka acknowledged them (acks=all). A batch
is written whole (fsync) in ``tmp/`` first, then the state (the batch's last sequence + 1) is
written (fsync, rename), then the batch is renamed into the queue. So a sequence number that
reached the queue is never handed out again, even when its batch is delivered and deleted just
before a crash; and a write that fails (ENOSPC, EIO) changes neither the state nor the queue:
the same sequence numbers go to the next try, none is burned. Events not yet sealed live only in
memory: a crash loses them (at most one batch interval) and their numbers are reused, so nothing
sent is ever duplicated or contradicted.

The spool is bounded: ``full()`` tells the daemon to stop capturing (it never drops a batch it
has sealed; a seal may overshoot the bound by one batch). A failed write pauses it as well, and
it stays paused until the file system has room again: free blocks for the write and free inodes
(``pause_reason()`` says which). A write that fails while the file system shows that room (EIO,
EROFS, a quota, reserved blocks) keeps capture paused for a backoff that doubles from 1 s to 60 s
while the failures go on, so a failing card does not flap capture on and off every batch; the
sealer keeps trying while capture is paused, and the first write that works resumes it at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capturelab.durable import fsync_dir, write_atomic, write_synced
from capturelab.errors import InputError

log = logging.getLogger(__name__)

ITEM_DIGITS = 20
RETRY_FIRST_S = 1.0  # backoff after a write that failed with room on the file system
RETRY_MAX_S = 60.0
BATCH = ".batch"
CONTROL = ".ctl"


@dataclass(frozen=True)
class Item:
    number: int
    path: Path
    size: int

    @property
    def is_control(self) -> bool:
        return self.path.suffix == CONTROL


class Spool:
    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        resume_fraction: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1 << 20:
            raise InputError(f"spool_max_bytes must be at least 1 MiB, got {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self.resume_bytes = int(max_bytes * resume_fraction)
        self.queue = root / "queue"
        self.tmp = root / "tmp"
        self.quarantine_dir = root / "quarantine"
        root.mkdir(parents=True, exist_ok=True)
        self._owner = _take_lock(root / "lock")  # before anything in the spool is touched
        for d in (self.queue, self.tmp, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._finish_interrupted_writes()
        self._lock = threading.Lock()
        self._write_error = ""  # why the last write failed; capture stays paused until room
        self._needed = 0  # bytes the failed write needed
        self._clock = clock
        self._retry_at = 0.0  # no write is tried again before this (clock), after a failure
        self._backoff = 0.0  # seconds, doubled per consecutive failure with room; 0 after a write
        self._items: dict[int, Item] = {}
        for path in self.queue.iterdir():
            stem, suffix = path.stem, path.suffix
            if suffix in (BATCH, CONTROL) and stem.isdigit():
                self._items[int(stem)] = Item(int(stem), path, path.stat().st_size)
        self.next_seq, self.next_item = self._load_state()
        self._bytes = sum(i.size for i in self._items.values())
        self._paused = self._bytes >= self.max_bytes

    # --- state ------------------------------------------------------------------------------

    def _finish_interrupted_writes(self) -> None:
        """An item in ``tmp/`` whose number the saved state already counts was written whole
        before the state (a crash came before its rename): it enters the queue, or its
        sequence numbers would be lost. Anything else in ``tmp/`` is a half write: removed."""
        counted = 0
        state = self.root / "state.json"
        if state.exists():
            try:
                counted = int(json.loads(state.read_text())["next_item"])
            except (ValueError, KeyError, TypeError):
                return  # _load_state stops the start, naming the damage; tmp/ stays as it is
        for path in self.tmp.iterdir():
            stem, suffix = path.stem, path.suffix
            if suffix in (BATCH, CONTROL) and stem.isdigit() and int(stem) < counted:
                path.replace(self.queue / path.name)
                log.warning("%s: finished an interrupted write (%s)", self.root, path.name)
            else:
                path.unlink()
        fsync_dir(self.queue)

    def _load_state(self) -> tuple[int, int]:
        path = self.root / "state.json"
        next_seq = next_item = 0
        if path.exists():
            try:
                doc = json.loads(path.read_text())
                next_seq, next_item = int(doc["next_seq"]), int(doc["next_item"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(
                    f"{path}: the spool state is damaged ({exc}). Sequence numbers must never be "
                    "reused: restore it, or move the whole spool aside only after its queue was "
                    "delivered"
                ) from None
        if self._items:
            next_item = max(next_item, max(self._items) + 1)
        return next_seq, next_item

    def _save_state(self, next_seq: int, next_item: int) -> None:
        doc = {"next_seq": next_seq, "next_item": next_item, "updated": time.time()}
        write_atomic(self.root / "state.json", json.dumps(doc).encode(), self.tmp)

    def close(self) -> None:
        """Give the spool up (the lock goes with it; a crash or kill does the same, but leaves
        the pid in the file, so the next start can say it took a dead holder's lock over)."""
        if self._owner >= 0:
            os.ftruncate(self._owner, 0)
            os.close(self._owner)
            self._owner = -1

    # --- writing ----------------------------------------------------------------------------

    def _enqueue(self, data: bytes, suffix: str, next_seq: int | None = None) -> Item:
        """Write the item whole, then the state, then rename it into the queue (see above)."""
        with self._lock:
            number = self.next_item
            seq = self.next_seq if next_seq is None else next_seq
            if seq < self.next_seq:
                raise ValueError(f"sequence {seq} is behind the spool's {self.next_seq}")
            name = f"{number:0{ITEM_DIGITS}d}{suffix}"
            try:
                write_synced(self.tmp / name, data)
                fsync_dir(self.tmp)  # its name too, before the state counts it
                self._save_state(seq, number + 1)
            except OSError as exc:
                (self.tmp / name).unlink(missing_ok=True)
                self._failed(exc, len(data))
                raise
            self._recovered()
            self.next_seq, self.next_item = seq, number + 1
            item = Item(number, self._into_queue(name), len(data))
            self._items[number] = item
            self._bytes += item.size
            if self._bytes >= self.max_bytes:
                self._paused = True
        return item

    def _into_queue(self, name: str) -> Path:
        """Rename an item the state already counts into the queue. It is whole and fsynced in
        tmp/, so where the rename fails it is sent from there (raising would make the caller
        seal its sequences again: a second item for them); the next start moves it."""
        try:
            (self.tmp / name).replace(self.queue / name)
        except OSError as exc:
            if (self.queue / name).exists() and not (self.tmp / name).exists():
                log.error("spool: the rename of %s reported %s but took effect", name, exc)
                return self.queue / name
            log.error("spool: %s stays in %s (%s); it is sent from there", name, self.tmp, exc)
            return self.tmp / name
        try:
            fsync_dir(self.queue)
        except OSError as exc:  # the rename is done; only its durability is in doubt
            log.error("spool: fsync of %s failed after %s was queued: %s", self.queue, name, exc)
        return self.queue / name

    def _failed(self, exc: OSError, size: int) -> None:
        """Pause: until room for ``size``; where the file system showed that room when the
        write failed (EIO, a quota, reserved blocks), also until a growing backoff has passed."""
        self._write_error = f"cannot write the spool {self.root}: {exc.strerror}"
        self._needed, self._paused = size + (1 << 20), True
        if self._room() < self._needed:
            self._retry_at = 0.0  # no room: resume as soon as there is
            self._write_error += " (no room: free blocks or inodes)"
        else:
            self._backoff = min(RETRY_MAX_S, max(RETRY_FIRST_S, self._backoff * 2))
            self._retry_at = self._clock() + self._backoff

    def _recovered(self) -> None:
        """A write worked (the sealer tries while capture is paused): the failure is over."""
        if self._write_error:
            log.info("the spool takes writes again (%s before)", self._write_error)
            self._write_error = ""
            self._paused = self._bytes > self.resume_bytes
        self._backoff, self._retry_at = 0.0, 0.0

    def put_batch(self, frame: bytes, next_seq: int) -> Item:
        """Queue a sealed batch; ``next_seq`` (its last sequence + 1) is persisted with it."""
        return self._enqueue(frame, BATCH, next_seq)

    def put_control(self, topic: str, key: bytes, value: bytes) -> Item:
        doc = {"topic": topic, "key": key.decode(), "value": value.decode()}
        return self._enqueue(json.dumps(doc, sort_keys=True).encode(), CONTROL)

    def quarantine(self, source: str, raw: bytes, reason: str) -> None:
        """Keep a malformed record and say why (bounded: the log stops growing at 1 MiB)."""
        log = self.quarantine_dir / "records.jsonl"
        if log.exists() and log.stat().st_size > 1 << 20:
            return
        line = {"at": time.time(), "source": source, "reason": reason, "raw": raw.hex()}
        with log.open("a") as f:
            f.write(json.dumps(line) + "\n")

    # --- reading and delivery ---------------------------------------------------------------

    def pending(self) -> list[Item]:
        with self._lock:
            return [self._items[n] for n in sorted(self._items)]

    def done(self, item: Item) -> None:
        """Kafka acknowledged the item: delete it."""
        item.path.unlink(missing_ok=True)
        with self._lock:
            if self._items.pop(item.number, None) is not None:
                self._bytes -= item.size
            if self._paused and not self._write_error and self._bytes <= self.resume_bytes:
                self._paused = False

    @staticmethod
    def read_control(item: Item) -> tuple[str, bytes, bytes]:
        doc = json.loads(item.path.read_bytes())
        return str(doc["topic"]), str(doc["key"]).encode(), str(doc["value"]).encode()

    # --- bounds -----------------------------------------------------------------------------

    def full(self) -> bool:
        """Capture must pause: the spool reached its bound (it resumes below 90 % of it), or
        a write failed and the file system has not had room for it since (or, for a failure
        with room, its backoff has not passed)."""
        with self._lock:
            if (
                self._write_error
                and self._clock() >= self._retry_at
                and self._room() >= self._needed
            ):
                log.info("the spool has room again (%s before)", self._write_error)
                self._write_error = ""
                self._paused = self._bytes > self.resume_bytes
            return self._paused

    def pause_reason(self) -> str:
        """Why ``full()`` is true: the failed write, else the bound."""
        with self._lock:
            if self._write_error:
                wait = self._retry_at - self._clock()
                if wait > 0:
                    return (
                        f"{self._write_error}; capture resumes when a write works, or in "
                        f"{wait:.0f} s at the earliest"
                    )
                return f"{self._write_error}; capture resumes when it has room again"
            return (
                f"spool full ({self._bytes} of {self.max_bytes} bytes); it resumes when the "
                "gateway takes the backlog"
            )

    def _room(self) -> int:
        """Bytes a write may use: none while no inode is free (a write needs two files), where
        the file system counts inodes (btrfs reports none: f_files 0)."""
        st = os.statvfs(self.root)
        inodes = st.f_favail >= 2 or st.f_files == 0
        return st.f_bavail * st.f_frsize if inodes else 0

    def depth(self) -> tuple[int, int]:
        """(items, bytes) waiting for delivery."""
        with self._lock:
            return len(self._items), self._bytes


def _take_lock(path: Path) -> int:
    """Hold ``path`` exclusively for this process (its pid inside), or refuse naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        who = "this process" if holder == str(os.getpid()) else "another process"
        raise InputError(
            f"{path.parent}: the spool is in use by {who} (pid {holder}); one collector owns a "
            "spool: stop the other one, or give this one its own spool_dir"
        ) from None
    before = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if before and before != str(os.getpid()):
        log.warning("%s: took over the lock of pid %s, which no longer holds it", path, before)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
