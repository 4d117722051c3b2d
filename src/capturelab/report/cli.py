"""``capturelab report``: node facts plus the suites' results, written as a report folder.

Without ``--results`` it checks only that every node is reachable (the ``lab`` suite). With the
files a validation run wrote (``capturelab validate`` or ``playbooks/validate.yml``), it renders
everything: ``report.html`` (plots), ``report.md``, ``results.json``, ``junit.xml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from capturelab.errors import InputError
from capturelab.report.nodes import collect, node_results
from capturelab.report.render import summary_lines, write_report
from capturelab.results import Result, exit_code, read_results


def read_evidence(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the evidence: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the evidence must be a JSON object")
    return data


def render_run(
    inventory: Path,
    out: Path,
    results_files: list[Path],
    evidence_file: Path | None,
    timings: dict[str, Any] | None = None,
) -> int:
    """Collect node facts, merge the suites' results, write the report, print the summary.

    ``timings``: the record of the `make lab` phases so far, shown in the report.
    """
    nodes = collect(inventory)
    results: list[Result] = node_results(nodes)
    for path in results_files:
        results += read_results(path)
    evidence = read_evidence(evidence_file)
    if timings:
        evidence["lab_timings"] = timings
    folder = write_report(out, results, nodes, evidence=evidence)
    for line in summary_lines(results, folder):
        print(line)
    for n in nodes:
        state = "reachable" if n.reachable else f"UNREACHABLE: {n.error}"
        print(f"  {n.name:<14} {n.arch:<8} {n.os:<12} {n.kernel:<28} {state}")
    return exit_code(results)


def cmd_report(args: argparse.Namespace) -> int:
    return render_run(
        Path(args.inventory),
        Path(args.out),
        [Path(p) for p in args.results or []],
        Path(args.evidence) if args.evidence else None,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="check every node and write reports/<timestamp>/")
    p.add_argument("--inventory", "-i", default="inventory/sim", help="inventory (default: sim)")
    p.add_argument("--out", default="reports", help="report root folder (default: reports)")
    p.add_argument("--results", action="append", help="a suite run's results.json (repeatable)")
    p.add_argument("--evidence", help="a suite run's evidence.json (plots' data)")
    p.set_defaults(handler=cmd_report)
