"""Typed fields of a tier's config file: every error names the file and the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from capturelab.errors import InputError


def int_fields(data: Mapping[str, Any], where: str, minimums: Mapping[str, int]) -> dict[str, int]:
    """The integer fields present in ``data``, each at least its minimum."""
    out: dict[str, int] = {}
    for name, minimum in minimums.items():
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise InputError(
                    f"{where}: field {name} must be an integer >= {minimum}, got {value!r}"
                )
            out[name] = value
    return out


def positive_numbers(data: Mapping[str, Any], where: str, names: Iterable[str]) -> dict[str, float]:
    """The number fields present in ``data``, each above zero."""
    out: dict[str, float] = {}
    for name in names:
        if name in data:
            value = data[name]
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise InputError(f"{where}: field {name} must be a positive number, got {value!r}")
            out[name] = float(value)
    return out


def string_fields(data: Mapping[str, Any], where: str, names: Iterable[str]) -> dict[str, str]:
    """The non-empty string fields present in ``data``."""
    out: dict[str, str] = {}
    for name in names:
        if name in data:
            value = data[name]
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{where}: field {name} must be a non-empty string")
            out[name] = value.strip()
    return out
