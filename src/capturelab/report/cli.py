"""``capturelab report``: collect the lab suite's checks and write a report folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from capturelab.report.nodes import collect, node_results
from capturelab.report.render import STATUS_WORD, write_report
from capturelab.results import exit_code


def cmd_report(args: argparse.Namespace) -> int:
    nodes = collect(Path(args.inventory))
    results = node_results(nodes)
    folder = write_report(Path(args.out), results, nodes)
    code = exit_code(results)
    print(f"report: {folder} ({STATUS_WORD[code]})")
    for n in nodes:
        state = "reachable" if n.reachable else f"UNREACHABLE: {n.error}"
        print(f"  {n.name:<14} {n.arch:<8} {n.os:<12} {n.kernel:<28} {state}")
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="check every node and write reports/<timestamp>/")
    p.add_argument("--inventory", "-i", default="inventory/sim", help="inventory (default: sim)")
    p.add_argument("--out", default="reports", help="report root folder (default: reports)")
    p.set_defaults(handler=cmd_report)
