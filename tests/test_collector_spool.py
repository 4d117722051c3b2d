"""The spool: ordered, persistent, bounded; sequence numbers never handed out twice."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from capturelab.collector import spool as spool_module
from capturelab.collector.spool import Spool
from capturelab.errors import InputError

MIB = 1 << 20


def test_items_keep_their_order_and_state_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"a" * 10, next_seq=5)
    spool.put_control("capture.control", b"k", b"{}")
    spool.put_batch(b"b" * 10, next_seq=9)
    assert [i.path.suffix for i in spool.pending()] == [".batch", ".ctl", ".batch"]
    spool.close()  # the daemon stops (or dies: the kernel drops its lock the same way)
    again = Spool(tmp_path, MIB)
    assert again.next_seq == 9 and again.next_item == 3
    assert [i.number for i in again.pending()] == [0, 1, 2]
    assert again.depth() == (3, 10 + len(again.pending()[1].path.read_bytes()) + 10)
    again.done(again.pending()[0])
    again.close()
    assert [i.number for i in Spool(tmp_path, MIB).pending()] == [1, 2]


def test_sequence_numbers_never_go_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"x", next_seq=100)
    with pytest.raises(ValueError, match="behind"):
        spool.put_batch(b"y", next_seq=50)
    for item in spool.pending():
        spool.done(item)  # delivered and deleted: the state still remembers
    spool.close()
    assert Spool(tmp_path, MIB).next_seq == 100


def test_a_damaged_state_file_stops_the_spool_with_its_name(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"x", next_seq=3)
    spool.close()
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InputError, match=r"state.json: the spool state is damaged"):
        Spool(tmp_path, MIB)


def test_full_pauses_and_resumes_below_ninety_percent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    chunk = b"z" * (MIB // 4)
    for n in range(4):
        assert not spool.full()
        spool.put_batch(chunk, next_seq=n + 1)
    assert spool.full()
    spool.done(spool.pending()[0])  # 75 % left: below the resume mark
    assert not spool.full()


def test_bound_below_one_mebibyte_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="spool_max_bytes"):
        Spool(tmp_path, 1000)


def test_quarantine_keeps_the_record_and_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.quarantine("/dev/input/event3", b"\x01\x02", "type 0x40 above EV_MAX")
    text = (tmp_path / "quarantine" / "records.jsonl").read_text()
    assert "0102" in text and "EV_MAX" in text and "event3" in text


HOLD = (
    "import sys, time; from pathlib import Path; from capturelab.collector.spool import Spool; "
    "Spool(Path(sys.argv[1]), 1 << 20); print('held', flush=True); time.sleep(60)"
)


def _holder(root: Path) -> subprocess.Popen[str]:
    """Another process (a second daemon) that opens the spool and keeps it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_spool_and_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        with pytest.raises(InputError, match=rf"{tmp_path}: .*another process \(pid {proc.pid}\)"):
            Spool(tmp_path, MIB)
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_daemon_is_taken_over(tmp_path: Path, caplog) -> None:
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    spool = Spool(tmp_path, MIB)  # the lock file still names the dead pid
    assert f"took over the lock of pid {proc.pid}" in caplog.text
    assert (tmp_path / "lock").read_text().strip() == str(os.getpid())
    spool.close()
    caplog.clear()
    clean = "import sys; from pathlib import Path; from capturelab.collector.spool import Spool; "
    subprocess.run(  # another daemon that starts and stops cleanly leaves nothing to take over
        [sys.executable, "-c", clean + "Spool(Path(sys.argv[1]), 1 << 20).close()", str(tmp_path)],
        check=True,
    )
    Spool(tmp_path, MIB).close()
    assert "took over" not in caplog.text


def test_a_batch_written_before_a_crash_between_state_and_rename_is_queued(tmp_path: Path) -> None:
    """The state counts item 1 (sequences up to 200) but the crash came before its rename."""
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"a", next_seq=100)
    spool.close()
    (tmp_path / "tmp" / f"{1:020d}.batch").write_bytes(b"b")  # written whole, then the state:
    (tmp_path / "state.json").write_text('{"next_seq": 200, "next_item": 2}')
    (tmp_path / "tmp" / f"{2:020d}.batch").write_bytes(b"half")  # not counted: a half write
    again = Spool(tmp_path, MIB)
    assert [(i.number, i.path.read_bytes()) for i in again.pending()] == [(0, b"a"), (1, b"b")]
    assert again.next_seq == 200 and list((tmp_path / "tmp").iterdir()) == []
    again.close()


