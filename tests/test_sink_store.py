"""The sink's store: exactly once across crashes, quarantine, erasure, retention, full volume."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sinkdata import T0, frame, frames, pseudonym

from capturelab.errors import InputError
from capturelab.sink import index as idx
from capturelab.sink.appender import BLOCK, direct_io_supported
from capturelab.sink.audit import audit
from capturelab.sink.config import load_config
from capturelab.sink.erasure import Tombstone, Tombstones, expire
from capturelab.sink.layout import Layout
from capturelab.sink.store import DiskFullError, Outcome, SegmentStore

P1 = pseudonym("p1").hex()
P2 = pseudonym("p2").hex()


IO_MODES = {
    # O_DIRECT, required, one block per background write: every path of the appender runs
    "direct": {"direct_io": True, "write_chunk": BLOCK},
    "direct-default-chunk": {"direct_io": True},
    "buffered": {"direct_io": False},
}
_mode: dict[str, object] = {}


@pytest.fixture(autouse=True, params=sorted(IO_MODES))
def io_mode(request: pytest.FixtureRequest) -> str:
    """Every test of the store runs with each way of writing segments."""
    _mode.clear()
    _mode.update(IO_MODES[request.param])
    return str(request.param)


def _store(root: Path, **kw: object) -> SegmentStore:
    stones = Tombstones(Layout(root))
    return SegmentStore(root, erased=stones.erased, **{**_mode, **kw})  # type: ignore[arg-type]


def test_layout_follows_the_design(tmp_path: Path):
    store = _store(tmp_path)
    assert store.put(frame("c1", 0, 10), "t-0-0") is Outcome.STORED
    store.flush()
    seg = tmp_path / "segments" / P1 / "2026" / "11" / "22" / "10.seg"
    assert seg.is_file()
    assert seg.with_suffix(".idx").stat().st_size == idx.RECORD_SIZE
    (entry,) = idx.iter_entries(seg.with_suffix(".idx"))
    assert (entry.collector_id, entry.first_seq, entry.count, entry.offset) == ("c1", 0, 10, 0)
    assert entry.length == seg.stat().st_size
    for d in ("quarantine", "tombstones", "state"):
        assert (tmp_path / d).is_dir()


def test_redelivery_lands_once_even_after_restart(tmp_path: Path):
    store = _store(tmp_path)
    batch = frames("c1", 5)
    for i, f in enumerate(batch):
        assert store.put(f, f"t-0-{i}") is Outcome.STORED
    assert store.put(batch[2], "t-0-2") is Outcome.DUPLICATE  # same poll, not yet flushed
    store.flush()
    store.close()
    again = _store(tmp_path)
    assert [again.put(f, "redelivered") for f in batch] == [Outcome.DUPLICATE] * 5
    again.flush()
    result = audit(tmp_path, frames=True)
    assert result.ok() and result.events == 250
    assert result.to_dict()["collectors"]["c1"]["last_seq"] == 249


def test_crash_before_flush_cuts_the_tail_and_redelivery_fills_it(tmp_path: Path):
    store = _store(tmp_path, write_chunk=BLOCK)
    batch = frames("c1", 40)  # the 37 unflushed ones fill more than a block
    for f in batch[:3]:
        store.put(f, "x")
    store.flush()
    for f in batch[3:]:
        store.put(f, "x")  # written (direct: the whole blocks), not synced, never committed
    if store.writer is not None:
        store.writer.shutdown()  # the background writes landed before the "crash"
    # crash: the process dies without flush; the next start must not trust those bytes
    seg = next((tmp_path / "segments").rglob("*.seg"))
    flushed = sum(len(f) for f in batch[:3])
    on_disk = seg.stat().st_size
    assert on_disk > flushed
    restarted = _store(tmp_path)
    assert seg.stat().st_size == flushed
    assert restarted.counters.recovered_bytes_cut == on_disk - flushed
    outcomes = [restarted.put(f, "redelivered") for f in batch]
    assert outcomes == [Outcome.DUPLICATE] * 3 + [Outcome.STORED] * 37
    restarted.flush()
    result = audit(tmp_path, frames=True)
    assert result.ok() and result.events == 2000


def test_torn_index_record_is_dropped(tmp_path: Path):
    store = _store(tmp_path)
    for f in frames("c1", 2):
        store.put(f, "x")
    store.flush()
    store.close()
    index = next((tmp_path / "segments").rglob("*.idx"))
    with index.open("ab") as fh:
        fh.write(b"\x07" * 40)  # a torn third record
    _store(tmp_path)
    assert index.stat().st_size == 2 * idx.RECORD_SIZE
    assert audit(tmp_path, frames=True).ok()


def test_corrupt_and_reframed_batches_are_quarantined_not_dropped(tmp_path: Path):
    store = _store(tmp_path)
    good = frame("c1", 0, 20)
    bad = bytearray(frame("c1", 20, 20))
    bad[-3] ^= 0xFF
    assert store.put(good, "t-0-0") is Outcome.STORED
    assert store.put(bytes(bad), "capture.events-0-1") is Outcome.QUARANTINED
    assert store.put(frame("c1", 10, 20), "capture.events-0-2") is Outcome.QUARANTINED
    assert store.put(b"not a frame", "capture.events-0-3") is Outcome.QUARANTINED
    store.flush()
    assert store.counters.quarantined == 3
    qdir = next((tmp_path / "quarantine").iterdir())
    kept = qdir / "capture.events-0-1.frame"
    assert kept.read_bytes() == bytes(bad)
    assert "crc32c" in json.loads(kept.with_suffix(".json").read_text())["reason"]
    overlap = json.loads((qdir / "capture.events-0-2.json").read_text())
    assert "overlap" in overlap["reason"] and overlap["pseudonym"] == P1


def test_erasure_leaves_zero_records_and_refuses_redelivery(tmp_path: Path):
    stones = Tombstones(Layout(tmp_path))
    store = SegmentStore(tmp_path, erased=stones.erased, **_mode)  # type: ignore[arg-type]
    mine, theirs = frames("c1", 4, who="p1"), frames("c2", 4, who="p2")
    for f in mine + theirs:
        store.put(f, "x")
    store.flush()
    store.close(P1)
    stone = stones.erase(P1, datetime.now(UTC), "consent_revoked")
    assert stone.state == "erased" and stone.events_removed == 200 and stone.batches_removed == 4
    assert audit(tmp_path, pseudonym=None).pseudonyms == {P2: 200}
    assert not (tmp_path / "segments" / P1).exists()
    assert [store.put(f, "redelivered") for f in mine] == [Outcome.ERASED] * 4
    # the tombstone survives a restart and still refuses old batches
    restarted = _store(tmp_path)
    assert restarted.put(mine[0], "again") is Outcome.ERASED
    # ... but a batch captured after the erasure (a new consent) is stored
    later = frame(
        "c1", 1000, 5, "p1", wall_ns=int((datetime.now(UTC) + timedelta(hours=1)).timestamp() * 1e9)
    )
    assert restarted.put(later, "new consent") is Outcome.STORED


def test_interrupted_erasure_is_finished_on_start(tmp_path: Path):
    store = _store(tmp_path)
    for f in frames("c1", 2):
        store.put(f, "x")
    store.flush()
    store.close()
    layout = Layout(tmp_path)
    half = Tombstone(P1, datetime.now(UTC), "consent_revoked", "erasing")
    (layout.tombstones / f"{P1}.json").write_bytes(half.to_json())
    stones = Tombstones(layout)
    assert [t.pseudonym for t in stones.unfinished()] == [P1]
    for t in stones.unfinished():
        stones.erase(t.pseudonym, t.at, t.reason)
    assert audit(tmp_path).events == 0
    assert Tombstone.from_file(layout.tombstones / f"{P1}.json").state == "erased"


def test_retention_removes_whole_old_hours(tmp_path: Path):
    store = _store(tmp_path)
    old = frame("c1", 0, 10, wall_ns=T0 - 10 * 86_400 * 10**9)
    new = frame("c1", 10, 10, wall_ns=T0)
    store.put(old, "x")
    store.put(new, "x")
    store.flush()
    store.close()
    now = datetime.fromtimestamp(T0 / 1e9, tz=UTC)
    gone = expire(Layout(tmp_path), now, retention_days=5)
    assert (gone.files_removed, gone.events_removed) == (2, 10)
    assert audit(tmp_path).events == 10
    with pytest.raises(InputError, match="retention_days"):
        expire(Layout(tmp_path), now, retention_days=0)


def test_audit_finds_gaps_and_duplicates(tmp_path: Path):
    store = _store(tmp_path)
    for f in (frame("c1", 0, 10), frame("c1", 20, 10)):
        store.put(f, "x")
    store.flush()
    store.close()
    index = next((tmp_path / "segments").rglob("*.idx"))
    first = index.read_bytes()[: idx.RECORD_SIZE]
    with index.open("ab") as fh:  # the same batch indexed twice: a duplicate
        fh.write(first)
    result = audit(tmp_path).to_dict()["collectors"]["c1"]
    assert result["gaps"] == [[10, 19]] and result["duplicates"] == 10


def test_reserve_pauses_before_writing(tmp_path: Path):
    store = _store(tmp_path, min_free_bytes=1 << 62)
    with pytest.raises(DiskFullError, match="reserve"):
        store.put(frame("c1", 0, 10), "x")
    assert not list((tmp_path / "segments").rglob("*.seg"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_enospc_rolls_back_and_resumes(tmp_path: Path, io_mode: str):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    store = None
    try:
        if io_mode != "buffered" and not direct_io_supported(mnt):
            pytest.skip("this kernel's tmpfs refuses O_DIRECT (before Linux 6.6)")
        store = _store(mnt)
        stored = []
        batch = frames("c1", 2000, size=60)  # ~250 bytes each (schema v2): more than 256 KiB
        with pytest.raises(DiskFullError):
            for f in batch:
                store.put(f, "x")
                store.flush()
                stored.append(f)
        assert audit(mnt, frames=True).ok()  # no torn frame, every index entry valid
        assert audit(mnt).events == 60 * len(stored)
        # Past the free-space check, the kernel's ENOSPC itself: the write is rolled back.
        store.free_bytes = lambda: 1 << 40  # type: ignore[method-assign]
        with pytest.raises(DiskFullError, match="No space left"):
            for f in batch[len(stored) :]:
                store.put(f, "x")
                store.flush()
                stored.append(f)
        del store.free_bytes
        assert audit(mnt, frames=True).ok()
        assert audit(mnt).events == 60 * len(stored)
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        for f in batch:
            store.put(f, "x")
        store.flush()
        result = audit(mnt, frames=True)
        assert result.ok() and result.events == len(batch) * 60
    finally:
        if store is not None:
            store.discard_pending()
            store.close()
        subprocess.run(["umount", str(mnt)], check=False)


CONF = "bootstrap_servers: gw:9092\nconsent_authority_file: /etc/capturelab/authority.pub\n"


def test_config_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "sink.yml"
    path.write_text(f"root: /srv/capture\n{CONF}retention_days: 0\n")
    with pytest.raises(
        InputError, match=r"sink\.yml: field retention_days must be an integer >= 1"
    ):
        load_config(path)
    path.write_text(f"root: relative\n{CONF}")
    with pytest.raises(InputError, match="field root must be an absolute path"):
        load_config(path)
    path.write_text(f"root: /x\n{CONF}retension_days: 3\n")
    with pytest.raises(InputError, match=r"unknown field.*retension_days"):
        load_config(path)
    path.write_text(f"root: /x\n{CONF}dictionaries: [zstd.dict]\n")
    with pytest.raises(InputError, match="field dictionaries must be a list of absolute paths"):
        load_config(path)
    path.write_text(f"root: /x\n{CONF}dictionaries: [/etc/capturelab/a.dict]\n")
    assert load_config(path).dictionaries == (Path("/etc/capturelab/a.dict"),)
    path.write_text(f"root: /x\n{CONF}security: {{username: sink}}\n")
    with pytest.raises(InputError, match=r"security\.password_file is required"):
        load_config(path)
    path.write_text(f"root: /x\n{CONF}flush_max_messages: 64\n")
    assert load_config(path).flush_max_messages == 64
    path.write_text(f"root: /x\n{CONF}direct_io: on\n")  # YAML: True
    with pytest.raises(InputError, match="field direct_io must be one of auto, direct, buffered"):
        load_config(path)
    path.write_text(f"root: /x\n{CONF}direct_io: buffered\n")
    assert load_config(path).direct_io == "buffered"
    path.write_text("root: /x\nbootstrap_servers: gw:9092\n")
    with pytest.raises(InputError, match="field consent_authority_file is required"):
        load_config(path)
    path.write_text("root: /x\nbootstrap_servers: gw:9092\nconsent_authority_file: a.pub\n")
    with pytest.raises(InputError, match="field consent_authority_file must be an absolute path"):
        load_config(path)


def test_full_decode_files_batches_like_the_peek(tmp_path: Path):
    peek, full = _store(tmp_path / "a"), _store(tmp_path / "b", full_decode=True)
    for store in (peek, full):
        assert store.put(frame("c1", 0, 10), "x") is Outcome.STORED
        assert store.put(b"CLAB" + bytes(80), "y") is Outcome.QUARANTINED
        store.flush()
    assert (
        audit(tmp_path / "a").to_dict()["collectors"]
        == audit(tmp_path / "b").to_dict()["collectors"]
    )
