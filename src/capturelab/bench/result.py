"""The benchmark result JSON every ``capturelab bench <tier>`` writes (see the design)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from capturelab.machine import machine


def median_by(rounds: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """The round whose ``key`` is the median (odd count) or the lower middle (even count)."""
    ordered = sorted(rounds, key=lambda r: float(r[key]))
    return dict(ordered[(len(ordered) - 1) // 2])


def build_result(
    bench: str,
    *,
    reference: Mapping[str, Any],
    ours: Mapping[str, Any],
    ratio: Mapping[str, float],
    notes: list[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "bench": bench,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(["capturelab", *sys.argv[1:]]) if sys.argv else "",
        "reference": dict(reference),
        "ours": dict(ours),
        "ratio": dict(ratio),
        "notes": notes,
        **(dict(extra) if extra else {}),
    }


def write_result(result: Mapping[str, Any], out: Path | None, default_dir: Path) -> Path:
    path = out or default_dir / f"{result['bench']}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


__all__ = ["build_result", "machine", "median_by", "write_result"]
