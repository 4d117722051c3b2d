"""The timing record of `make test` and `make lab`: every phase, also a failed one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from capturelab import timings
from capturelab.timings import FAILED, NOT_RUN, PASSED, RecordError, TimingRecord

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """Each phase takes as many seconds as its runner says."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_runner(clock: Clock, seconds: dict[str, float], codes: dict[str, int], ran: list[str]):
    def run(target: str, log: Path | None) -> int:
        ran.append(target)
        clock.now += seconds.get(target, 1.0)
        return codes.get(target, 0)

    return run


def test_every_phase_is_recorded_with_its_seconds(tmp_path: Path):
    clock, ran = Clock(), []
    record = TimingRecord(command="make test")
    out = tmp_path / "timings.json"
    runner = fake_runner(clock, {"lint": 12.0, "unit": 300.5}, {}, ran)
    assert timings.run_phases(record, ["lint", "unit"], out, runner, clock=clock) == 0
    data = json.loads(out.read_text())
    assert data["command"] == "make test"
    assert data["status"] == PASSED
    assert data["total_s"] == 312.5
    assert data["phases"] == [
        {"name": "lint", "seconds": 12.0, "status": PASSED},
        {"name": "unit", "seconds": 300.5, "status": PASSED},
    ]


def test_a_failed_phase_is_recorded_and_the_rest_are_not_run(tmp_path: Path):
    clock, ran = Clock(), []
    record = TimingRecord(command="make lab")
    out = tmp_path / "t.json"
    runner = fake_runner(clock, {"lab-up": 40.0}, {"lab-up": 2, "lab-down": 0}, ran)
    code = timings.run_phases(
        record, ["venv", "lab-up", "lab-validate"], out, runner, on_failure="lab-down", clock=clock
    )
    assert code == 2  # the failed phase's status, not the clean-up's
    assert ran == ["venv", "lab-up", "lab-down"]
    got = [(p["name"], p["status"]) for p in json.loads(out.read_text())["phases"]]
    assert got == [
        ("venv", PASSED),
        ("lab-up", FAILED),
        ("lab-validate", NOT_RUN),
        ("lab-down", PASSED),
    ]
    assert json.loads(out.read_text())["status"] == FAILED


def test_the_record_is_on_disk_after_each_phase(tmp_path: Path):
    """A run killed in phase two still leaves phase one's figure."""
    out = tmp_path / "t.json"
    seen: list[list[str]] = []
    clock = Clock()

    def runner(target: str, log: Path | None) -> int:
        if out.exists():
            seen.append([p["name"] for p in json.loads(out.read_text())["phases"]])
        clock.now += 1
        return 0

    timings.run_phases(TimingRecord("make test"), ["a", "b", "c"], out, runner, clock=clock)
    assert seen == [["a"], ["a", "b"]]


def test_table_lists_every_phase_and_the_total():
    record = TimingRecord("make test", phases=[timings.Phase("lint", 10.0, PASSED),
                                               timings.Phase("unit", 5.5, FAILED)])  # fmt: skip
    lines = record.table().splitlines()
    assert lines[0].split() == ["phase", "seconds", "status"]
    assert lines[1].split() == ["lint", "10.0", "passed"]
    assert lines[-1].split() == ["total", "15.5", "failed"]


def test_a_damaged_record_is_named(tmp_path: Path):
    bad = tmp_path / "timings.json"
    bad.write_text('{"phases": [{"name": "x", "seconds": "soon", "status": "passed"}]}')
    with pytest.raises(RecordError, match=r"timings.json: phases\[0\]"):
        timings.read_record(bad)
    bad.write_text('{"phases": [{"name": "x", "seconds": 1, "status": "done"}]}')
    with pytest.raises(RecordError, match=r"phases\[0\].status: 'done'"):
        timings.read_record(bad)


