"""Appending frames to one segment file: ``append``, then ``sync`` makes it durable.

Two ways to write, one contract. ``rollback`` returns the file to its last ``sync``.

**Direct** (``O_DIRECT``, used wherever the filesystem accepts it):

- ``append`` only queues a reference to the frame. No copy is made yet.
- Once ``WRITE_CHUNK`` bytes are queued, they are copied once into a page-aligned staging
  buffer. The store's ``Writer`` thread writes that buffer while the caller checks the next
  frames. The write goes straight from the buffer to the device: the kernel does not copy it
  into the page cache and write it back later.
- Every write starts and ends on a ``BLOCK`` boundary. The partial last block stays in memory
  and is written again, completed, with the next write.
- ``sync`` writes what is left (the last block padded with zeros), cuts the file back to its
  logical size and calls ``fdatasync``.

**Buffered** (for filesystems without ``O_DIRECT``): each frame is written at once and ``sync``
is ``fsync``.

A failed background write is raised by the next ``append`` or ``sync`` of the same file.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from capturelab.errors import InputError

BLOCK = 4096  # O_DIRECT alignment: a multiple of every logical block size in use (512, 4096)
WRITE_CHUNK = 4 << 20  # bytes per background write: a full stripe of 8 x 512 KiB chunks


class Appender(Protocol):
    size: int  # logical size: every appended byte
    durable_size: int  # size at the last sync

    def append(self, frame: bytes) -> int: ...

    def sync(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        n = os.pwrite(fd, data[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"pwrite wrote {n} bytes at offset {offset + done}")
        done += n


class Writer:
    """Background writes of staged chunks: ``depth`` at once, ``depth + 1`` reusable buffers."""

    def __init__(self, depth: int = 2, chunk: int = WRITE_CHUNK) -> None:
        if chunk <= 0 or chunk % BLOCK:
            raise InputError(f"write chunk {chunk} must be a positive multiple of {BLOCK}")
        self.chunk = chunk
        self.depth = depth
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._made = 0
        self._pool: ThreadPoolExecutor | None = None

    def buffer(self) -> mmap.mmap:
        """A page-aligned buffer of ``chunk`` bytes; waits while all of them are being written."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._made <= self.depth:
                self._made += 1
                return mmap.mmap(-1, self.chunk)
            return self._free.get()

    def release(self, buf: mmap.mmap) -> None:
        self._free.put(buf)

    def submit(self, fd: int, buf: mmap.mmap, offset: int, length: int) -> Future[None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.depth, thread_name_prefix="sink-writer")

        def job() -> None:
            view = memoryview(buf)
            try:
                pwrite_all(fd, view[:length], offset)
            finally:
                view.release()
                self.release(buf)

        return self._pool.submit(job)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class BufferedAppender:
    """Writes each frame at once through the page cache; ``sync`` is ``fsync``."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        self.size = self.durable_size = os.fstat(self.fd).st_size

    def append(self, frame: bytes) -> int:
        offset = self.size
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            os.ftruncate(self.fd, offset)  # no part of a frame that failed stays behind
            raise
        self.size += len(frame)
        return offset

    def sync(self) -> None:
        os.fsync(self.fd)
        self.durable_size = self.size

    def rollback(self) -> None:
        os.ftruncate(self.fd, self.durable_size)
        self.size = self.durable_size

    def close(self) -> None:
        os.close(self.fd)


class DirectAppender:
    """``O_DIRECT`` appends through aligned staging buffers (see the module's docstring)."""

    def __init__(self, path: Path, writer: Writer) -> None:
        self.writer = writer
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_CLOEXEC, 0o666)
        try:
            self.size = self.durable_size = os.fstat(self.fd).st_size
            self._base = self.size - self.size % BLOCK  # where the next write starts
            with path.open("rb") as fh:  # the partial last block, to complete and rewrite
                fh.seek(self._base)
                self._tail = fh.read(self.size - self._base)
        except BaseException:
            os.close(self.fd)
            raise
        self._durable_tail = self._tail
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self._jobs: list[Future[None]] = []
        self._padded = False  # the file holds zeros past ``size`` (the last sync's padding)

    def append(self, frame: bytes) -> int:
        if self._jobs and self._jobs[0].done():
            self._raise_failed()
        offset = self.size
        self._queued.append(frame)
        self._queued_bytes += len(frame)
        self.size += len(frame)
        if self._queued_bytes >= self.writer.chunk:
            self._stage(final=False)
        return offset

    def sync(self) -> None:
        if self.size == self.durable_size:
            return  # nothing appended since the last sync (no write is outstanding then)
        self._stage(final=True)
        self._wait()
        if self._padded:
            os.ftruncate(self.fd, self.size)
            self._padded = False
        os.fdatasync(self.fd)
        self.durable_size = self.size
        self._durable_tail = self._tail

    def rollback(self) -> None:
        for job in self._jobs:
            job.exception()  # wait; the error no longer matters: the bytes are cut off
        self._jobs.clear()
        self._queued.clear()
        self._queued_bytes = 0
        os.ftruncate(self.fd, self.durable_size)
        self._padded = False
        self.size = self.durable_size
        self._base = self.size - self.size % BLOCK
        self._tail = self._durable_tail

    def close(self) -> None:
        for job in self._jobs:
            job.exception()
        self._jobs.clear()
        os.close(self.fd)

    # --- internals -----------------------------------------------------------------------------

    def _raise_failed(self) -> None:
        failed = next((j for j in self._jobs if j.done() and j.exception() is not None), None)
        self._jobs = [j for j in self._jobs if not j.done()]
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]

    def _wait(self) -> None:
        jobs, self._jobs = self._jobs, []
        first: BaseException | None = None
        for job in jobs:
            exc = job.exception()
            if exc is not None and first is None:
                first = exc
        if first is not None:
            raise first

    def _stage(self, *, final: bool) -> None:
        """Copy the tail and the queued frames into staging buffers and write the whole blocks.

        ``final``: also write the partial last block, padded (``sync`` then cuts the padding).
        """
        pieces = [self._tail, *self._queued]
        self._queued = []
        self._queued_bytes = 0
        cap = self.writer.chunk
        buf: mmap.mmap | None = None
        fill = 0
        for piece in pieces:
            view = memoryview(piece)
            while view:
                if buf is None:
                    buf, fill = self.writer.buffer(), 0
                take = min(len(view), cap - fill)
                buf[fill : fill + take] = view[:take]
                fill += take
                view = view[take:]
                if fill == cap:
                    self._jobs.append(self.writer.submit(self.fd, buf, self._base, cap))
                    self._base += cap
                    buf = None
        if buf is None:
            self._tail = b""
            return
        whole = fill - fill % BLOCK
        self._tail = buf[whole:fill]
        if final and fill > whole:
            padded = whole + BLOCK
            buf[fill:padded] = bytes(padded - fill)
            view = memoryview(buf)
            try:
                pwrite_all(self.fd, view[:padded], self._base)
            finally:
                view.release()
                self.writer.release(buf)
            self._padded = True
        elif whole:
            self._jobs.append(self.writer.submit(self.fd, buf, self._base, whole))
        else:
            self.writer.release(buf)
        self._base += whole


def direct_io_supported(folder: Path) -> bool:
    """Whether ``folder``'s filesystem takes an aligned ``O_DIRECT`` write (tmpfs before 6.6,
    some FUSE and network filesystems do not)."""
    probe = folder / f".direct-io-probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    buf = mmap.mmap(-1, BLOCK)
    try:
        os.pwrite(fd, buf, 0)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
        buf.close()
    return True
