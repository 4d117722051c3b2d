"""The spool: ordered, persistent, bounded; sequence numbers never handed out twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from capturelab.collector.spool import Spool
from capturelab.errors import InputError

MIB = 1 << 20


def test_items_keep_their_order_and_state_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"a" * 10, next_seq=5)
    spool.put_control("capture.control", b"k", b"{}")
    spool.put_batch(b"b" * 10, next_seq=9)
    assert [i.path.suffix for i in spool.pending()] == [".batch", ".ctl", ".batch"]
    again = Spool(tmp_path, MIB)
    assert again.next_seq == 9 and again.next_item == 3
    assert [i.number for i in again.pending()] == [0, 1, 2]
    assert again.depth() == (3, 10 + len(again.pending()[1].path.read_bytes()) + 10)
    again.done(again.pending()[0])
    assert [i.number for i in Spool(tmp_path, MIB).pending()] == [1, 2]


def test_sequence_numbers_never_go_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"x", next_seq=100)
    with pytest.raises(ValueError, match="behind"):
        spool.put_batch(b"y", next_seq=50)
    for item in spool.pending():
        spool.done(item)  # delivered and deleted: the state still remembers
    assert Spool(tmp_path, MIB).next_seq == 100


def test_a_damaged_state_file_stops_the_spool_with_its_name(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIB)
    spool.put_batch(b"x", next_seq=3)
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
