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
