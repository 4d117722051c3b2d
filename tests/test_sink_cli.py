"""capturelab sink verify|status|erase|expire from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sinkdata import frame, pseudonym

from capturelab.cli import main
from capturelab.sink.store import SegmentStore


def _fill(root: Path, *frames: bytes) -> None:
    store = SegmentStore(root)
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
