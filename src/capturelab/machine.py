"""The machine a figure was measured on: host, architecture, CPU model and core count.

Benchmarks (``bench.result``) and training runs (``train.run``) both record it, so it lives
outside either package: ``train`` must not import ``bench`` (``bench`` drives ``train``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` in ``cpuinfo``; empty where there is none (arm64, no procfs)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine() -> dict[str, Any]:
    """``{"host", "arch", "cpu", "cores"}`` of the machine this process runs on."""
    return {
        "host": platform.node(),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }
