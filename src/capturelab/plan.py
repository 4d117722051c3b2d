"""Capacity planning: from a cohort to bytes, rates, disk days, link share, Kafka buffer and power.

Units are decimal (1 KB = 1,000 bytes, 1 TB = 10^12 bytes), as disk and link vendors use them.
Every assumption the numbers rest on is returned with them (``assumptions``), so a reader can
see exactly what was modelled:

- a participant produces ``kb_per_minute`` of raw capture while active, for ``active_hours`` a day;
- collectors compress before sending, saving ``compression_saving`` (0.7 = 70 %): what crosses
  the network, sits in Kafka and lands on the array is the compressed stream;
- the average ingest rate is over the active hours; the peak is that times ``peak_factor``;
- Kafka keeps ``kafka_retention_days`` of the compressed stream on each of ``replication`` copies;
- the array keeps ``retention_days`` of it; "days until full" ignores retention (no deletion);
- power is the nameplate model: one collector per participant plus one of each server.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from capturelab.errors import InputError

SECONDS_PER_DAY = 86_400
TEN_GBE_BYTES_PER_S = 10e9 / 8

# Nameplate draw of the design's hardware (W): Pi 5 collector, Xeon E-2246G gateway,
# 8 x NVMe storage node, RTX 4090 processing node.
DESIGN_WATTS: dict[str, float] = {
    "collector": 5.0,
    "gateway": 120.0,
    "storage": 250.0,
    "processing": 450.0,
}


@dataclass(frozen=True)
class Cohort:
    participants: int
    kb_per_minute: float
    active_hours: float
    compression_saving: float
    retention_days: float
    array_tb: float | None = None
    peak_factor: float = 2.0
    kafka_retention_days: float = 5.0
    replication: int = 1
    watts: dict[str, float] = field(default_factory=lambda: dict(DESIGN_WATTS))
    collectors: int | None = None  # None = one per participant

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("participants", self.participants >= 1, "at least 1"),
            ("kb_per_minute", self.kb_per_minute > 0, "positive"),
            ("active_hours", 0 < self.active_hours <= 24, "in (0, 24]"),
            (
                "compression_saving",
                0 <= self.compression_saving < 1,
                "in [0, 1): 0.7 means 70 % saved",
            ),
            ("retention_days", self.retention_days > 0, "positive"),
            ("peak_factor", self.peak_factor >= 1, "at least 1"),
            ("kafka_retention_days", self.kafka_retention_days > 0, "positive"),
            ("replication", self.replication >= 1, "at least 1"),
        ]
        if self.array_tb is not None:
            checks.append(("array_tb", self.array_tb > 0, "positive"))
        if self.collectors is not None:
            checks.append(("collectors", self.collectors >= 0, "0 or more"))
        for name, ok, rule in checks:
            if not ok or (
                isinstance(getattr(self, name), float) and math.isnan(getattr(self, name))
            ):
                raise InputError(
                    f"{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}"
                )
        unknown = set(self.watts) - set(DESIGN_WATTS)
        if unknown:
            raise InputError(
                f"watts: unknown tier(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(DESIGN_WATTS)})"
            )
        for tier, w in self.watts.items():
            if w < 0:
                raise InputError(f"watts.{tier} must be 0 or more, got {w}")


@dataclass(frozen=True)
class Plan:
    raw_bytes_per_day: float
    compressed_bytes_per_day: float
    avg_ingest_bytes_per_s: float
    peak_ingest_bytes_per_s: float
    daily_mean_ingest_bytes_per_s: float
    link_share_10gbe: float
    kafka_buffer_bytes: float
    retention_bytes: float
    array_bytes: float | None
    array_days_until_full: float | None
    retention_fits_array: bool | None
    power_watts: dict[str, float]
    total_watts: float
    energy_kwh_per_day: float
    assumptions: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: byte counts as whole bytes, rates to the millibyte, shares to 1e-6."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not isinstance(value, bool):
                if key.endswith("_bytes") or (key.endswith("_per_day") and "bytes" in key):
                    out[key] = round(value)
                elif key == "link_share_10gbe":
                    out[key] = round(value, 6)
                else:
                    out[key] = round(value, 3)
        out["power_watts"] = {k: round(v, 3) for k, v in self.power_watts.items()}
        return out


def plan(c: Cohort) -> Plan:
    raw_per_s_active = c.participants * c.kb_per_minute * 1000 / 60
    raw_per_day = c.participants * c.kb_per_minute * 1000 * 60 * c.active_hours
    kept = 1 - c.compression_saving
    compressed_per_day = raw_per_day * kept
    avg_ingest = raw_per_s_active * kept
    peak_ingest = avg_ingest * c.peak_factor
    array_bytes = c.array_tb * 1e12 if c.array_tb is not None else None
    retention_bytes = compressed_per_day * c.retention_days
    collectors = c.participants if c.collectors is None else c.collectors
    power = {
        "collectors": collectors * c.watts["collector"],
        "gateway": c.watts["gateway"],
        "storage": c.watts["storage"],
        "processing": c.watts["processing"],
    }
    total = sum(power.values())
    return Plan(
        raw_bytes_per_day=raw_per_day,
        compressed_bytes_per_day=compressed_per_day,
        avg_ingest_bytes_per_s=avg_ingest,
        peak_ingest_bytes_per_s=peak_ingest,
        daily_mean_ingest_bytes_per_s=compressed_per_day / SECONDS_PER_DAY,
        link_share_10gbe=peak_ingest / TEN_GBE_BYTES_PER_S,
        kafka_buffer_bytes=compressed_per_day * c.kafka_retention_days * c.replication,
        retention_bytes=retention_bytes,
        array_bytes=array_bytes,
        array_days_until_full=(array_bytes / compressed_per_day)
        if array_bytes is not None
        else None,
        retention_fits_array=(retention_bytes <= array_bytes) if array_bytes is not None else None,
        power_watts=power,
        total_watts=total,
        energy_kwh_per_day=total * 24 / 1000,
        assumptions=[
            "decimal units: 1 KB = 1,000 bytes, 1 TB = 10^12 bytes",
            f"{c.participants} participants x {c.kb_per_minute:g} KB/min raw while active, "
            f"{c.active_hours:g} active h/day",
            f"collectors compress before sending: {c.compression_saving:.0%} saved "
            f"(ratio {1 / kept:.2f}x); network, Kafka and the array hold the compressed stream",
            f"average ingest is over the active hours; peak = average x {c.peak_factor:g}",
            f"Kafka keeps {c.kafka_retention_days:g} days x {c.replication} replica(s)",
            f"the array keeps {c.retention_days:g} days; days-until-full assumes nothing is deleted",
            f"power: nameplate model, {collectors} collector(s) (one per participant unless set) "
            f"at {c.watts['collector']:g} W + gateway {c.watts['gateway']:g} W + storage "
            f"{c.watts['storage']:g} W + processing {c.watts['processing']:g} W, around the clock",
        ],
    )


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def render(p: Plan) -> str:
    rows = [
        ("raw per day", _bytes(p.raw_bytes_per_day)),
        ("compressed per day", _bytes(p.compressed_bytes_per_day)),
        ("average ingest (active hours)", f"{_bytes(p.avg_ingest_bytes_per_s)}/s"),
        ("peak ingest", f"{_bytes(p.peak_ingest_bytes_per_s)}/s"),
        ("daily mean ingest", f"{_bytes(p.daily_mean_ingest_bytes_per_s)}/s"),
        ("share of a 10 GbE link at peak", f"{p.link_share_10gbe:.2%}"),
        ("Kafka buffer for its retention", _bytes(p.kafka_buffer_bytes)),
        ("array space for the retention", _bytes(p.retention_bytes)),
    ]
    if p.array_bytes is not None and p.array_days_until_full is not None:
        rows.append(("array size", _bytes(p.array_bytes)))
        rows.append(("days until the array fills", f"{p.array_days_until_full:,.1f}"))
        rows.append(("retention fits the array", "yes" if p.retention_fits_array else "NO"))
    for tier, w in p.power_watts.items():
        rows.append((f"power: {tier}", f"{w:,.0f} W"))
    rows.append(("power: total", f"{p.total_watts:,.0f} W"))
    rows.append(("energy per day", f"{p.energy_kwh_per_day:,.1f} kWh"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", "Assumptions:"] + [f"- {a}" for a in p.assumptions]
    return "\n".join(lines)
