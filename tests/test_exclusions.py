"""Excluded apps and windows: the defaults, the added patterns, and the errors that name them."""

from __future__ import annotations

from typing import Any

import pytest

from capturelab.errors import InputError
from capturelab.exclusions import NONE, Exclusions, parse_exclusions


@pytest.mark.parametrize(
    ("app", "title"),
    [
        ("org.keepassxc.KeePassXC", "Passwords.kdbx - KeePassXC"),
        ("1Password", "1Password"),
        ("Bitwarden", "Vault"),
        ("firefox", "New Tab — Mozilla Firefox Private Browsing"),
        ("Google-chrome", "New Incognito tab - Google Chrome (Incognito)"),
        ("microsoft-edge", "New InPrivate tab - Microsoft Edge"),
        ("brave-browser", "New Private Tab - Brave (Private)"),
        ("swaylock", ""),
        ("i3lock", ""),
        ("xsecurelock", ""),
        ("unknown", "Lock screen"),
    ],
)
def test_the_defaults_exclude_password_managers_private_windows_and_lock_screens(
    app: str, title: str
) -> None:
    assert NONE.match(app, title)


@pytest.mark.parametrize(
    ("app", "title"),
    [
        ("xterm", "alice@lab: ~/projects"),
        ("firefox", "Docs - Mozilla Firefox"),
        ("code", "pipeline.py - Visual Studio Code"),
        ("xterm", "[sudo] password for alice"),  # a secret prompt: masked, not excluded
        ("firefox", "Privacy policy — Mozilla Firefox"),
        ("thunderbird", "Clock settings"),
    ],
)
def test_ordinary_windows_and_secret_prompts_are_not_excluded(app: str, title: str) -> None:
    assert NONE.match(app, title) == ""


def test_added_patterns_add_to_the_defaults_and_the_reason_names_no_window() -> None:
    mine = Exclusions(apps=("^signal$",), titles=("Bank of",))
    theirs = Exclusions(titles=("Health record",))
    both = mine.joined(theirs)
    assert both.match("signal", "Signal") == "app pattern '^signal$'"
    assert both.match("firefox", "Bank of Nowhere — Mozilla Firefox") == "title pattern 'Bank of'"
    assert both.match("evince", "health record 2026.pdf") == "title pattern 'Health record'"
    assert both.match("keepassxc", "") == "app pattern 'keepass'"  # the defaults stay
    assert NONE.match("signal", "Signal") == ""
    assert mine.joined(mine) == mine  # each pattern once
    assert both.fields() == {"apps": ["^signal$"], "titles": ["Bank of", "Health record"]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["signal"], r"consent\.exclude must be a mapping with apps and/or titles"),
        ({"windows": ["x"]}, r"consent\.exclude: unknown field\(s\) windows"),
        ({"apps": "signal"}, r"consent\.exclude\.apps must be a list of regular expressions"),
        ({"titles": ["ok", "(unclosed"]}, r"consent\.exclude\.titles\[1\] '\(unclosed' is not a"),
        ({"apps": [""]}, r"consent\.exclude\.apps\[0\] must be a non-empty regular expression"),
        ({"titles": ["a*"]}, r"titles\[0\] 'a\*' matches an empty name, so it would exclude every"),
    ],
)
def test_bad_patterns_are_refused_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_exclusions(value, "consent.exclude")


def test_parse_reads_both_lists_and_none_is_no_extra_pattern() -> None:
    assert parse_exclusions(None, "x") == NONE
    got = parse_exclusions({"apps": ["signal"], "titles": ["Bank"]}, "x")
    assert got == Exclusions(("signal",), ("Bank",))
