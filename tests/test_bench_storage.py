"""capturelab bench storage: frames are real and distinct, both paths write what they claim."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from capturelab.bench import storage
from capturelab.cli import main
from capturelab.errors import InputError
from capturelab.schema import decode_batch, read_header
from capturelab.sink.audit import audit


def test_reframe_makes_a_valid_frame_with_a_new_identity():
    frame = storage.sink_frames(1, 16)[0]
    other = storage.reframe(frame, "bench-9")
    assert read_header(other).collector_id == "bench-9"
    assert decode_batch(other).events == decode_batch(frame).events  # CRC recomputed


def test_sink_frames_are_distinct_identities_of_the_requested_volume():
    frames = storage.sink_frames(4, 16)
    ids = {(read_header(f).collector_id, read_header(f).first_seq) for f in frames}
    assert len(ids) == len(frames)
    assert sum(map(len, frames)) >= 4 << 20


@pytest.mark.parametrize(("direct_io", "mode"), [(True, "direct"), (False, "buffered")])
def test_run_sink_stores_every_frame_and_cleans_up(tmp_path: Path, direct_io: bool, mode: str):
    frames = storage.sink_frames(2, 16)
    result, used = storage.run_sink(tmp_path, frames, flush_every=7, direct_io=direct_io)
    assert used == mode
    assert result.bytes == sum(map(len, frames))
    assert result.mib_per_s > 0
    assert list(tmp_path.iterdir()) == []  # scratch removed
    assert audit(tmp_path).events == 0


@pytest.mark.parametrize("direct_io", [True, False])
def test_the_ceiling_writes_every_byte_and_refuses_a_corrupt_frame(tmp_path: Path, direct_io: bool):
    frames = storage.sink_frames(2, 16)
    result = storage.run_ceiling(tmp_path, frames, flush_every=7, direct_io=direct_io)
    assert result.bytes == sum(map(len, frames))
    assert list(tmp_path.iterdir()) == []
    bad = bytearray(frames[3])
    bad[-1] ^= 0xFF
    with pytest.raises(InputError, match="frame 4 fails its CRC32C"):
        storage.run_ceiling(tmp_path, [*frames[:3], bytes(bad)], flush_every=7, direct_io=direct_io)
    assert list(tmp_path.iterdir()) == []


def test_ceiling_writers_in_parallel_processes_write_every_byte(tmp_path: Path):
    frames = storage.sink_frames(2, 16)
    result = storage.run_ceiling(tmp_path, frames, flush_every=7, workers=3)
    assert result.bytes == sum(map(len, frames))
    assert list(tmp_path.iterdir()) == []
    bad = bytearray(frames[5])
    bad[-1] ^= 0xFF
    corrupt = [*frames[:5], bytes(bad), *frames[6:]]
    with pytest.raises(InputError, match=r"ceiling bench: InputError: .* fails its CRC32C"):
        storage.run_ceiling(tmp_path, corrupt, flush_every=7, workers=2)
    assert list(tmp_path.iterdir()) == []


def test_geometry_names_the_filesystem(tmp_path: Path):
    geo = storage.geometry(tmp_path)
    assert geo["source"] and geo["fstype"]


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["bench", "storage", "--path", str(tmp_path), "--size-mib", "1"]) == 2
    assert "--size-mib must be 16..65536" in capsys.readouterr().err
    assert main(["bench", "storage", "--path", str(tmp_path / "nope"), "--size-mib", "16"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["bench", "storage", "--path", str(tmp_path), "--settle-s", "-1"]) == 2
    assert "--settle-s must be 0..60" in capsys.readouterr().err
    assert main(["bench", "storage", "--path", str(tmp_path), "--ceiling-workers", "0"]) == 2
    assert "--ceiling-workers must be 1..16" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("fio") is None, reason="fio is not installed (apt-get install fio)"
)
def test_end_to_end_json(tmp_path: Path):
    out = tmp_path / "r.json"
    work = tmp_path / "vol"
    work.mkdir()
    argv = [
        "bench",
        "storage",
        "--path",
        str(work),
        "--size-mib",
        "16",
        "--rounds",
        "1",
        "--settle-s",
        "0",
    ]
    assert main([*argv, "--buffered", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["bench"] == "storage"
    assert doc["reference"]["tool"] == "fio" and doc["reference"]["bytes"] == 16 << 20
    assert doc["ours"]["bytes"] >= 16 << 20
    assert doc["ratio"]["mib_per_s"] == pytest.approx(
        doc["ours"]["mib_per_s"] / doc["reference"]["mib_per_s"]
    )
    assert set(doc) >= {"machine", "date", "command", "notes", "geometry", "met"}
    assert doc["ours"]["sink_io"] == "auto" and doc["ours"]["write_mode"] in ("direct", "buffered")
    assert doc["ceiling"]["bytes"] == doc["ours"]["bytes"]
    assert doc["ceiling_ratio"] == pytest.approx(
        doc["ceiling"]["mib_per_s"] / doc["reference"]["mib_per_s"]
    )
    assert len(doc["rounds"]["ceiling"]) == 1
