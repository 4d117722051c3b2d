"""What the validation suites must meet, derived from the inventory and the capacity planner.

Nothing here is a number chosen for a test: every target is computed from what the inventory
declares (the ``validation_*`` variables of group ``all``) through ``capturelab.plan``:

- ``validation_cohort``: ``{participants, kb_per_minute, active_hours, compression_saving,
  retention_days}`` (the planner's inputs; ``array_tb`` optional);
- ``validation_headroom``: the factor the lab must sustain above the cohort's rate (>= 1);
- ``validation_sustained_seconds``: how long the sustained ingest runs (bounded, 10..600 s);
- ``validation_power_budget_w``: watts per node of each tier group (the design: collectors 5,
  gateways 120, storage 250, processing 450).

The ingest target is the cohort's compressed stream while active, times the headroom:
``participants x kb_per_minute x 1000 / 60 x (1 - compression_saving) x headroom`` bytes/s. A
collector's link must carry its own participant's share of that with the same headroom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capturelab.errors import InputError
from capturelab.lab.inventory import TIER_GROUPS
from capturelab.plan import Cohort, Plan, plan

COHORT_FIELDS = ("participants", "kb_per_minute", "active_hours", "compression_saving",
                 "retention_days")  # fmt: skip
OPTIONAL_COHORT_FIELDS = ("array_tb",)


@dataclass(frozen=True)
class Targets:
    cohort: Cohort
    plan: Plan
    headroom: float
    sustained_seconds: float
    power_budget_w: dict[str, float]  # per node, by tier group
    tier_nodes: dict[str, list[str]]

    @property
    def ingest_bytes_per_s(self) -> float:
        """The cohort's compressed ingest while active, times the headroom."""
        return self.plan.avg_ingest_bytes_per_s * self.headroom

    @property
    def collector_bytes_per_s(self) -> float:
        """One participant's share of the ingest target."""
        return self.ingest_bytes_per_s / self.cohort.participants

    def tier_budget_w(self, tier: str) -> float:
        return self.power_budget_w[tier] * len(self.tier_nodes.get(tier, []))

    @property
    def total_budget_w(self) -> float:
        return sum(self.tier_budget_w(t) for t in TIER_GROUPS)

    def node_budget_w(self, groups: list[str]) -> float:
        """A node in several tier groups (an all-in-one box) gets the sum of their budgets."""
        return sum(self.power_budget_w[g] for g in groups if g in self.power_budget_w)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cohort": {f: getattr(self.cohort, f) for f in (*COHORT_FIELDS, "array_tb")},
            "headroom": self.headroom,
            "sustained_seconds": self.sustained_seconds,
            "ingest_bytes_per_s": round(self.ingest_bytes_per_s, 3),
            "collector_bytes_per_s": round(self.collector_bytes_per_s, 3),
            "power_budget_w": self.power_budget_w,
            "tier_budget_w": {t: self.tier_budget_w(t) for t in TIER_GROUPS},
            "total_budget_w": self.total_budget_w,
            "energy_budget_kwh_per_day": round(self.total_budget_w * 24 / 1000, 3),
            "plan": self.plan.to_dict(),
        }


def _number(var: str, value: Any, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{var} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{var} must be a number, got {value!r}") from None
    if math.isnan(number) or not low <= number <= high:
        limit = f"from {low:g}" + (f" to {high:g}" if high != math.inf else "")
        raise InputError(f"{var} must be {limit}, got {value!r}")
    return number


def targets_from_vars(all_vars: Mapping[str, Any], tier_nodes: Mapping[str, list[str]]) -> Targets:
    """Targets from the variables of group ``all`` and the tier groups' members."""
    raw = all_vars.get("validation_cohort")
    if not isinstance(raw, Mapping):
        raise InputError(
            "validation_cohort is not set (or not a mapping): the inventory must declare the "
            f"cohort the lab is built for ({', '.join(COHORT_FIELDS)})"
        )
    unknown = set(raw) - set(COHORT_FIELDS) - set(OPTIONAL_COHORT_FIELDS)
    if unknown:
        raise InputError(f"validation_cohort: unknown field(s) {', '.join(sorted(unknown))}")
    missing = [f for f in COHORT_FIELDS if f not in raw]
    if missing:
        raise InputError(f"validation_cohort: missing field(s) {', '.join(missing)}")
    participants = _number("validation_cohort.participants", raw["participants"], low=1)
    if participants != int(participants):
        raise InputError(f"validation_cohort.participants must be whole, got {participants}")
    try:
        cohort = Cohort(
            participants=int(participants),
            kb_per_minute=_number("validation_cohort.kb_per_minute", raw["kb_per_minute"], low=0),
            active_hours=_number("validation_cohort.active_hours", raw["active_hours"], low=0),
            compression_saving=_number(
                "validation_cohort.compression_saving", raw["compression_saving"], low=0
            ),
            retention_days=_number(
                "validation_cohort.retention_days", raw["retention_days"], low=0
            ),
            array_tb=_number("validation_cohort.array_tb", raw["array_tb"], low=0)
            if raw.get("array_tb") is not None
            else None,
            collectors=len(tier_nodes.get("collectors", [])),
        )
    except InputError as exc:
        raise InputError(f"validation_cohort: {exc}") from None
    headroom = _number("validation_headroom", all_vars.get("validation_headroom", 2.0), low=1)
    seconds = _number(
        "validation_sustained_seconds",
        all_vars.get("validation_sustained_seconds", 60),
        low=10,
        high=600,
    )
    budget_raw = all_vars.get("validation_power_budget_w")
    if not isinstance(budget_raw, Mapping):
        raise InputError(
            "validation_power_budget_w is not set (or not a mapping): watts per node for each "
            f"tier group ({', '.join(TIER_GROUPS)})"
        )
    extra = set(budget_raw) - set(TIER_GROUPS)
    if extra:
        raise InputError(
            f"validation_power_budget_w: unknown tier group(s) {', '.join(sorted(extra))} "
            f"(known: {', '.join(TIER_GROUPS)})"
        )
    budget: dict[str, float] = {}
    for tier in TIER_GROUPS:
        if tier not in budget_raw:
            raise InputError(f"validation_power_budget_w.{tier} is missing")
        budget[tier] = _number(f"validation_power_budget_w.{tier}", budget_raw[tier], low=0)
    return Targets(
        cohort=cohort,
        plan=plan(cohort),
        headroom=headroom,
        sustained_seconds=seconds,
        power_budget_w=budget,
        tier_nodes={t: sorted(tier_nodes.get(t, [])) for t in TIER_GROUPS},
    )