def test_a_failed_write_burns_no_sequence_and_pauses_until_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, 64 * MIB)
    spool.put_batch(b"a" * 100, next_seq=100)
    state = (tmp_path / "state.json").read_bytes()
    real = spool_module.write_synced

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(spool_module, "write_synced", full_disk)
    monkeypatch.setattr(Spool, "_room", lambda self: 0)  # the card is full
    with pytest.raises(OSError, match="No space left"):
        spool.put_batch(b"b" * 100, next_seq=200)
    assert (spool.next_seq, spool.next_item) == (100, 1)
    assert (tmp_path / "state.json").read_bytes() == state
    assert list((tmp_path / "tmp").iterdir()) == []
    monkeypatch.setattr(spool_module, "write_synced", real)
    monkeypatch.setattr(Spool, "_room", lambda self: 0)  # still no room
    assert spool.full()
    assert "No space left" in spool.pause_reason()
    spool.done(spool.pending()[0])  # delivering the backlog is not room on the file system
    assert spool.full()
    monkeypatch.setattr(Spool, "_room", lambda self: 1 << 40)
    assert not spool.full()
    assert spool.put_batch(b"b" * 100, next_seq=200).number == 1
    spool.close()
    again = Spool(tmp_path, 64 * MIB)
    assert (again.next_seq, [i.number for i in again.pending()]) == (200, [1])


FILL = (
    "import resource, signal, sys; from pathlib import Path; "
    "from capturelab.collector.spool import Spool; "
    "spool = Spool(Path(sys.argv[1]), 1 << 26); spool.put_batch(b'a' * 100, next_seq=100); "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY)); "
    "exec('try:\\n spool.put_batch(bytes(1 << 20), next_seq=200)\\nexcept OSError as e:\\n print(e.errno)')"
)


