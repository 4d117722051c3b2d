"""The report's plots, drawn with matplotlib (Agg) and embedded in report.html as PNG data URIs.

Each plot is drawn only from what the suites recorded (results and evidence); a plot without
data is left out and the report says so. Every plot's caption names where its figures came from.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capturelab.results import Result

STATUS_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "skip": "#9e9e9e", "error": "#ef6c00"}


@dataclass(frozen=True)
class Plot:
    title: str
    caption: str
    png_base64: str


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - the lab extra: only the report draws

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt.subplots(figsize=(width, height))


def _bars(
    results: Sequence[Result], title: str, caption: str, scale: float, unit: str, *, log: bool
) -> Plot:
    fig, ax = _figure(8, 1.6 + 0.45 * len(results))
    labels = [f"{r.check} ({r.node})" for r in results]
    values = [float(r.value) * scale for r in results]
    targets = [float(r.target) * scale for r in results]
    ys = range(len(results))
    ax.barh(ys, values, color=[STATUS_COLOURS[r.status] for r in results],
            hatch=["" if r.source == "measured" else "//" for r in results])  # fmt: skip
    ax.scatter(targets, ys, marker="|", s=400, color="black", zorder=3, label="target")
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    if log:  # links and arrays run orders of magnitude above a small cohort's target
        ax.set_xscale("log")
        unit += " (log scale)"
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.legend(loc="lower right")
    return Plot(title, caption, _png(fig))


def throughput_plot(results: Sequence[Result]) -> Plot | None:
    rows = [
        r
        for r in results
        if r.suite == "throughput" and r.unit == "B/s" and r.value is not None and r.target
    ]
    if not rows:
        return None
    return _bars(
        rows,
        "Throughput vs targets",
        "Measured on the lab (iperf3, Kafka ProducerPerformance and capturelab's producer, fio "
        "and the sink's write path, the sustained load); the black marks are the targets the "
        "inventory's cohort and the planner give. Green met, red missed.",
        1 / 1e6,
        "MB/s",
        log=True,
    )


def power_plot(results: Sequence[Result]) -> Plot | None:
    rows = [r for r in results if r.suite == "power" and r.unit == "W" and r.value is not None]
    if not rows:
        return None
    return _bars(
        rows,
        "Power per node and tier vs budget",
        "Solid bars are measured (smart plug, Pi 5 PMIC, nvidia-smi, RAPL), hatched bars are "
        "modelled (nameplate or the design's figure); each row's tool is in the table. The black "
        "marks are the inventory's budgets.",
        1.0,
        "W",
        log=False,
    )


def timeline_plot(timeline: Sequence[dict[str, Any]]) -> Plot | None:
    if not timeline:
        return None
    fig, ax = _figure(8, 0.6 + 0.45 * len(timeline))
    for i, row in enumerate(timeline):
        ax.barh(i, row["seconds"], left=row["start_s"], color="#1565c0")
        ax.text(row["start_s"] + row["seconds"], i, f" {row['seconds']:.1f} s", va="center")
    ax.set_yticks(range(len(timeline)), [r["stage"] for r in timeline])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the end-to-end run started")
    ax.set_title("End-to-end stage timeline")
    return Plot(
        "End-to-end stage timeline",
        "Wall-clock time of each stage of the capture-to-finetune run, measured on the controller.",
        _png(fig),
    )


def loss_plot(loss: Sequence[float]) -> Plot | None:
    if not loss:
        return None
    fig, ax = _figure(8, 3.2)
    ax.plot(range(1, len(loss) + 1), loss, marker="o", color="#6a1b9a")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Fine-tune loss curve")
    return Plot(
        "Fine-tune loss curve",
        "Per-step training loss from the run's metrics.json (capturelab train run, measured).",
        _png(fig),
    )


def findings_plot(findings: dict[str, int]) -> Plot | None:
    if not findings:
        return None
    kinds = sorted(findings, key=lambda k: -findings[k])
    fig, ax = _figure(8, 0.6 + 0.4 * len(kinds))
    ax.barh(range(len(kinds)), [findings[k] for k in kinds], color="#00838f")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.invert_yaxis()
    ax.set_xlabel("findings replaced")
    ax.set_title("Redaction findings by kind")
    return Plot(
        "Redaction findings by kind",
        "From the dataset card of the end-to-end run (the shared redact() at the edge and in the "
        "dataset builder), measured.",
        _png(fig),
    )


def all_plots(results: Sequence[Result], evidence: dict[str, Any]) -> list[Plot]:
    drawn = [
        throughput_plot(results),
        power_plot(results),
        timeline_plot(evidence.get("timeline", [])),
        loss_plot(evidence.get("loss_curve", [])),
        findings_plot(evidence.get("redaction_findings", {})),
    ]
    return [p for p in drawn if p is not None]
