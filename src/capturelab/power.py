"""Power per node from the best source available, each reading labelled measured or modelled.

Sources, best first:

1. a smart plug at the wall (the whole node): Shelly Gen2 RPC (``/rpc/Switch.GetStatus``,
   ``apower``) or Tasmota (``/cm?cmnd=Status 8``, ``StatusSNS.ENERGY.Power``), over HTTP with
   ``requests``, from the controller, only to the plug address the inventory gives;
2. the Raspberry Pi 5 PMIC (``vcgencmd pmic_read_adc``): the sum of volts x amps over its rails,
   calibrated to the wall as ``sum * 1.1451 + 0.5879`` W (the fit of PMIC sums against a USB-C
   power meter that Pi 5 monitoring tools use; the PMIC does not see its own conversion losses);
3. ``nvidia-smi`` board power plus Intel RAPL package energy (the GPU and CPU packages only: the
   rest of the node is not in it, and the detail says so);
4. RAPL alone (the CPU package);
5. else the nameplate model from the inventory (``power_nameplate_w``) or the tier's design
   figure (Pi 5 W, gateway 120 W, storage 250 W, processing 450 W): **modelled**.

Readers take a ``run(command) -> (rc, stdout)`` so the same code reads a node through Testinfra,
Ansible or locally; nothing here guesses a figure it did not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from capturelab.errors import InputError

Run = Callable[[str], tuple[int, str]]

PMIC_SCALE = 1.1451
PMIC_OFFSET_W = 0.5879
DESIGN_W = {"collectors": 5.0, "gateways": 120.0, "storage": 250.0, "processing": 450.0}
RAPL_GLOB = "/sys/class/powercap/intel-rapl:[0-9]*"
_PMIC_LINE = re.compile(r"^\s*(\S+?)_([AV])\s+(?:current|volt)\(\d+\)=([0-9.]+)[AV]\s*$")


@dataclass(frozen=True)
class Reading:
    node: str
    watts: float
    source: str  # "measured" or "modelled"
    tool: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- parsers (pure) -----------------------------------------------------------------------


def parse_pmic(output: str) -> tuple[float, int]:
    """(sum of V x I over rails with both readings, rails used) from ``pmic_read_adc``."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in output.splitlines():
        match = _PMIC_LINE.match(line)
        if match:
            rail, kind, value = match.groups()
            (amps if kind == "A" else volts)[rail] = float(value)
    rails = sorted(set(amps) & set(volts))
    if not rails:
        raise InputError("pmic_read_adc: no rail with both a current and a voltage reading")
    return sum(amps[r] * volts[r] for r in rails), len(rails)


def pmic_watts(rail_sum: float) -> float:
    return rail_sum * PMIC_SCALE + PMIC_OFFSET_W


def parse_nvidia(output: str) -> float:
    values = [float(x) for x in output.split() if x.strip() and x.strip() != "[N/A]"]
    if not values:
        raise InputError("nvidia-smi: no power.draw reading")
    return sum(values)


def rapl_joules(before: list[int], after: list[int], wraps: list[int]) -> float:
    """Joules between two samples of RAPL package counters (uJ), across a counter wrap."""
    return sum(
        (a - b if a >= b else a + wrap - b) / 1e6
        for b, a, wrap in zip(before, after, wraps, strict=True)
    )


def parse_rapl_pair(output: str, wraps: list[int], seconds: float) -> float:
    """Watts from two samples of every package counter (``before...`` then ``after...``)."""
    numbers = [int(x) for x in output.split()]
    n = len(numbers) // 2
    if n == 0 or len(numbers) != 2 * n or len(wraps) != n:
        raise InputError(f"rapl: expected two samples of {len(wraps)} counters, got {len(numbers)}")
    return rapl_joules(numbers[:n], numbers[n:], wraps) / seconds


def parse_shelly(data: Any) -> float:
    if not isinstance(data, Mapping) or not isinstance(data.get("apower"), int | float):
        raise InputError("shelly: the reply has no numeric apower (Switch.GetStatus)")
    return float(data["apower"])


def parse_tasmota(data: Any) -> float:
    try:
        power = data["StatusSNS"]["ENERGY"]["Power"]
    except (KeyError, TypeError):
        raise InputError("tasmota: the reply has no StatusSNS.ENERGY.Power (Status 8)") from None
    if isinstance(power, list):  # multi-channel plugs report one value per channel
        power = sum(power)
    if not isinstance(power, int | float):
        raise InputError("tasmota: StatusSNS.ENERGY.Power is not a number")
    return float(power)


# --- readers ------------------------------------------------------------------------------


