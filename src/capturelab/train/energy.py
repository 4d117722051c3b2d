"""Energy over a run, from the best readable source, labelled with where it came from.

- Intel/AMD RAPL package counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, root only),
  with their wrap-around (``max_energy_range_uj``);
- ``nvidia-smi`` board power, sampled once a second and integrated (trapezoid) for each GPU.

Neither readable (a VM, a container without the sysfs tree): the result says so, and nothing
is guessed.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capturelab.power import rapl_joules

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class _Zone:
    energy: Path
    wrap: int


def _rapl_zones(root: Path = POWERCAP) -> list[_Zone]:
    zones = []
    for zone in sorted(root.glob("intel-rapl:[0-9]*")):
        if ":" in zone.name.split("intel-rapl:", 1)[1]:
            continue  # sub-zones (core, uncore) are inside the package already
        energy, wrap = zone / "energy_uj", zone / "max_energy_range_uj"
        try:
            int(energy.read_text())
            zones.append(_Zone(energy, int(wrap.read_text())))
        except (OSError, ValueError):
            continue
    return zones


class EnergyMeter:
    """``start()``, the work, ``stop()`` -> {"joules", "source", "detail"} or why none."""

    def __init__(self, powercap: Path = POWERCAP, nvidia_smi: str | None = None) -> None:
        self.zones = _rapl_zones(powercap)
        self.nvidia_smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
        self._start: list[int] = []
        self._t0 = 0.0
        self._gpu_joules = 0.0
        self._gpu_samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _gpu_watts(self) -> float | None:
        if not self.nvidia_smi:
            return None
        argv = [self.nvidia_smi, "--query-gpu=power.draw", "--format=csv,noheader,nounits"]
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv, the tool found on PATH
                argv,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
            return sum(float(x) for x in out.split() if x.strip())
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    def _sample_gpu(self) -> None:
        last_t, last_w = time.monotonic(), self._gpu_watts()
        while last_w is not None and not self._stop.wait(1.0):
            t, w = time.monotonic(), self._gpu_watts()
            if w is None:
                break
            self._gpu_joules += (w + last_w) / 2 * (t - last_t)
            self._gpu_samples += 1
            last_t, last_w = t, w

    def start(self) -> None:
        self._start = [int(z.energy.read_text()) for z in self.zones]
        self._t0 = time.monotonic()
        if self.nvidia_smi:
            self._thread = threading.Thread(target=self._sample_gpu, daemon=True)
            self._thread.start()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        result: dict[str, Any] = {"wall_s": round(wall, 3), "joules": None, "parts": {}}
        if self.zones:
            after = [int(z.energy.read_text()) for z in self.zones]
            joules = rapl_joules(self._start, after, [z.wrap for z in self.zones])
            result["parts"]["cpu_package_rapl"] = round(joules, 3)
        if self._gpu_samples:
            result["parts"]["gpu_nvidia_smi"] = round(self._gpu_joules, 3)
        if result["parts"]:
            result["joules"] = round(sum(result["parts"].values()), 3)
            result["source"] = "measured: " + ", ".join(sorted(result["parts"]))
        else:
            result["source"] = "unavailable"
            result["detail"] = (
                "no RAPL counters under /sys/class/powercap and no nvidia-smi readings on this "
                "machine (a VM or container without them): energy not reported"
            )
        return result
