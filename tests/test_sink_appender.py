"""Segment appenders: the bytes on disk after every sync are exactly the frames appended, in order,
whatever their sizes and wherever the syncs fall; rollback returns to the last sync; a failed
background write is raised, never lost."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest
from sinkdata import frames

from capturelab.errors import InputError
from capturelab.sink import appender as appender_mod
from capturelab.sink.appender import (
    BLOCK,
    BufferedAppender,
    DirectAppender,
    Writer,
    direct_io_supported,
)
from capturelab.sink.audit import audit
from capturelab.sink.store import DiskFullError, Outcome, SegmentStore


def _open(kind: str, path: Path, chunk: int = 4 * BLOCK) -> Any:
    if kind == "buffered":
        return BufferedAppender(path)
    return DirectAppender(path, Writer(chunk=chunk))


@pytest.mark.parametrize("kind", ["direct", "buffered"])
def test_every_sync_leaves_exactly_the_appended_bytes(tmp_path: Path, kind: str):
    assert direct_io_supported(tmp_path)
    rng = random.Random(7)  # noqa: S311 - reproducible sizes, not secrets
    path = tmp_path / "10.seg"
    app = _open(kind, path)
    expected = bytearray()
    for round_ in range(40):
        for _ in range(rng.randrange(0, 12)):
            # sizes around and across the block and chunk boundaries, one of them empty-tailed
            frame = rng.randbytes(rng.choice([1, 37, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5]))
            assert app.append(frame) == len(expected)
            expected += frame
        app.sync()
        assert app.size == app.durable_size == len(expected)
        assert path.read_bytes() == bytes(expected), f"after sync {round_}"
    app.close()
    again = _open(kind, path)  # reopening an unaligned file continues it
    assert again.size == len(expected)
    again.append(b"tail")
    again.sync()
    again.close()
    assert path.read_bytes() == bytes(expected) + b"tail"


@pytest.mark.parametrize("kind", ["direct", "buffered"])
def test_rollback_returns_to_the_last_sync(tmp_path: Path, kind: str):
    path = tmp_path / "10.seg"
    app = _open(kind, path)
    app.append(b"a" * 5000)
    app.sync()
    for _ in range(10):
        app.append(os.urandom(BLOCK + 3))  # enough for whole chunks to reach the disk
    app.rollback()
    assert app.size == 5000 and path.read_bytes() == b"a" * 5000
    app.append(b"b" * 10)
    app.sync()
    assert path.read_bytes() == b"a" * 5000 + b"b" * 10


def test_a_failed_background_write_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "10.seg"
    app = DirectAppender(path, Writer(chunk=BLOCK))
    app.append(b"x" * 100)
    app.sync()

    def full(_fd: int, _data: object, _offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(appender_mod.os, "pwrite", full)
    app.append(b"y" * (2 * BLOCK))  # staged and handed to the writer thread
    with pytest.raises(OSError, match="No space left"):
        app.sync()
    monkeypatch.undo()
    app.rollback()
    assert path.read_bytes() == b"x" * 100


def test_store_a_lost_unflushed_frame_fails_the_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A background write fails after two frames of a segment were put: the third put reports
    the full volume and the flush that follows fails too, so no offset of the lost frames is
    committed; once space is back, redelivery stores everything exactly once."""
    store = SegmentStore(tmp_path, direct_io=True, write_chunk=BLOCK)
    batch = frames("c1", 60)
    real = appender_mod.os.pwrite
    failing = {"on": False}

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(appender_mod.os, "pwrite", pwrite)
    store.put(batch[0], "x")
    store.flush()
    failing["on"] = True
    for f in batch[1:20]:  # 19 frames of ~250 bytes: whole blocks go to the writer thread
        assert store.put(f, "x") is Outcome.STORED
    assert store.writer is not None
    store.writer.shutdown()  # its writes have failed by now
    with pytest.raises(DiskFullError, match="No space left"):
        store.put(batch[20], "x")
    with pytest.raises(DiskFullError, match="No space left"):
        store.flush()  # frames 1-19 were lost with the failed write: nothing may be committed
    store.discard_pending()
    failing["on"] = False
    outcomes = [store.put(f, "redelivered") for f in batch]
    assert outcomes == [Outcome.DUPLICATE] + [Outcome.STORED] * 59
    store.flush()
    result = audit(tmp_path, frames=True)
    assert result.ok() and result.events == 60 * 50


def test_no_direct_io_falls_back_or_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_open = os.open

    def no_direct(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(appender_mod.os, "open", no_direct)
    assert not direct_io_supported(tmp_path)
    store = SegmentStore(tmp_path / "auto")
    assert store.write_mode == "buffered"
    assert store.put(frames("c1", 1)[0], "x") is Outcome.STORED
    store.flush()
    with pytest.raises(InputError, match=r"direct_io is direct, but .* refuses O_DIRECT"):
        SegmentStore(tmp_path / "required", direct_io=True)
