"""Writing a report folder: ``results.json``, ``nodes.json`` and ``report.md``.

``reports/<timestamp>/`` holds each run; ``reports/latest`` points at the newest. Every figure
in the Markdown says where it came from (measured or modelled, and which tool).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from capturelab import __version__
from capturelab.report.nodes import NodeFacts
from capturelab.results import Result, exit_code, write_results

STATUS_WORD = {0: "PASS", 1: "FAIL", 2: "ENVIRONMENT ERROR"}


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[Result], nodes: Sequence[NodeFacts], title: str) -> str:
    code = exit_code(results)
    counts = {
        s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "skip", "error")
    }
    lines = [
        f"# {title}",
        "",
        f"Overall: **{STATUS_WORD[code]}** (exit {code}) - "
        + ", ".join(f"{n} {s}" for s, n in counts.items()),
        "",
        f"capturelab {__version__}, generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        "## Nodes",
        "",
        "| node | groups | reachable | arch | OS | kernel | virtualisation |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in nodes:
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    n.name,
                    ", ".join(n.groups),
                    "yes" if n.reachable else f"NO ({n.error})",
                    n.arch,
                    n.os,
                    n.kernel,
                    n.virtualization or "-",
                )
            )
            + " |"
        )
    lines += [
        "",
        "## Checks",
        "",
        "| suite | check | node | status | value | target | unit | source | tool | detail |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    r.suite,
                    r.check,
                    r.node,
                    r.status.upper(),
                    r.value,
                    r.target,
                    r.unit or "",
                    r.source,
                    r.tool,
                    r.detail,
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    out_root: Path,
    results: Sequence[Result],
    nodes: Sequence[NodeFacts],
    title: str = "capturelab validation report",
    stamp: str | None = None,
) -> Path:
    """Write a report folder under ``out_root`` and point ``out_root/latest`` at it."""
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    folder = out_root / stamp
    folder.mkdir(parents=True, exist_ok=False)
    write_results(folder / "results.json", results)
    (folder / "nodes.json").write_text(json.dumps([n.to_dict() for n in nodes], indent=2) + "\n")
    (folder / "report.md").write_text(render_markdown(results, nodes, title))
    latest = out_root / "latest"
    tmp = out_root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp)
    tmp.replace(latest)  # atomic: readers never see a missing 'latest'
    return folder
