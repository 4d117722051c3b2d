"""Measurements turned into check results: one ``Result`` per check, value against target.

Pure functions: the suites under ``validation/`` run the tools on the nodes and hand the output
here, so what makes a check pass or fail is unit-tested without a lab.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from capturelab.errors import InputError
from capturelab.lab.inventory import TIER_GROUPS
from capturelab.power import Reading
from capturelab.results import Result, Source
from capturelab.validate.targets import Targets


def bound(
    suite: str,
    check: str,
    node: str,
    *,
    value: float,
    target: float,
    unit: str,
    minimum: bool,
    tool: str,
    detail: str = "",
    source: Source = "measured",
) -> Result:
    """A value against a target: at least the target (``minimum``) or at most it."""
    ok = value >= target if minimum else value <= target
    return Result(
        suite=suite,
        check=check,
        node=node,
        status="pass" if ok else "fail",
        value=round(value, 3),
        target=round(target, 3),
        unit=unit,
        source=source,
        tool=tool,
        detail=detail,
    )


def parse_iperf3(output: str) -> tuple[float, float]:
    """``iperf3 --json`` of a client run: (bytes/s received at the far end, retransmits)."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        raise InputError(f"iperf3 output is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("iperf3 output is not a JSON object")
    if data.get("error"):
        raise InputError(f"iperf3: {data['error']}")
    try:
        end = data["end"]
        received = float(end["sum_received"]["bits_per_second"]) / 8
        retransmits = float(end.get("sum_sent", {}).get("retransmits", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"iperf3 output has no end.sum_received ({exc})") from None
    return received, retransmits


def power_results(readings: Sequence[tuple[Reading, list[str]]], targets: Targets) -> list[Result]:
    """Per node, per tier and in total against the inventory's budget (labelled by source)."""
    out: list[Result] = []
    tier_w: dict[str, float] = dict.fromkeys(TIER_GROUPS, 0.0)
    tier_sources: dict[str, set[str]] = {t: set() for t in TIER_GROUPS}
    for reading, groups in readings:
        out.append(
            bound(
                "power",
                "node-power",
                reading.node,
                value=reading.watts,
                target=targets.node_budget_w(groups),
                unit="W",
                minimum=False,
                tool=reading.tool,
                detail=reading.detail,
                source="measured" if reading.source == "measured" else "modelled",
            )
        )
        share = [g for g in groups if g in tier_w]
        for g in share:  # an all-in-one node is counted in each of its tiers by budget share
            budget = targets.node_budget_w(share)
            part = reading.watts * (targets.power_budget_w[g] / budget) if budget else 0.0
            tier_w[g] += part
            tier_sources[g].add(reading.source)
    for tier in TIER_GROUPS:
        if not targets.tier_nodes.get(tier):
            continue
        out.append(
            bound(
                "power",
                f"tier-power-{tier}",
                tier,
                value=tier_w[tier],
                target=targets.tier_budget_w(tier),
                unit="W",
                minimum=False,
                tool="sum of node readings",
                detail=_mix(tier_sources[tier]),
                source=_source(tier_sources[tier]),
            )
        )
    total = sum(tier_w.values())
    every = set().union(*tier_sources.values())
    out.append(
        bound(
            "power",
            "total-power",
            "lab",
            value=total,
            target=targets.total_budget_w,
            unit="W",
            minimum=False,
            tool="sum of node readings",
            detail=_mix(every),
            source=_source(every),
        )
    )
    out.append(
        bound(
            "power",
            "energy-per-day",
            "lab",
            value=total * 24 / 1000,
            target=targets.total_budget_w * 24 / 1000,
            unit="kWh/day",
            minimum=False,
            tool="total power x 24 h",
            detail="the draw read now, held around the clock; " + _mix(every),
            source=_source(every),
        )
    )
    return out


def _source(sources: set[str]) -> Source:
    return "measured" if sources == {"measured"} else "modelled"


def _mix(sources: set[str]) -> str:
    if sources == {"measured"}:
        return "every node measured"
    if sources == {"modelled"}:
        return "every node modelled (no meter readable)"
    return "measured and modelled nodes mixed: the total is partly modelled"


def stage_timeline(stages: Sequence[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """(name, start, end) wall times -> rows relative to the first start, for the report."""
    if not stages:
        return []
    t0 = min(s for _, s, _ in stages)
    return [
        {"stage": name, "start_s": round(s - t0, 3), "seconds": round(e - s, 3)}
        for name, s, e in stages
    ]