def read_plug(node: str, plug: Mapping[str, Any], timeout: float = 5.0) -> Reading:
    """A smart plug given in the inventory: ``{type: shelly|tasmota, url: http://..., id: 0}``."""
    import requests  # noqa: PLC0415 - the lab extra; only the controller reads plugs

    kind, url = plug.get("type"), str(plug.get("url", "")).rstrip("/")
    if kind not in ("shelly", "tasmota") or not url.startswith(("http://", "https://")):
        raise InputError(
            f"{node}: power_plug needs type shelly|tasmota and an http(s) url, got {dict(plug)}"
        )
    if kind == "shelly":
        reply = requests.get(
            f"{url}/rpc/Switch.GetStatus", params={"id": int(plug.get("id", 0))}, timeout=timeout
        )
        reply.raise_for_status()
        watts = parse_shelly(reply.json())
        tool = "Shelly Gen2 RPC Switch.GetStatus (apower)"
    else:
        reply = requests.get(f"{url}/cm", params={"cmnd": "Status 8"}, timeout=timeout)
        reply.raise_for_status()
        watts = parse_tasmota(reply.json())
        tool = "Tasmota Status 8 (ENERGY.Power)"
    return Reading(node, round(watts, 2), "measured", tool, "at the wall: the whole node")


def read_pmic(node: str, run: Run) -> Reading | None:
    rc, out = run("vcgencmd pmic_read_adc")
    if rc != 0:
        return None
    rail_sum, rails = parse_pmic(out)
    return Reading(
        node,
        round(pmic_watts(rail_sum), 2),
        "measured",
        "vcgencmd pmic_read_adc",
        f"{rails} rails, sum {rail_sum:.2f} W, calibrated x{PMIC_SCALE} + {PMIC_OFFSET_W} W",
    )


def read_nvidia(run: Run) -> float | None:
    rc, out = run("nvidia-smi --query-gpu=power.draw --format=csv,noheader,nounits")
    return parse_nvidia(out) if rc == 0 else None


def read_rapl(run: Run, seconds: float = 1.0) -> float | None:
    rc, wraps_out = run(f"cat {RAPL_GLOB}/max_energy_range_uj")
    if rc != 0 or not wraps_out.split():
        return None
    wraps = [int(x) for x in wraps_out.split()]
    rc, out = run(f"cat {RAPL_GLOB}/energy_uj; sleep {seconds}; cat {RAPL_GLOB}/energy_uj")
    return parse_rapl_pair(out, wraps, seconds) if rc == 0 else None


def inventory_power(
    node: str, plug: Any, nameplate_w: Any
) -> tuple[Mapping[str, Any] | None, float | None]:
    """A host's ``power_plug`` and ``power_nameplate_w`` checked, naming the host and variable."""
    if plug is not None and not isinstance(plug, Mapping):
        raise InputError(f"{node}: power_plug must be a mapping {{type, url, id}}, got {plug!r}")
    if nameplate_w is None:
        return plug, None
    if isinstance(nameplate_w, bool) or not isinstance(nameplate_w, int | float) or nameplate_w < 0:
        raise InputError(f"{node}: power_nameplate_w must be watts (>= 0), got {nameplate_w!r}")
    return plug, float(nameplate_w)


def nameplate(node: str, tiers: list[str], declared: float | None) -> Reading:
    if declared is not None:
        return Reading(
            node, float(declared), "modelled", "nameplate", "power_nameplate_w from the inventory"
        )
    for tier in tiers:
        if tier in DESIGN_W:
            return Reading(
                node, DESIGN_W[tier], "modelled", "design figure", f"the design's {tier} budget"
            )
    raise InputError(f"{node}: no power source readable and no power_nameplate_w in the inventory")


def best_reading(
    node: str,
    tiers: list[str],
    run: Run,
    *,
    plug: Mapping[str, Any] | None = None,
    declared_w: float | None = None,
) -> Reading:
    """The best reading this node offers (see the module's order); never an unlabelled guess."""
    if plug:
        return read_plug(node, plug)
    pmic = read_pmic(node, run)
    if pmic is not None:
        return pmic
    gpu, cpu = read_nvidia(run), read_rapl(run)
    if gpu is not None:
        parts = f"GPU board {gpu:.1f} W" + (
            f" + CPU package {cpu:.1f} W" if cpu is not None else ""
        )
        return Reading(
            node,
            round(gpu + (cpu or 0.0), 2),
            "measured",
            "nvidia-smi" + (" + RAPL" if cpu is not None else ""),
            parts + "; the rest of the node (drives, fans, PSU losses) is not included",
        )
    if cpu is not None:
        return Reading(
            node,
            round(cpu, 2),
            "measured",
            "RAPL",
            "CPU package only; the rest of the node is not included",
        )
    return nameplate(node, tiers, declared_w)
