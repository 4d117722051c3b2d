"""``capturelab validate``: run the validation suites against a lab and write the report.

The same two steps ``playbooks/validate.yml`` takes, so both paths write the same report:

1. ``pytest validation --hosts=ansible://<hosts> --ansible-inventory=<inventory>`` with the
   results and evidence files of this run;
2. ``capturelab report`` with those files: node facts, checks, plots, JUnit XML.

Exit 0 every check passed, 1 a check failed, 2 an environment error (a check could not run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from capturelab.errors import InputError
from capturelab.report.cli import render_run
from capturelab.results import EXIT_ENVIRONMENT, Result, read_results, write_results
from capturelab.timings import ENV_RECORD, RecordError, read_record
from capturelab.validate.budget import PROFILES, read_suites, select

SUITES = ("throughput", "power", "e2e")  # validation/test_<suite>.py
PYTEST_OUTCOME = {
    0: "passed",
    1: "a test failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no test collected",
}


def pytest_command(
    suites_dir: Path, suites: list[str], inventory: Path, hosts: str, work: Path
) -> list[str]:
    files = []
    for suite in suites:
        path = suites_dir / f"test_{suite}.py"
        if not path.is_file():
            raise InputError(f"--suite {suite}: {path} does not exist")
        files.append(str(path))
    return [
        sys.executable,
        "-m",
        "pytest",
        *files,
        f"--hosts=ansible://{hosts}",
        f"--ansible-inventory={inventory}",
        "--capturelab-results",
        str(work / "results.json"),
        "--capturelab-evidence",
        str(work / "evidence.json"),
        "--junitxml",
        str(work / "pytest-junit.xml"),
        "-p",
        "no:cacheprovider",
        "-rfEs",
    ]


def cmd_validate(args: argparse.Namespace) -> int:
    suites_dir = Path(args.suites_dir)
    if not (suites_dir / "conftest.py").is_file():
        raise InputError(
            f"--suites-dir {suites_dir}: no conftest.py there (run from the repository root)"
        )
    suites = args.suite or [s.name for s in select(read_suites(suites_dir), args.profile)]
    work = Path(args.work) / time.strftime("%Y%m%dT%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    command = pytest_command(suites_dir, suites, Path(args.inventory), args.hosts, work)
    print("validate: " + " ".join(command[2:]), flush=True)
    proc = subprocess.run(command, check=False)  # noqa: S603 - argv we built, no shell
    results_file = work / "results.json"
    if proc.returncode not in (0, 1) or not results_file.exists():
        outcome = PYTEST_OUTCOME.get(proc.returncode, f"exit {proc.returncode}")
        extra = Result(
            suite="validation",
            check="suites-ran",
            node="controller",
            status="error",
            value=proc.returncode,
            target=0,
            tool="pytest",
            detail=f"pytest: {outcome} (see the output above)",
        )
        if not results_file.exists():
            write_results(results_file, [extra])
        else:
            write_results(results_file, [*read_results(results_file), extra])
    code = render_run(
        Path(args.inventory),
        Path(args.out),
        [results_file],
        work / "evidence.json",
        timings=phases_so_far(),
    )
    return code if proc.returncode in (0, 1) else max(code, EXIT_ENVIRONMENT)


def phases_so_far() -> dict[str, object] | None:
    """The timing record of the `make lab` this runs in (its phases before this one), if any."""
    path = os.environ.get(ENV_RECORD)
    if not path or not Path(path).is_file():
        return None
    try:
        return read_record(Path(path)).to_dict()
    except RecordError as exc:
        raise InputError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate", help="run the validation suites on a lab and write reports/<timestamp>/"
    )
    p.add_argument("--inventory", "-i", default="inventory/sim", help="inventory (default: sim)")
    p.add_argument("--suite", action="append", choices=SUITES, help="a suite to run (default: all)")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="full",
        help="without --suite: 'lab' runs the suites make lab runs, 'full' every suite (default)",
    )
    p.add_argument("--hosts", default="all", help="Ansible host pattern (default: all)")
    p.add_argument("--suites-dir", default="validation", help="the suites (default: validation)")
    p.add_argument("--out", default="reports", help="report root folder (default: reports)")
    p.add_argument(
        "--work",
        default=".lab/validation",
        help="per-run results and evidence (default: .lab/validation)",
    )
    p.set_defaults(handler=cmd_validate)
