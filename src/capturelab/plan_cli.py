"""``capturelab plan``: the capacity planner's command line."""

from __future__ import annotations

import argparse
import json

from capturelab.errors import InputError
from capturelab.plan import DESIGN_WATTS, Cohort, plan, render


def _watts(text: str) -> dict[str, float]:
    """``collector=5,gateway=120`` -> overrides of the design's nameplate watts."""
    out = dict(DESIGN_WATTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, _, value = part.partition("=")
        if tier not in DESIGN_WATTS or not value:
            raise InputError(
                f"--watts: {part!r} must be TIER=W with TIER in {', '.join(DESIGN_WATTS)}"
            )
        try:
            out[tier] = float(value)
        except ValueError:
            raise InputError(f"--watts: {part!r}: {value!r} is not a number") from None
    return out


def cmd_plan(args: argparse.Namespace) -> int:
    cohort = Cohort(
        participants=args.participants,
        kb_per_minute=args.kb_per_minute,
        active_hours=args.active_hours,
        compression_saving=args.compression_saving,
        retention_days=args.retention_days,
        array_tb=args.array_tb,
        peak_factor=args.peak_factor,
        kafka_retention_days=args.kafka_retention_days,
        replication=args.replication,
        watts=_watts(args.watts),
        collectors=args.collectors,
    )
    result = plan(cohort)
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="capacity: daily volume, rates, array days, link share, power")
    p.add_argument("--participants", type=int, required=True)
    p.add_argument("--kb-per-minute", type=float, required=True, help="raw capture per participant")
    p.add_argument("--active-hours", type=float, required=True, help="active hours per day (<= 24)")
    p.add_argument("--compression-saving", type=float, required=True, help="0.7 = 70 %% saved")
    p.add_argument("--retention-days", type=float, required=True, help="days the array keeps data")
    p.add_argument("--array-tb", type=float, help="usable array size in TB")
    p.add_argument("--peak-factor", type=float, default=2.0, help="peak / average (default 2)")
    p.add_argument(
        "--kafka-retention-days", type=float, default=5.0, help="Kafka buffer (default 5)"
    )
    p.add_argument("--replication", type=int, default=1, help="Kafka replicas (default 1)")
    p.add_argument("--collectors", type=int, help="collectors (default: one per participant)")
    p.add_argument("--watts", default="", help="nameplate overrides, e.g. gateway=95,storage=180")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_plan)
