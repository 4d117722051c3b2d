"""A timing record for the README's two commands: each phase, its seconds and how it ended.

``make test`` and ``make lab`` run their phases through ``python3 -m capturelab.timings run``,
which runs ``make <phase>`` for each, one after the other, and stops at the first that fails.
Invariants:

- the record is written after every phase (atomically), so a run that is killed still leaves
  the phases it finished, and a failed phase is recorded with its status before anything else;
- phases not reached after a failure are recorded as ``not run`` (0 s), so the table always
  lists every phase of the command;
- ``--on-failure TARGET`` (``lab-down``) runs after a failure and is recorded as a phase too;
  the run's exit status is the failed phase's, never the clean-up's.

This module uses the standard library only: the Makefile runs it with ``PYTHONPATH=src`` before
the venv exists, so the venv's own build is timed as a phase.

The record: ``{"command", "started", "total_s", "status", "phases": [{"name", "seconds",
"status"}]}``; ``status`` is ``passed``, ``failed`` or ``not run``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"
# Set for the phases: the path of the record being written, so a phase (the lab's validation
# report) can show the phases before it.
ENV_RECORD = "CAPTURELAB_TIMINGS"
STATUSES = (PASSED, FAILED, NOT_RUN)


@dataclass
class Phase:
    name: str
    seconds: float
    status: str
    lane: int = 0  # 1, 2, ...: one of the lanes of the group phase before it, run side by side

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        if not self.lane:
            del data["lane"]
        return data


@dataclass
class TimingRecord:
    command: str
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    phases: list[Phase] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        """Wall time: a lane group counts once (its phases ran inside it, side by side)."""
        return round(sum(p.seconds for p in self.phases if not p.lane), 1)

    @property
    def status(self) -> str:
        return FAILED if any(p.status == FAILED for p in self.phases) else PASSED

    def to_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "started": self.started,
            "total_s": self.total_s,
            "status": self.status,
            "phases": [p.to_dict() for p in self.phases],
        }

    def write(self, path: Path) -> None:
        """Write the record atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)

    def table(self) -> str:
        width = max([len("phase"), *(len(p.name) for p in self.phases)])

        lines = [f"{'phase':<{width}}  {'seconds':>8}  status"]
        lines += [
            f"{p.name:<{width}}  {p.seconds:>8.1f}  {p.status}"
            + (f" (lane {p.lane})" if p.lane else "")
            for p in self.phases
        ]
        lines.append(f"{'total':<{width}}  {self.total_s:>8.1f}  {self.status}")
        return "\n".join(lines)


class RecordError(ValueError):
    """A timing record that cannot be read: the message names the file and the field."""


def read_record(path: Path) -> TimingRecord:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: cannot read the timing record: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
        raise RecordError(f"{path}: a timing record is an object with a 'phases' list")
    record = TimingRecord(
        command=str(data.get("command", "")), started=str(data.get("started", ""))
    )
    for i, raw in enumerate(data["phases"]):
        try:
            phase = Phase(
                str(raw["name"]), float(raw["seconds"]), str(raw["status"]), int(raw.get("lane", 0))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(
                f"{path}: phases[{i}]: {exc!r} (needs name, seconds, status)"
            ) from None
        if phase.status not in STATUSES:
            raise RecordError(
                f"{path}: phases[{i}].status: {phase.status!r} is not one of {STATUSES}"
            )
        record.phases.append(phase)
    return record


# Runs one make target; with a log path its output goes there (lanes), else to the terminal.
Runner = Callable[[str, Path | None], int]
_PRINT = threading.Lock()


def make_runner(make: str) -> Runner:
    def run(target: str, log: Path | None) -> int:
        argv = [make, "--no-print-directory", target]
        if log is None:
            return subprocess.run(argv, check=False).returncode  # noqa: S603 - make and a target
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)  # noqa: S603
        code = proc.returncode
        with _PRINT:  # a lane's target is shown whole when it ends, never interleaved
            print(f"== {target} (output also in {log})", flush=True)
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
        return code

    return run


def parse_lanes(token: str) -> list[list[str]]:
    """``a+b|c+d``: lane 1 runs a then b while lane 2 runs c then d."""
    lanes = [[t for t in lane.split("+") if t] for lane in token.split("|")]
    if len(lanes) < 2 or any(not lane for lane in lanes):
        raise ValueError(f"phase {token!r}: lanes are written a+b|c+d, each with a target")
    return lanes


