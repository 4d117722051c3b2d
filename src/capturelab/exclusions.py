"""Excluded windows: while one has focus the collector captures nothing at all.

A window is excluded when its application name matches one of the app patterns, or its title
one of the title patterns. Patterns are regular expressions, case-insensitive and searched
anywhere in the name (as ActivityWatch's ``exclude_title`` and screenpipe's ignored windows).

Three sources add up, and none can take away what another excludes:

- the defaults below (password managers, private and incognito browser windows, lock screens),
  which always apply;
- the collector config's ``exclude`` (the operator's, from ``collector_exclude_apps`` and
  ``collector_exclude_titles``);
- the consent record's ``exclude`` (the participant's, signed with the record).

Invariants: the collector's edge filter and the dataset builder call ``Exclusions.match``. The
builder knows the defaults only (the storage tier holds neither the collector's config nor the
consent record), so a window of the defaults is dropped again by the builder should a collector
ever let it through; the config's and the record's patterns are the edge's alone.
An excluded window is told apart from a secret prompt: a secret prompt keeps key timing and
masks the keys (``SECURE_INPUT``); an excluded window keeps nothing, not even a click.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from capturelab.errors import InputError

DEFAULT_APPS = (
    # password managers
    r"keepass",
    r"1password",
    r"bitwarden",
    r"lastpass",
    r"dashlane",
    r"enpass",
    r"proton[ ._-]?pass",
    r"seahorse",
    r"kwalletmanager",
    # lock screens
    r"swaylock",
    r"hyprlock",
    r"i3lock",
    r"xsecurelock",
    r"xscreensaver",
    r"gnome-screensaver",
    r"light-locker",
    r"kscreenlocker",
    r"^x?lock$|^slock$|^physlock$",
)
DEFAULT_TITLES = (
    r"private browsing",  # Firefox: "... — Mozilla Firefox Private Browsing"
    r"\bincognito\b",  # Chrome and Chromium: "... - Google Chrome (Incognito)"
    r"\binprivate\b",  # Edge
    r"\(private\)|private window",  # Brave, Vivaldi, Safari
    r"\bpassword manager\b",
    r"\block ?screen\b|\bscreen ?lock(er)?\b",
)
FIELDS = ("apps", "titles")


@dataclass(frozen=True)
class Exclusions:
    """App and title patterns on top of the defaults (which ``match`` always applies)."""

    apps: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    _apps: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _titles: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = {
            "_apps": (*DEFAULT_APPS, *self.apps),
            "_titles": (*DEFAULT_TITLES, *self.titles),
        }
        for name, patterns in compiled.items():
            object.__setattr__(self, name, tuple(re.compile(p, re.IGNORECASE) for p in patterns))

    def match(self, app: str, title: str) -> str:
        """Why the window is excluded (the pattern, never the name), or ``""`` when it is not."""
        for pattern in self._apps:
            if pattern.search(app):
                return f"app pattern {pattern.pattern!r}"
        for pattern in self._titles:
            if pattern.search(title):
                return f"title pattern {pattern.pattern!r}"
        return ""

    def joined(self, *others: Exclusions) -> Exclusions:
        """These patterns and the others' (each kept once, in order)."""
        apps = dict.fromkeys((*self.apps, *(p for o in others for p in o.apps)))
        titles = dict.fromkeys((*self.titles, *(p for o in others for p in o.titles)))
        return Exclusions(tuple(apps), tuple(titles))

    def fields(self) -> dict[str, list[str]]:
        """The patterns as a record or config writes them (empty lists left out)."""
        return {k: list(v) for k, v in (("apps", self.apps), ("titles", self.titles)) if v}


NONE = Exclusions()


def parse_exclusions(value: Any, where: str) -> Exclusions:
    """``{apps: [...], titles: [...]}``; every error names the field and the pattern."""
    if value is None:
        return NONE
    if not isinstance(value, Mapping):
        raise InputError(f"{where} must be a mapping with apps and/or titles (lists of patterns)")
    unknown = sorted(str(k) for k in value if k not in FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} (apps, titles)")
    return Exclusions(
        _patterns(value.get("apps", []), f"{where}.apps"),
        _patterns(value.get("titles", []), f"{where}.titles"),
    )


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list of regular expressions, got {value!r}")
    for i, pattern in enumerate(value):
        if not isinstance(pattern, str) or not pattern.strip():
            raise InputError(f"{where}[{i}] must be a non-empty regular expression")
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise InputError(
                f"{where}[{i}] {pattern!r} is not a regular expression: {exc}"
            ) from None
        if compiled.search(""):
            raise InputError(
                f"{where}[{i}] {pattern!r} matches an empty name, so it would exclude every window"
            )
    return tuple(value)