def test_the_cli_runs_make_targets_stdlib_only(tmp_path: Path):
    """Run as the Makefile runs it: `python3 -m capturelab.timings` from src/, no venv."""
    (tmp_path / "Makefile").write_text("ok:\n\t@true\nbad:\n\t@exit 3\nclean:\n\t@true\n")
    out = tmp_path / "r" / "timings.json"
    argv = [sys.executable, "-S", "-m", "capturelab.timings", "run", "--command", "make x",
            "--out", str(out), "--on-failure", "clean", "ok", "bad", "ok"]  # fmt: skip
    proc = subprocess.run(
        argv,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr  # make exits 2 when a target fails
    assert "make x: time per phase" in proc.stdout
    record = timings.read_record(out)
    assert [(p.name, p.status) for p in record.phases] == [
        ("ok", PASSED), ("bad", FAILED), ("ok", NOT_RUN), ("clean", PASSED)
    ]  # fmt: skip


def test_lanes_run_side_by_side_and_count_once_in_the_total(tmp_path: Path):
    """Two lanes meet at a barrier: run one after the other, they would never get past it."""
    barrier = threading.Barrier(2, timeout=10)
    seen_logs: list[Path | None] = []

    def runner(target: str, log: Path | None) -> int:
        seen_logs.append(log)
        if target in ("molecule-kafka", "molecule-storage_array"):
            barrier.wait()
        return 0

    record = TimingRecord("make test")
    out = tmp_path / "timings.json"
    phases = ["lint", "molecule-kafka+molecule-sink|molecule-storage_array"]
    assert timings.run_phases(record, phases, out, runner) == 0
    got = [(p.name, p.status, p.lane) for p in record.phases]
    assert got == [
        ("lint", PASSED, 0),
        ("2 lanes", PASSED, 0),
        ("molecule-kafka", PASSED, 1),
        ("molecule-sink", PASSED, 1),
        ("molecule-storage_array", PASSED, 2),
    ]
    assert record.total_s == sum(p.seconds for p in record.phases[:2])
    assert tmp_path / "logs" / "molecule-sink.log" in seen_logs
    assert timings.read_record(out).phases[3].lane == 1


def test_after_a_failure_in_one_lane_no_lane_starts_another_target(tmp_path: Path):
    started: list[str] = []
    sink_may_end = threading.Event()

    def runner(target: str, log: Path | None) -> int:
        started.append(target)
        if target == "b1":
            return 1
        if target == "a1":
            sink_may_end.wait(timeout=0.5)  # b1 fails meanwhile
        return 0

    record = TimingRecord("make test")
    code = timings.run_phases(record, ["a1+a2|b1+b2", "after"], tmp_path / "t.json", runner)
    assert code == 1
    status = {p.name: p.status for p in record.phases}
    assert status == {"2 lanes": FAILED, "a1": PASSED, "a2": NOT_RUN, "b1": FAILED,
                      "b2": NOT_RUN, "after": NOT_RUN}  # fmt: skip
    assert "a2" not in started and "b2" not in started


def test_a_lane_token_without_targets_is_refused():
    with pytest.raises(ValueError, match="lanes are written a\\+b\\|c\\+d"):
        timings.parse_lanes("a+b|")


def test_the_cli_shows_each_lane_target_whole(tmp_path: Path):
    (tmp_path / "Makefile").write_text(
        "x:\n\t@echo x-start; sleep 0.3; echo x-end\ny:\n\t@echo y-start; sleep 0.1; echo y-end\n"
    )
    out = tmp_path / "t.json"
    argv = [sys.executable, "-S", "-m", "capturelab.timings", "run", "--command", "make t",
            "--out", str(out), "x|y"]  # fmt: skip
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.index("y-start") < text.index("y-end") < text.index("x-start") < text.index("x-end")
    assert (tmp_path / "logs" / "x.log").read_text() == "x-start\nx-end\n"
    assert [p.lane for p in timings.read_record(out).phases] == [0, 1, 2]
