"""Events to actions: the text a model reads and writes, one action per line.

A session's events (already consent-filtered) become a list of actions such as::

    focus firefox "Pull request [EMAIL]"
    type "looks good to me"
    key enter
    move +120 -40
    click left
    wait 2.5s

Key content appears only where the grant includes ``keys:text``; otherwise keys become their
class (``type-classes "aaaa_aa9"``: letter, space, digit). Every typed text and every window
title goes through the shared ``redact`` function here, whatever the edge did before; text typed
while a secret prompt had focus becomes ``type [PASSWORD]``; secure-input keys become
``secure-input`` (no count: a count would leak a password's length).

An excluded window (a context event flagged ``EXCLUDED`` by the edge, or one whose app or title
matches ``capturelab.exclusions``, should a collector have let it through) becomes ``excluded``;
everything up to the next context event is dropped (counted in ``excluded_events``), and keys
and buttons held across it are forgotten (the stream has no release for them).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from capturelab import keys
from capturelab.exclusions import NONE, Exclusions
from capturelab.redact import Recogniser, redact
from capturelab.schema import (
    ContextEvent,
    DeviceClass,
    Event,
    EventFlag,
    InputEvent,
    KeyClass,
    ScreenshotEvent,
)

WAIT_MIN_NS = 1_000_000_000  # a pause this long becomes a ``wait`` action
WAIT_MAX_S = 60  # longer pauses read ``wait 60s+``
MOVE_PAUSE_NS = 300_000_000  # motion separated by this much is two moves
REDACTED_KEY = "\x00"  # a key the edge already redacted, inside a text run

_CLASS_CHAR = {
    KeyClass.LETTER: "a",
    KeyClass.DIGIT: "9",
    KeyClass.PUNCTUATION: ".",
    KeyClass.SPACE: "_",
}
_KEY_NAMES = {code: name.removeprefix("KEY_").lower() for name, code in keys.KEY_CODES.items()}
_BUTTONS = {keys.BTN_LEFT: "left", keys.BTN_RIGHT: "right", keys.BTN_MIDDLE: "middle"}
# ctrl, alt or meta for each of keys' chord modifiers (left and right alike).
_CTRL_ALT_META = {
    code: _KEY_NAMES[code].removeprefix("left").removeprefix("right") for code in keys.CTRL_ALT_META
}


@dataclass(frozen=True)
class Action:
    wall_ns: int
    text: str


@dataclass
class Findings:
    """Redaction findings by kind (the dataset card reports them)."""

    by_kind: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, n: int = 1) -> None:
        self.by_kind[kind] += n


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class ActionBuilder:
    """Feed one session's events in order; ``finish`` returns its actions."""

    def __init__(
        self,
        text_allowed: Callable[[Event], bool],
        findings: Findings,
        *,
        extra_recognisers: Iterable[Recogniser] = (),
        secret_prompts: Iterable[str] = keys.DEFAULT_SECRET_PROMPTS,
        screenshot_name: Callable[[ScreenshotEvent], str] | None = None,
        exclusions: Exclusions = NONE,
    ) -> None:
        self.text_allowed = text_allowed
        self.findings = findings
        self.recognisers = tuple(extra_recognisers)
        self.secret_prompts = keys.SecretPrompts(secret_prompts)
        self.screenshot_name = screenshot_name
        self.exclusions = exclusions
        self.excluded_events = 0
        self._excluded = False
        self.actions: list[Action] = []
        self._last_ns: int | None = None
        self._secret_focus = False
        self._shift = 0
        self._caps = False
        self._mods: dict[int, str] = {}
        # Runs in progress: (start ns, content)
        self._text: tuple[int, list[str]] | None = None
        self._classes: tuple[int, list[str]] | None = None
        self._secure: int | None = None  # start ns of a secure-input run
        self._move: tuple[int, int, int, int] | None = None  # start, last ns, dx, dy
        self._scroll: tuple[int, int] | None = None  # start ns, amount
        self._pressed: dict[int, tuple[int, int, int]] = {}  # button -> (ns, dx, dy) while held

    # --- emitting -----------------------------------------------------------------------------

    def _emit(self, wall_ns: int, text: str) -> None:
        if self._last_ns is not None and wall_ns - self._last_ns >= WAIT_MIN_NS:
            gap_s = (wall_ns - self._last_ns) / 1e9
            wait = f"wait {WAIT_MAX_S}s+" if gap_s >= WAIT_MAX_S else f"wait {gap_s:.1f}s"
            self.actions.append(Action(self._last_ns, wait))
        self.actions.append(Action(wall_ns, text))
        self._last_ns = max(wall_ns, self._last_ns or wall_ns)

    def _touch(self, wall_ns: int) -> None:
        """An event that belongs to the action in progress still moves the clock on."""
        self._last_ns = max(wall_ns, self._last_ns or wall_ns)

    def _flush_text(self) -> None:
        if self._text is None:
            return
        start, chars = self._text
        self._text = None
        if not chars:
            return
        if self._secret_focus:
            self.findings.add("PASSWORD")
            self._emit(start, "type [PASSWORD]")
            return
        pieces = []
        # Runs of keys the edge already redacted keep their place, not their length.
        for piece in re.split(f"{REDACTED_KEY}+", "".join(chars)):
            cleaned, found = redact(piece, self.recognisers)
            for f in found:
                self.findings.add(f.kind)
            pieces.append(cleaned)
        cleaned = "[REDACTED]".join(pieces)
        self._emit(start, f"type {quote(cleaned)}")

    def _flush_classes(self) -> None:
        if self._classes is not None:
            start, chars = self._classes
            self._classes = None
            self._emit(start, f"type-classes {quote(''.join(chars))}")

    def _flush_secure(self) -> None:
        if self._secure is not None:
            start, self._secure = self._secure, None
            self._emit(start, "secure-input")

    def _flush_move(self) -> None:
        if self._move is not None:
            start, _last, dx, dy = self._move
            self._move = None
            if dx or dy:
                self._emit(start, f"move {dx:+d} {dy:+d}")

    def _flush_scroll(self) -> None:
        if self._scroll is not None:
            start, amount = self._scroll
            self._scroll = None
            if amount:
                self._emit(start, f"scroll {amount:+d}")

    def flush(self, keep: str = "") -> None:
        if keep != "text":
            self._flush_text()
        if keep != "classes":
            self._flush_classes()
        if keep != "secure":
            self._flush_secure()
        if keep != "move":
            self._flush_move()
        if keep != "scroll":
            self._flush_scroll()

    # --- input --------------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        if isinstance(event, ContextEvent):
            self.flush()
            self._excluded = bool(event.flags & EventFlag.EXCLUDED) or bool(
                self.exclusions.match(event.app, event.title)
            )
            if self._excluded:
                self._mods.clear()
                self._shift = 0
                self._pressed.clear()
                self._emit(event.wall_ns, "excluded")
                return
            self._secret_focus = self.secret_prompts.matches(event.app, event.title)
            title, found = redact(event.title, self.recognisers)
            app, found_app = redact(event.app, self.recognisers)
            for f in (*found, *found_app):
                self.findings.add(f.kind)
            self._emit(event.wall_ns, f"focus {app or '-'} {quote(title)}")
        elif self._excluded:
            self.excluded_events += 1
        elif isinstance(event, ScreenshotEvent):
            self.flush()
            name = self.screenshot_name(event) if self.screenshot_name else "withheld"
            self._emit(event.wall_ns, f"screenshot {name}")
        elif event.device is DeviceClass.KEYBOARD:
            if event.type == keys.EV_KEY:
                self._keyboard(event)
        elif event.type == keys.EV_KEY and event.code in _BUTTONS:
            self._button(event)
        elif event.type == keys.EV_REL:
            self._rel(event)

    def _keyboard(self, event: InputEvent) -> None:
        if event.flags & EventFlag.SECURE_INPUT:
            self._secure_key(event)
        elif event.flags & EventFlag.REDACTED:
            self._redacted_key(event)
        elif event.flags & EventFlag.KEY_CLASS or event.code >= KeyClass.UNKNOWN:
            self._class_key(event)
        elif not self._modifier(event.code, event.value):
            if event.value == 0:
                self._touch(event.wall_ns)
            else:
                self._press(event)

    def _secure_key(self, event: InputEvent) -> None:
        if event.value == 1:
            self.flush(keep="secure")
            if self._secure is None:
                self._secure = event.wall_ns
        self._touch(event.wall_ns)

    def _redacted_key(self, event: InputEvent) -> None:
        """A key the edge redacted inside typed text: its place is kept, not its length."""
        if event.value:
            self.flush(keep="text")
            if self._text is None:
                self._text = (event.wall_ns, [])
            if not self._text[1] or self._text[1][-1] != REDACTED_KEY:
                self._text[1].append(REDACTED_KEY)
        self._touch(event.wall_ns)

    def _modifier(self, code: int, value: int) -> bool:
        """Track ctrl/alt/meta, shift and caps lock; True when the key was one of them."""
        if code in _CTRL_ALT_META:
            if value:
                self._mods[code] = _CTRL_ALT_META[code]
            else:
                self._mods.pop(code, None)
        elif code in keys.SHIFTS:
            self._shift = max(self._shift + (1 if value == 1 else -1 if value == 0 else 0), 0)
        elif code == keys.K["KEY_CAPSLOCK"]:
            if value == 1:
                self._caps = not self._caps
        else:
            return False
        return True

    def _press(self, event: InputEvent) -> None:
        code, ns = event.code, event.wall_ns
        text_ok = self.text_allowed(event)
        if self._mods:
            self.flush()
            mods = "+".join(sorted(set(self._mods.values())))
            name = _KEY_NAMES.get(code, "other") if text_ok else keys.key_class(code).name.lower()
            self._emit(ns, f"key {mods}+{name}")
        elif not text_ok:
            cls = int(keys.key_class(code))
            self._class_key(
                InputEvent(event.seq, event.mono_ns, ns, event.device, 1, cls, event.value)
            )
        elif code in keys.TEXT:
            low, high = keys.TEXT[code]
            upper = bool(self._shift) != (self._caps and low.isalpha())
            self.flush(keep="text")
            if self._text is None:
                self._text = (ns, [])
            self._text[1].append(high if upper else low)
            self._touch(ns)
        elif code == keys.K["KEY_BACKSPACE"] and self._text is not None and self._text[1]:
            self._text[1].pop()
            self._touch(ns)
        else:
            self.flush()
            self._emit(ns, f"key {_KEY_NAMES.get(code, 'other')}")

    def _class_key(self, event: InputEvent) -> None:
        if event.value == 0:
            self._touch(event.wall_ns)
            return
        try:
            cls = KeyClass(event.code)
        except ValueError:
            cls = KeyClass.OTHER
        if cls is KeyClass.MODIFIER:
            return
        char = _CLASS_CHAR.get(cls)
        if char is None:
            self.flush()
            self._emit(event.wall_ns, f"key {cls.name.lower()}")
            return
        self.flush(keep="classes")
        if self._classes is None:
            self._classes = (event.wall_ns, [])
        self._classes[1].append(char)
        self._touch(event.wall_ns)

    def _button(self, event: InputEvent) -> None:
        name = _BUTTONS[event.code]
        if event.value == 1:
            self.flush()
            self._pressed[event.code] = (event.wall_ns, 0, 0)
        elif event.value == 0 and event.code in self._pressed:
            start, dx, dy = self._pressed.pop(event.code)
            self.flush()
            if dx or dy:
                self._emit(start, f"drag {name} {dx:+d} {dy:+d}")
            else:
                self._emit(start, f"click {name}")
        self._touch(event.wall_ns)

    def _rel(self, event: InputEvent) -> None:
        ns = event.wall_ns
        if event.code in (keys.REL_X, keys.REL_Y):
            dx = event.value if event.code == keys.REL_X else 0
            dy = event.value if event.code == keys.REL_Y else 0
            if self._pressed:
                for button, (start, px, py) in list(self._pressed.items()):
                    self._pressed[button] = (start, px + dx, py + dy)
                self._touch(ns)
                return
            if self._move is not None and ns - self._move[1] > MOVE_PAUSE_NS:
                self._flush_move()
            self.flush(keep="move")
            start, _last, mx, my = self._move or (ns, ns, 0, 0)
            self._move = (start, ns, mx + dx, my + dy)
            self._touch(ns)
        elif event.code == keys.REL_WHEEL:
            self.flush(keep="scroll")
            start, amount = self._scroll or (ns, 0)
            self._scroll = (start, amount + event.value)
            self._touch(ns)

    def finish(self) -> list[Action]:
        self.flush()
        for button, (start, dx, dy) in sorted(self._pressed.items()):
            verb = (
                f"drag {_BUTTONS[button]} {dx:+d} {dy:+d}"
                if dx or dy
                else f"press {_BUTTONS[button]}"
            )
            self._emit(start, verb)
        self._pressed.clear()
        return self.actions
