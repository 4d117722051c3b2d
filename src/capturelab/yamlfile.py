"""Read a YAML (or JSON) file that a person wrote: errors name the file and what it is for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from capturelab.errors import InputError


def read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: {what} is not valid YAML/JSON: {exc}") from None
    except ValueError as exc:
        # A value YAML reads as a date or time but that is none (granted: 2026-13-45).
        where = _impossible_value(text)
        raise InputError(f"{path}: {what}: {where}is an impossible date or time ({exc})") from None


def _impossible_value(text: str) -> str:
    """Which field holds the value that YAML read as a date but could not build ('' if unknown)."""
    try:
        tree = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader builds only strings)
    except yaml.YAMLError:
        return ""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        name, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{name}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, str):
            try:
                yaml.safe_load(node)
            except (ValueError, yaml.YAMLError):
                return f"field {name} {node!r} "
    return ""
