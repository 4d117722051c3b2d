"""Writing a report folder: ``report.html``, ``report.md``, ``results.json``, ``junit.xml``.

``reports/<timestamp>/`` holds each run; ``reports/latest`` points at the newest. Every figure
says where it came from (measured or modelled, and which tool). ``report.html`` is one
self-contained file: its plots are PNG data URIs, it loads nothing.
"""

from __future__ import annotations

import html
import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capturelab import __version__
from capturelab.report.nodes import NodeFacts
from capturelab.report.plots import STATUS_COLOURS, all_plots
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


def render_junit(results: Sequence[Result]) -> str:
    """JUnit XML: one testsuite per suite, one testcase per check (CI dashboards read it)."""
    root = ET.Element("testsuites", name="capturelab validation")
    for suite in dict.fromkeys(r.suite for r in results):
        rows = [r for r in results if r.suite == suite]
        el = ET.SubElement(
            root,
            "testsuite",
            name=suite,
            tests=str(len(rows)),
            failures=str(sum(r.status == "fail" for r in rows)),
            errors=str(sum(r.status == "error" for r in rows)),
            skipped=str(sum(r.status == "skip" for r in rows)),
        )
        for r in rows:
            case = ET.SubElement(el, "testcase", classname=f"{suite}.{r.node}", name=r.check)
            text = _figure_text(r)
            if r.status == "fail":
                ET.SubElement(case, "failure", message=text)
            elif r.status == "error":
                ET.SubElement(case, "error", message=text)
            elif r.status == "skip":
                ET.SubElement(case, "skipped", message=r.detail)
            ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _figure_text(r: Result) -> str:
    unit = f" {r.unit}" if r.unit else ""
    target = f" (target {r.target}{unit})" if r.target is not None else ""
    tool = f", {r.tool}" if r.tool else ""
    detail = f": {r.detail}" if r.detail else ""
    return f"{r.value}{unit}{target}, {r.source}{tool}{detail}"


