"""Linux input codes, key classes, typed text and secret prompts: what every tier reads keys by.

The collector (edge filter, synth) and the dataset builder (actions) both import this module, so
a key is classed, spelled and masked the same way on the collector and in the dataset.

Key codes: their class (what ``keys:timing`` keeps) and their text on a US layout.

The class table is the reduction the consent scope promises: under ``keys:timing`` a key event
leaves the process as its class only (letter, digit, punctuation, space...). The text table is
what the edge scrubber uses to rebuild typed text under ``keys:text``, so the shared redaction
function can find a card number or a password typed after a label. It assumes a US layout; on
another layout the rebuilt text is wrong for some punctuation, which only lowers what the
scrubber can recognise (the secure-input mode does not depend on it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from capturelab.errors import InputError
from capturelab.schema import KeyClass

# Event types and the codes the readers test, from linux/input-event-codes.h.
EV_SYN = 0x00
EV_KEY = 0x01
EV_REL = 0x02
EV_ABS = 0x03
EV_MSC = 0x04
EV_LED = 0x11
EV_REP = 0x14
EV_MAX = 0x1F
KEY_MAX = 0x2FF
SYN_REPORT = 0
SYN_DROPPED = 3
REL_X = 0x00
REL_Y = 0x01
REL_HWHEEL = 0x06
REL_WHEEL = 0x08
ABS_X = 0x00
ABS_Y = 0x01
BTN_MOUSE = 0x110
BTN_LEFT = 0x110
BTN_RIGHT = 0x111
BTN_MIDDLE = 0x112
BTN_TASK = 0x117  # the last mouse button (BTN_MOUSE..BTN_TASK)
BTN_TOUCH = 0x14A
KEY_A = 30
KEY_Z = 44
KEY_SPACE = 57

# name -> code, from linux/input-event-codes.h (the subset a person types with).
KEY_CODES: dict[str, int] = {
    "KEY_ESC": 1, "KEY_1": 2, "KEY_2": 3, "KEY_3": 4, "KEY_4": 5, "KEY_5": 6, "KEY_6": 7,
    "KEY_7": 8, "KEY_8": 9, "KEY_9": 10, "KEY_0": 11, "KEY_MINUS": 12, "KEY_EQUAL": 13,
    "KEY_BACKSPACE": 14, "KEY_TAB": 15, "KEY_Q": 16, "KEY_W": 17, "KEY_E": 18, "KEY_R": 19,
    "KEY_T": 20, "KEY_Y": 21, "KEY_U": 22, "KEY_I": 23, "KEY_O": 24, "KEY_P": 25,
    "KEY_LEFTBRACE": 26, "KEY_RIGHTBRACE": 27, "KEY_ENTER": 28, "KEY_LEFTCTRL": 29,
    "KEY_A": 30, "KEY_S": 31, "KEY_D": 32, "KEY_F": 33, "KEY_G": 34, "KEY_H": 35, "KEY_J": 36,
    "KEY_K": 37, "KEY_L": 38, "KEY_SEMICOLON": 39, "KEY_APOSTROPHE": 40, "KEY_GRAVE": 41,
    "KEY_LEFTSHIFT": 42, "KEY_BACKSLASH": 43, "KEY_Z": 44, "KEY_X": 45, "KEY_C": 46,
    "KEY_V": 47, "KEY_B": 48, "KEY_N": 49, "KEY_M": 50, "KEY_COMMA": 51, "KEY_DOT": 52,
    "KEY_SLASH": 53, "KEY_RIGHTSHIFT": 54, "KEY_KPASTERISK": 55, "KEY_LEFTALT": 56,
    "KEY_SPACE": 57, "KEY_CAPSLOCK": 58, "KEY_F1": 59, "KEY_F2": 60, "KEY_F3": 61,
    "KEY_F4": 62, "KEY_F5": 63, "KEY_F6": 64, "KEY_F7": 65, "KEY_F8": 66, "KEY_F9": 67,
    "KEY_F10": 68, "KEY_NUMLOCK": 69, "KEY_SCROLLLOCK": 70, "KEY_KP7": 71, "KEY_KP8": 72,
    "KEY_KP9": 73, "KEY_KPMINUS": 74, "KEY_KP4": 75, "KEY_KP5": 76, "KEY_KP6": 77,
    "KEY_KPPLUS": 78, "KEY_KP1": 79, "KEY_KP2": 80, "KEY_KP3": 81, "KEY_KP0": 82,
    "KEY_KPDOT": 83, "KEY_102ND": 86, "KEY_F11": 87, "KEY_F12": 88, "KEY_KPENTER": 96,
    "KEY_RIGHTCTRL": 97, "KEY_KPSLASH": 98, "KEY_SYSRQ": 99, "KEY_RIGHTALT": 100,
    "KEY_HOME": 102, "KEY_UP": 103, "KEY_PAGEUP": 104, "KEY_LEFT": 105, "KEY_RIGHT": 106,
    "KEY_END": 107, "KEY_DOWN": 108, "KEY_PAGEDOWN": 109, "KEY_INSERT": 110,
    "KEY_DELETE": 111, "KEY_PAUSE": 119, "KEY_LEFTMETA": 125, "KEY_RIGHTMETA": 126,
    "KEY_COMPOSE": 127,
}  # fmt: skip
K = KEY_CODES

# US layout: code -> (unshifted, shifted).
_ROWS = {
    "1234567890": range(2, 12),
    "qwertyuiop": range(16, 26),
    "asdfghjkl": range(30, 39),
    "zxcvbnm": range(44, 51),
}
TEXT: dict[int, tuple[str, str]] = {}
for _chars, _codes in _ROWS.items():
    for _ch, _code in zip(_chars, _codes, strict=True):
        TEXT[_code] = (_ch, _ch.upper())
for _i, _shifted in enumerate(")!@#$%^&*("):
    TEXT[K[f"KEY_{_i}"]] = (str(_i), _shifted)
TEXT.update(
    {
        K["KEY_MINUS"]: ("-", "_"),
        K["KEY_EQUAL"]: ("=", "+"),
        K["KEY_LEFTBRACE"]: ("[", "{"),
        K["KEY_RIGHTBRACE"]: ("]", "}"),
        K["KEY_SEMICOLON"]: (";", ":"),
        K["KEY_APOSTROPHE"]: ("'", '"'),
        K["KEY_GRAVE"]: ("`", "~"),
        K["KEY_BACKSLASH"]: ("\\", "|"),
        K["KEY_COMMA"]: (",", "<"),
        K["KEY_DOT"]: (".", ">"),
        K["KEY_SLASH"]: ("/", "?"),
        K["KEY_SPACE"]: (" ", " "),
        K["KEY_KPASTERISK"]: ("*", "*"),
        K["KEY_KPMINUS"]: ("-", "-"),
        K["KEY_KPPLUS"]: ("+", "+"),
        K["KEY_KPDOT"]: (".", "."),
        K["KEY_KPSLASH"]: ("/", "/"),
        K["KEY_102ND"]: ("<", ">"),
    }
)
for _n, _kp in enumerate((82, 79, 80, 81, 75, 76, 77, 71, 72, 73)):
    TEXT[_kp] = (str(_n), str(_n))
CHAR_TO_KEY: dict[str, tuple[int, bool]] = {}
for _code, (_plain, _shift) in sorted(TEXT.items(), reverse=True):
    CHAR_TO_KEY[_plain] = (_code, False)
    if _shift != _plain:
        CHAR_TO_KEY[_shift] = (_code, True)
CHAR_TO_KEY[" "] = (K["KEY_SPACE"], False)

SHIFTS = frozenset({K["KEY_LEFTSHIFT"], K["KEY_RIGHTSHIFT"]})
CTRL_ALT_META = frozenset(
    K[n]
    for n in (
        "KEY_LEFTCTRL",
        "KEY_RIGHTCTRL",
        "KEY_LEFTALT",
        "KEY_RIGHTALT",
        "KEY_LEFTMETA",
        "KEY_RIGHTMETA",
    )
)
MODIFIERS = SHIFTS | CTRL_ALT_META | {K["KEY_CAPSLOCK"], K["KEY_NUMLOCK"], K["KEY_COMPOSE"]}
NAVIGATION = frozenset(
    K[n]
    for n in (
        "KEY_HOME",
        "KEY_UP",
        "KEY_PAGEUP",
        "KEY_LEFT",
        "KEY_RIGHT",
        "KEY_END",
        "KEY_DOWN",
        "KEY_PAGEDOWN",
        "KEY_INSERT",
        "KEY_DELETE",
    )
)
FUNCTION = frozenset(
    [K["KEY_ESC"], K["KEY_F11"], K["KEY_F12"], K["KEY_SYSRQ"], K["KEY_PAUSE"]]
).union(range(K["KEY_F1"], K["KEY_F10"] + 1))
ENTERS = frozenset({K["KEY_ENTER"], K["KEY_KPENTER"]})


_SPECIAL: tuple[tuple[frozenset[int], KeyClass], ...] = (
    (ENTERS, KeyClass.ENTER),
    (frozenset({K["KEY_BACKSPACE"]}), KeyClass.BACKSPACE),
    (frozenset({K["KEY_TAB"]}), KeyClass.TAB),
    (MODIFIERS, KeyClass.MODIFIER),
    (NAVIGATION, KeyClass.NAVIGATION),
    (FUNCTION, KeyClass.FUNCTION),
)


def key_class(code: int) -> KeyClass:
    """The class that replaces a key code under ``keys:timing``."""
    if code in TEXT:
        ch = TEXT[code][0]
        if ch.isalpha():
            return KeyClass.LETTER
        if ch.isdigit():
            return KeyClass.DIGIT
        return KeyClass.SPACE if ch == " " else KeyClass.PUNCTUATION
    for codes, cls in _SPECIAL:
        if code in codes:
            return cls
    return KeyClass.OTHER


CLASS_OF: dict[int, int] = {code: int(key_class(code)) for code in range(0x300)}


def parse_chord(names: list[str], where: str) -> frozenset[int]:
    """Key names (``KEY_LEFTCTRL``) to codes; an unknown name is an error naming it."""
    if len(names) < 2:
        raise InputError(f"{where} must name at least two keys, got {names!r}")
    codes = set()
    for i, name in enumerate(names):
        if name not in KEY_CODES:
            raise InputError(f"{where}[{i}] {name!r} is not a key name such as KEY_LEFTCTRL")
        codes.add(KEY_CODES[name])
    return frozenset(codes)


# Focused windows (app and title, case-insensitive) that ask for a secret: while one has focus
# the collector switches secure input on and the dataset builder writes ``type [PASSWORD]``.
DEFAULT_SECRET_PROMPTS = (
    r"\bsudo\b",
    r"\bssh\b.*(password|passphrase)",
    r"(password|passphrase) for\b",
    r"\bgpg\b|\bpinentry",
    r"\bpasswd\b",
    r"keepass",
    r"1password",
    r"bitwarden",
    r"\bpass(word)?[ -]?(manager|safe)\b",
    r"polkit|authentication required",
)


class SecretPrompts:
    """The secret-prompt rule: a focused window whose ``"<app> <title>"`` matches any pattern.

    Invariant: the collector and the dataset builder call this one method, so a window that
    masks keys on the collector is the window whose typing the dataset calls a password.
    Patterns were checked where they were read (``collector.config``); a bad one raises
    ``re.error`` here.
    """

    def __init__(self, patterns: Iterable[str] = DEFAULT_SECRET_PROMPTS) -> None:
        self.patterns = tuple(re.compile(p, re.I) for p in patterns)

    def matches(self, app: str, title: str) -> bool:
        text = f"{app} {title}"
        return any(p.search(text) for p in self.patterns)
