"""Power budget: every node's draw from the best source it offers, against the inventory's budget.

Sources, best first (``capturelab.power``): a smart plug the inventory names for the node
(``power_plug: {type: shelly|tasmota, url: http://<plug>}``, read from the controller), the Pi 5
PMIC, nvidia-smi + RAPL, RAPL; else the nameplate (``power_nameplate_w``) or the design's figure
for the tier, labelled **modelled**. Per node, per tier and in total against
``validation_power_budget_w`` (and the energy per day that draw means).
"""

from __future__ import annotations

from typing import Any

from conftest import Lab, assert_passed

from capturelab.power import Reading, best_reading, inventory_power
from capturelab.validate.checks import power_results

SUITE = "power"
# Seconds this suite may take on the 2-core lab machine (its suite-time check fails past it),
# and which command runs it ("lab": make lab and make lab-full; "full": make lab-full only).
# Measured: 4.3 s (lab3), 4.1 s (lab4).
SUITE_BUDGET_S = 25
SUITE_PROFILE = "lab"


def _reading(lab: Lab, node: str) -> Reading:
    def run(command: str) -> tuple[int, str]:
        out = lab.run(node, command, 30)
        return out.rc, out.stdout

    plug, declared = inventory_power(
        node, lab.var(node, "power_plug"), lab.var(node, "power_nameplate_w")
    )
    return best_reading(
        node,
        lab.groups_of(node),
        run,
        plug=plug,
        declared_w=declared,
    )


def test_power_budget(lab: Lab, record: Any, evidence: dict[str, Any]) -> None:
    nodes = sorted({n for tier in lab.tiers for n in lab.nodes(tier)})
    readings = [(_reading(lab, node), lab.groups_of(node)) for node in nodes]
    evidence["power"] = [r.to_dict() | {"groups": g} for r, g in readings]
    results = power_results(readings, lab.targets)
    record(*results)
    assert_passed(results)