def test_a_real_failed_write_hands_the_same_sequences_out_again(tmp_path: Path) -> None:
    """A write the kernel refuses (here EFBIG: a file-size limit, as a full card refuses with
    ENOSPC) must not move the persisted sequence: the daemon that starts next hands out 100."""
    res = subprocess.run(
        [sys.executable, "-c", FILL, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == str(errno.EFBIG), res.stderr
    again = Spool(tmp_path, 1 << 26)
    assert again.next_seq == 100, "the failed batch's sequences were burned"
    assert [i.number for i in again.pending()] == [0]
    again.close()


def _fail_writes(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def failing(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(spool_module, "write_synced", failing)


def test_a_write_failing_with_room_waits_a_growing_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO with free space on the card resumed capture at once and failed again every batch."""
    now = [1000.0]
    spool = Spool(tmp_path, 64 * MIB, clock=lambda: now[0])
    real = spool_module.write_synced
    for backoff in (1, 2, 4):
        _fail_writes(monkeypatch, errno.EIO)
        with pytest.raises(OSError):
            spool.put_batch(b"b" * 100, next_seq=200)
        monkeypatch.setattr(spool_module, "write_synced", real)
        assert spool.full(), "resumed before the backoff"
        assert f"in {backoff} s at the earliest" in spool.pause_reason()
        now[0] += backoff
        assert not spool.full(), "still paused after the backoff"
    _fail_writes(monkeypatch, errno.EIO)
    with pytest.raises(OSError):
        spool.put_batch(b"b" * 100, next_seq=200)
    monkeypatch.setattr(spool_module, "write_synced", real)
    assert spool.full()
    # The sealer tries while capture is paused: a write that works resumes it at once (the
    # backoff of 8 s has not passed) and the next failure starts again at 1 s.
    assert spool.put_batch(b"b" * 100, next_seq=200).number == 0
    assert not spool.full() and "spool full" in spool.pause_reason()
    _fail_writes(monkeypatch, errno.EIO)
    with pytest.raises(OSError):
        spool.put_batch(b"c" * 100, next_seq=300)
    assert "in 1 s at the earliest" in spool.pause_reason()
    spool.close()


def test_enospc_with_room_shown_backs_off_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while statvfs shows room (reserved blocks, a quota): the room check alone flapped."""
    now = [0.0]
    spool = Spool(tmp_path, 64 * MIB, clock=lambda: now[0])
    _fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(OSError):
        spool.put_batch(b"b" * 100, next_seq=200)
    assert spool.full() and "in 1 s at the earliest" in spool.pause_reason()
    now[0] += 1
    assert not spool.full()
    spool.close()


def test_a_write_failing_for_inodes_waits_for_a_free_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC with free blocks but no free inode: the blocks alone said room, capture flapped."""
    spool = Spool(tmp_path, 64 * MIB)
    real = os.statvfs(tmp_path)
    fields = {k: getattr(real, k) for k in ("f_bavail", "f_frsize", "f_files")}

    def statvfs(favail: int) -> object:
        return SimpleNamespace(**fields, f_favail=favail)

    monkeypatch.setattr(spool_module.os, "statvfs", lambda path: statvfs(0))
    _fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(OSError):
        spool.put_batch(b"b" * 100, next_seq=200)
    assert spool.full() and "no room" in spool.pause_reason()
    monkeypatch.setattr(spool_module.os, "statvfs", lambda path: statvfs(100))
    assert not spool.full()
    spool.close()


def test_a_failed_rename_after_the_state_counts_the_item_sends_it_from_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The rename into queue/ (or its fsync) failing after the state was saved raised, so the
    daemon sealed the same sequences again into a second item; the item is whole in tmp/."""
    spool = Spool(tmp_path, 64 * MIB)
    real_replace = Path.replace

    def replace(self: Path, target: Path) -> Path:
        if Path(target).parent == tmp_path / "queue":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(target))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    item = spool.put_batch(b"a" * 100, next_seq=100)
    assert (
        item.path == tmp_path / "tmp" / f"{0:020d}.batch" and item.path.read_bytes() == b"a" * 100
    )
    assert "stays in" in caplog.text
    monkeypatch.setattr(Path, "replace", real_replace)
    real_fsync_dir = spool_module.fsync_dir

    def fsync_dir(path: Path) -> None:
        if path == tmp_path / "queue":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        real_fsync_dir(path)

    monkeypatch.setattr(spool_module, "fsync_dir", fsync_dir)
    second = spool.put_batch(b"b" * 100, next_seq=200)  # the fsync of queue/ fails: no raise
    assert second.path == tmp_path / "queue" / f"{1:020d}.batch"
    assert [i.number for i in spool.pending()] == [0, 1] and spool.next_seq == 200
    monkeypatch.setattr(spool_module, "fsync_dir", real_fsync_dir)
    spool.close()
    again = Spool(tmp_path, 64 * MIB)  # the next start moves the first into the queue
    assert [(i.number, i.path.parent.name) for i in again.pending()] == [(0, "queue"), (1, "queue")]
    again.close()


def test_a_damaged_state_leaves_tmp_as_it_is(tmp_path: Path) -> None:
    """A counted batch in tmp/ (a failed rename) was deleted when the state could not be read."""
    spool = Spool(tmp_path, 64 * MIB)
    spool.close()
    (tmp_path / "tmp" / f"{0:020d}.batch").write_bytes(b"a" * 100)
    (tmp_path / "state.json").write_text("{damaged")
    with pytest.raises(InputError, match="the spool state is damaged"):
        Spool(tmp_path, 64 * MIB)
    assert (tmp_path / "tmp" / f"{0:020d}.batch").read_bytes() == b"a" * 100


def test_a_rename_that_reports_an_error_but_took_effect_is_sent_from_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, 64 * MIB)
    real_replace = Path.replace

    def replace(self: Path, target: Path) -> Path:
        done = real_replace(self, target)
        if Path(target).parent == tmp_path / "queue":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(target))
        return done

    monkeypatch.setattr(Path, "replace", replace)
    item = spool.put_batch(b"a" * 100, next_seq=100)
    assert item.path == tmp_path / "queue" / f"{0:020d}.batch" and item.path.exists()
    spool.close()
