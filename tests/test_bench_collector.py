"""capturelab bench collector: the result JSON carries measured figures for both sides."""

from __future__ import annotations

import json
from pathlib import Path

from capturelab.cli import main


def test_bench_collector_writes_both_sides_and_the_targets(tmp_path: Path, capsys) -> None:
    out = tmp_path / "collector.json"
    assert main(["bench", "collector", "--seconds", "20", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["bench"] == "collector"
    ref, ours = result["reference"], result["ours"]
    assert ref["events"] == ours["events"] > 1000
    assert ref["raw_bytes"] == ours["raw_bytes"] == ours["events"] * 24
    assert 0 < ours["sent_bytes"] < ours["raw_bytes"] and ours["batches"] > 0
    assert ours["cpu_s"] > 0 and ref["cpu_s"] > 0
    assert result["ratio"]["cpu_s"] == ours["cpu_s"] / ref["cpu_s"]
    assert set(result["met"]) == {
        "compression_ratio",
        "cpu_share_of_one_core",
        "cpu_share_at_peak_second",
    }
    assert "busiest second" in capsys.readouterr().out


def test_bench_collector_names_bad_arguments(capsys) -> None:
    assert main(["bench", "collector", "--mouse-hz", "5"]) == 2
    assert "--mouse-hz" in capsys.readouterr().err