def _run_lanes(
    token: str, runner: Runner, logs: Path, clock: Callable[[], float]
) -> tuple[int, list[Phase]]:
    """Each lane in a thread; after a failure no lane starts another target."""
    lanes = parse_lanes(token)
    failed = threading.Event()
    results: list[list[Phase]] = [[] for _ in lanes]
    codes = [0] * len(lanes)

    def lane(i: int, targets: list[str]) -> None:
        for target in targets:
            if failed.is_set():
                results[i].append(Phase(target, 0.0, NOT_RUN, lane=i + 1))
                continue
            start = clock()
            code = runner(target, logs / f"{target}.log")
            status = PASSED if code == 0 else FAILED
            results[i].append(Phase(target, round(clock() - start, 1), status, lane=i + 1))
            if code != 0:
                codes[i] = code
                failed.set()

    threads = [threading.Thread(target=lane, args=(i, t)) for i, t in enumerate(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return next((c for c in codes if c), 0), [p for r in results for p in r]


def run_phases(
    record: TimingRecord,
    phases: Sequence[str],
    out: Path,
    runner: Runner,
    *,
    on_failure: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run each phase in turn, recording it; return the first failing phase's exit status.

    A phase ``a+b|c+d`` is a group of lanes run side by side (their output in
    ``<out folder>/logs/<target>.log``, printed whole as each ends): the group is recorded
    with its wall time, then each lane's phases with their own.
    """
    status = 0
    for name in phases:
        if status != 0:
            record.phases += [Phase(n, 0.0, NOT_RUN) for n in _names(name)]
            continue
        start = clock()
        if "|" in name:
            status, inner = _run_lanes(name, runner, out.parent / "logs", clock)
        else:
            status, inner = runner(name, None), []
        group = Phase(_label(name), round(clock() - start, 1), PASSED if status == 0 else FAILED)
        record.phases += [group, *inner]
        record.write(out)
    if status != 0 and on_failure:
        start = clock()
        cleanup = runner(on_failure, None)
        record.phases.append(
            Phase(on_failure, round(clock() - start, 1), PASSED if cleanup == 0 else FAILED)
        )
    record.write(out)
    return status


def _label(token: str) -> str:
    return f"{len(parse_lanes(token))} lanes" if "|" in token else token


def _names(token: str) -> list[str]:
    if "|" not in token:
        return [token]
    return [_label(token), *(t for lane in parse_lanes(token) for t in lane)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m capturelab.timings",
        description="Run make targets as timed phases; print a table and write timings.json.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run the phases (make targets) in order")
    run.add_argument("--command", required=True, help="what the record is of, e.g. 'make test'")
    run.add_argument("--out", required=True, type=Path, help="where timings.json is written")
    run.add_argument("--on-failure", help="a make target to run after a failed phase")
    run.add_argument(
        "--copy-to", type=Path, help="also copy the record into this folder at the end"
    )
    run.add_argument("phases", nargs="+", help="make targets, run in this order")
    show = sub.add_parser("show", help="print the table of a timings.json")
    show.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.action == "show":
        try:
            print(read_record(args.file).table())
        except RecordError as exc:
            print(f"capturelab.timings: error: {exc}", file=sys.stderr)
            return 2
        return 0
    record = TimingRecord(command=args.command)
    started_at = time.time()
    os.environ[ENV_RECORD] = str(args.out.resolve())  # the phases (the report) read it so far
    status = run_phases(
        record,
        args.phases,
        args.out,
        make_runner(os.environ.get("MAKE", "make")),
        on_failure=args.on_failure,
    )
    print(f"\n{args.command}: time per phase (also in {args.out})")
    print(record.table())
    if args.copy_to is not None and _written_since(args.copy_to, started_at):
        record.write(args.copy_to.resolve() / "timings.json")
        print(f"(and in {args.copy_to.resolve() / 'timings.json'})")
    return status


def _written_since(folder: Path, started_at: float) -> bool:
    """A folder (``reports/latest``) this run wrote, not one an earlier run left behind."""
    return folder.is_dir() and folder.resolve().stat().st_mtime >= started_at


if __name__ == "__main__":
    raise SystemExit(main())