def render_html(
    results: Sequence[Result],
    nodes: Sequence[NodeFacts],
    evidence: dict[str, Any],
    title: str,
) -> str:
    code = exit_code(results)
    counts = {s: sum(1 for r in results if r.status == s) for s in STATUS_COLOURS}
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;width:100%;font-size:.85em}"
        "td,th{border:1px solid #ccc;padding:.25em .4em;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.st{font-weight:bold;color:#fff;text-align:center}"
        "figure{margin:1.5em 0}figcaption{font-size:.85em;color:#444}img{max-width:100%}"
        "</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p><span class="st" style="background:{_overall_colour(code)};padding:.2em .6em">'
        f"{STATUS_WORD[code]}</span> exit {code} &mdash; "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"</p><p>capturelab {e(__version__)}, generated {e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
        "</p>",
    ]
    plots = all_plots(results, evidence)
    if plots:
        parts.append("<h2>Plots</h2>")
    for p in plots:
        parts.append(
            f'<figure><img alt="{e(p.title)}" src="data:image/png;base64,{p.png_base64}">'
            f"<figcaption><b>{e(p.title)}.</b> {e(p.caption)}</figcaption></figure>"
        )
    missing = _missing_plots(results, evidence)
    if missing:
        parts.append(f"<p>Not drawn (no data recorded): {e(', '.join(missing))}.</p>")
    parts.append(
        "<h2>Checks</h2><table><tr>"
        + "".join(
            f"<th>{h}</th>"
            for h in (
                "suite",
                "check",
                "node",
                "status",
                "value",
                "target",
                "unit",
                "source",
                "tool",
                "detail",
            )
        )
        + "</tr>"
    )
    for r in results:
        parts.append(
            "<tr>"
            + "".join(f"<td>{e(str(v))}</td>" for v in (r.suite, r.check, r.node))
            + f'<td class="st" style="background:{STATUS_COLOURS[r.status]}">{r.status.upper()}</td>'
            + "".join(
                f"<td>{e('' if v is None else str(v))}</td>"
                for v in (r.value, r.target, r.unit, r.source, r.tool, r.detail)
            )
            + "</tr>"
        )
    parts.append("</table>")
    if nodes:
        parts.append(
            "<h2>Nodes</h2><table><tr><th>node</th><th>groups</th><th>reachable</th><th>arch</th>"
            "<th>OS</th><th>kernel</th><th>virtualisation</th></tr>"
        )
        for n in nodes:
            cells = (n.name, ", ".join(n.groups), "yes" if n.reachable else f"NO ({n.error})",
                     n.arch, n.os, n.kernel, n.virtualization or "-")  # fmt: skip
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts += _timings_html(evidence.get("lab_timings"))
    if evidence.get("targets"):
        parts.append(
            "<h2>Targets (from the inventory and the planner)</h2><pre>"
            + e(json.dumps(evidence["targets"], indent=1))
            + "</pre>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _timings_html(record: Any) -> list[str]:
    """The `make lab` phases before validation (the record grows; the final one is beside)."""
    if not isinstance(record, dict) or not record.get("phases"):
        return []
    e = html.escape
    rows = [
        f"<tr><td>{e(str(p.get('name')))}</td><td>{float(p.get('seconds', 0)):.1f}</td>"
        f"<td>{e(str(p.get('status')))}</td></tr>"
        for p in record["phases"]
    ]
    return [
        f"<h2>Time per phase ({e(str(record.get('command', '')))}, up to this validation)</h2>",
        "<table><tr><th>phase</th><th>seconds</th><th>status</th></tr>",
        *rows,
        "</table><p>The whole run's record, this validation included, is timings.json beside "
        "this report.</p>",
    ]


def _overall_colour(code: int) -> str:
    return {0: STATUS_COLOURS["pass"], 1: STATUS_COLOURS["fail"]}.get(code, STATUS_COLOURS["error"])


def _missing_plots(results: Sequence[Result], evidence: dict[str, Any]) -> list[str]:
    out = []
    if not any(r.suite == "throughput" and r.unit == "B/s" for r in results):
        out.append("throughput")
    if not any(r.suite == "power" and r.unit == "W" for r in results):
        out.append("power")
    for key, name in (("timeline", "stage timeline"), ("loss_curve", "loss curve"),
                      ("redaction_findings", "redaction findings")):  # fmt: skip
        if not evidence.get(key):
            out.append(name)
    return out


def summary_lines(results: Sequence[Result], folder: Path) -> list[str]:
    """The one-screen summary ``make lab`` ends with: the verdict, per suite, what failed."""
    code = exit_code(results)
    lines = [f"report: {folder / 'report.html'} ({STATUS_WORD[code]}, exit {code})"]
    for suite in dict.fromkeys(r.suite for r in results):
        rows = [r for r in results if r.suite == suite]
        counts = ", ".join(
            f"{n} {s}" for s in STATUS_COLOURS if (n := sum(r.status == s for r in rows))
        )
        lines.append(f"  {suite:<11} {counts}")
    for r in results:
        if r.status in ("fail", "error"):
            lines.append(
                f"  {r.status.upper():<5} {r.suite}/{r.check} {r.node}: {_figure_text(r)}"[:200]
            )
    return lines


def write_report(
    out_root: Path,
    results: Sequence[Result],
    nodes: Sequence[NodeFacts],
    *,
    title: str = "capturelab validation report",
    stamp: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> Path:
    """Write a report folder under ``out_root`` and point ``out_root/latest`` at it."""
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    evidence = evidence or {}
    folder = out_root / stamp
    folder.mkdir(parents=True, exist_ok=False)
    write_results(folder / "results.json", results)
    (folder / "nodes.json").write_text(json.dumps([n.to_dict() for n in nodes], indent=2) + "\n")
    (folder / "evidence.json").write_text(json.dumps(evidence, indent=1, sort_keys=True) + "\n")
    (folder / "report.md").write_text(render_markdown(results, nodes, title))
    (folder / "report.html").write_text(render_html(results, nodes, evidence, title))
    (folder / "junit.xml").write_text(render_junit(results))
    latest = out_root / "latest"
    tmp = out_root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stamp)
    tmp.replace(latest)  # atomic: readers never see a missing 'latest'
    return folder
