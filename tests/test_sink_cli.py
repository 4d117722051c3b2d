"""capturelab sink verify|status|erase|expire from the command line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from sinkdata import frame, pseudonym
from zstandard import ZstdCompressionDict

from capturelab.cli import main
from capturelab.schema import (
    HEADER_SIZE,
    Batch,
    decode_batch,
    encode_batch,
    encode_events,
    read_header,
    seal_crc,
    train_dictionary,
    verify_crc,
)
from capturelab.sink.store import SegmentStore

PAYLOAD_LEN_OFFSET = struct.calcsize("<4sHBB32sQII")  # magic .. dict_id, then payload_len


def frame_batch(collector: str, first: int, count: int) -> Batch:
    return decode_batch(frame(collector, first, count))


def _fill(root: Path, *frames: bytes, dictionary: ZstdCompressionDict | None = None) -> None:
    store = SegmentStore(
        root, dictionaries={dictionary.dict_id(): dictionary} if dictionary else None
    )
    for f in frames:
        store.put(f, "cli")
    store.flush()
    store.close()


def test_verify_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    _fill(tmp_path, frame("c1", 0, 10), frame("c1", 10, 10))
    assert main(["sink", "verify", "--root", str(tmp_path), "--frames"]) == 0
    assert "c1: 20 events in 2 batches, seq 0..19, no gap, 0 duplicates" in capsys.readouterr().out
    _fill(tmp_path, frame("c1", 30, 5))  # 20..29 never arrived
    assert main(["sink", "verify", "--root", str(tmp_path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["collectors"]["c1"]["gaps"] == [[20, 29]]


def test_verify_refuses_a_root_that_is_not_a_sink_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A wrong --root used to say "ok: 0 events" (exit 0); now it is bad input (exit 2)."""
    for root in (tmp_path / "missing", tmp_path):
        assert main(["sink", "verify", "--root", str(root)]) == 2
        err = capsys.readouterr().err
        assert f"--root {root}: not a sink root (no segments/ folder)" in err, err


def _truncated_but_sealed(whole: bytes, cut: int) -> bytes:
    """The frame with its zstd payload cut short, its payload_len and CRC made to match."""
    header = bytearray(whole[:HEADER_SIZE])
    payload = whole[HEADER_SIZE:-cut]
    struct.pack_into("<I", header, PAYLOAD_LEN_OFFSET, len(payload))
    seal_crc(header, payload)
    return bytes(header) + payload


def test_verify_frames_decodes_payloads(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A frame whose CRC is valid but whose zstd payload is truncated used to pass --frames."""
    bad = _truncated_but_sealed(frame("c1", 10, 40), 8)
    verify_crc(bad, read_header(bad))  # the CRC alone finds nothing wrong
    _fill(tmp_path, frame("c1", 0, 10), bad)
    assert main(["sink", "verify", "--root", str(tmp_path)]) == 0  # the index is whole
    capsys.readouterr()
    assert main(["sink", "verify", "--root", str(tmp_path), "--frames", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["bad_frames"]) == 1 and "payload" in doc["bad_frames"][0], doc["bad_frames"]


def test_verify_frames_reads_dictionary_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    samples = [encode_events(frame_batch("c1", 50 * i, 50).events) for i in range(40)]
    dictionary = train_dictionary(samples, 4096)
    path = tmp_path / "zstd.dict"
    path.write_bytes(dictionary.as_bytes())
    root = tmp_path / "array"
    _fill(
        root, encode_batch(frame_batch("c1", 0, 50), dictionary=dictionary), dictionary=dictionary
    )
    assert main(["sink", "verify", "--root", str(root), "--frames"]) == 1
    assert "names a dictionary this reader lacks" in capsys.readouterr().out
    assert main(["sink", "verify", "--root", str(root), "--frames", "--dictionary", str(path)]) == 0


def test_status_without_a_run_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "sink.yml"
    config.write_text(
        f"root: {tmp_path}/array\nbootstrap_servers: 127.0.0.1:9\n"
        "consent_authority_file: /etc/capturelab/authority.pub\n"
    )
    assert main(["sink", "status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "state/status.json does not exist" in err and "sink.yml" in err


def test_erase_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    _fill(tmp_path, frame("c1", 0, 10, "p1"), frame("c2", 0, 10, "p2"))
    p1 = pseudonym("p1").hex()
    assert main(["sink", "erase", "--root", str(tmp_path), "--pseudonym", p1]) == 0
    assert "10 events" in capsys.readouterr().out
    assert main(["sink", "verify", "--root", str(tmp_path), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["collectors"]) == ["c2"]
    assert main(["sink", "erase", "--root", str(tmp_path), "--pseudonym", "nothex"]) == 2
    assert "64 lower-case hex" in capsys.readouterr().err


def test_check_config_reads_as_the_daemon_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "sink.yml"
    good = (
        f"root: {tmp_path}/array\nbootstrap_servers: 127.0.0.1:9\n"
        "consent_authority_file: /etc/capturelab/authority.pub\n"
    )
    config.write_text(good)
    assert main(["sink", "check-config", str(config)]) == 0
    assert "a valid sink config" in capsys.readouterr().out
    config.write_text(good + "surprise: 1\n")
    assert main(["sink", "check-config", str(config)]) == 2
    assert f"sink config {config}: unknown field" in capsys.readouterr().err
