"""Validation results: one record per check, the shape every suite writes and the report reads.

``{"suite", "check", "node", "status": "pass|fail|skip|error", "value", "target", "unit",
"source": "measured|modelled", "tool", "detail"}``. ``error`` marks an environment problem (the
check could not run), which makes the run exit 2; a ``skip`` must say why in ``detail``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from capturelab.errors import InputError

Status = Literal["pass", "fail", "skip", "error"]
Source = Literal["measured", "modelled"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "skip", "error")
SOURCES: tuple[Source, ...] = ("measured", "modelled")

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ENVIRONMENT = 2


@dataclass(frozen=True)
class Result:
    suite: str
    check: str
    node: str
    status: Status
    value: Any = None
    target: Any = None
    unit: str | None = None
    source: Source = "measured"
    tool: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InputError(
                f"result {self.suite}/{self.check}: status {self.status!r} is not one of {STATUSES}"
            )
        if self.source not in SOURCES:
            raise InputError(
                f"result {self.suite}/{self.check}: source {self.source!r} is not one of {SOURCES}"
            )
        if self.status == "skip" and not self.detail:
            raise InputError(
                f"result {self.suite}/{self.check}: a skip must say why (detail is empty)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "result") -> Result:
        required = ("suite", "check", "node", "status")
        for key in required:
            if key not in data:
                raise InputError(f"{where}: field {key!r} is missing")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)


def exit_code(results: Iterable[Result]) -> int:
    """2 if any check could not run, else 1 if any failed, else 0."""
    statuses = {r.status for r in results}
    if "error" in statuses:
        return EXIT_ENVIRONMENT
    if "fail" in statuses:
        return EXIT_FAIL
    return EXIT_PASS


def write_results(path: Path, results: Iterable[Result]) -> None:
    path.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")


def read_results(path: Path) -> list[Result]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read results: {exc}") from None
    if not isinstance(raw, list):
        raise InputError(f"{path}: expected a JSON list of results")
    return [Result.from_dict(item, where=f"{path}[{i}]") for i, item in enumerate(raw)]
