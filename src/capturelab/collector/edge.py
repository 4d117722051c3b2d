"""Edge policy: what of an input event may leave the collector process, decided before the spool.

``EdgeFilter`` applies the participant's consent scopes and the secure-input mode to every raw
event and hands out only what may be kept:

- devices without a granted scope (``mouse`` for mice and touchpads) produce nothing;
- keyboards produce key and SYN events only (``EV_MSC`` scan codes carry the key and are
  dropped, as are LED and repeat-rate events);
- under ``keys:timing`` (the default) a key code becomes its ``KeyClass``, flag ``KEY_CLASS``;
- in secure-input mode (the pause chord, ``capturelab collector pause``, or a focused secret
  prompt: sudo, ssh, gpg, passwd, pinentry, password managers) a key code becomes
  ``KeyClass.UNKNOWN``, flag ``SECURE_INPUT``, under any scope;
- under ``keys:text`` key events wait in a per-keyboard buffer until a boundary (Enter, Tab, a
  focus change, an idle pause, a full buffer). The buffer's text is rebuilt (US layout, shift,
  caps lock, backspace) and run through the shared redaction function; every key that typed a
  character inside a finding, its release, and a deleted character that stood inside or at the
  end of one, leave as their class with flag ``REDACTED``. A short tail of the previous text
  is kept so that a label typed before a boundary (``password: ``) still marks what follows;
- context events (focus changes) carry app and title through the same redaction function;
- while an excluded window has focus (``capturelab.exclusions``: password managers, private
  browser windows, lock screens by default, plus the config's and the consent record's
  patterns) or a lock screen runs, nothing is handed out at all: no key, button, motion or
  screenshot, only one context event flagged ``EXCLUDED`` with empty app and title. A key or
  button held when the span starts is released there (a release flagged ``EXCLUDED``; its real
  release is withheld), and one pressed in the span stays withheld until its release, even after
  the span ended. What was withheld is counted (``excluded_*``). When the span ends the focused
  window is reported again (empty when none is known), so a reader knows where input resumed;
- with a context source configured, a new filter withholds everything until the first focus
  report (``focus unknown``), unless it takes over from the filter before it (``inherit``).

Events are handed out in the order they will be numbered; a buffered key keeps its timestamps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from capturelab import keys
from capturelab.collector.evdev import Raw
from capturelab.consent import Scope
from capturelab.exclusions import NONE, Exclusions
from capturelab.keys import EV_KEY, EV_SYN
from capturelab.redact import Recogniser, find, redact
from capturelab.schema import (
    MAX_IMAGE_BYTES,
    ContextEvent,
    DeviceClass,
    Event,
    EventFlag,
    ImageFormat,
    InputEvent,
    KeyClass,
    ScreenshotEvent,
)

# mono_ns, wall_ns, device, type, code, value, flags
Out = tuple[int, int, DeviceClass, int, int, int, int]
# A context change: mono_ns, wall_ns, app, title, flags
ContextOut = tuple[int, int, str, str, int]
# A screenshot: mono_ns, wall_ns, image, format, flags (told from ContextOut by its bytes)
ShotOut = tuple[int, int, bytes, ImageFormat, int]
Item = Out | ContextOut | ShotOut

DEFAULT_PAUSE_CHORD = ("KEY_LEFTCTRL", "KEY_LEFTALT", "KEY_PAUSE")
# Why everything is withheld (the status's "excluded")
WINDOW, LOCK_SCREEN, FOCUS_UNKNOWN = "window", "lock screen", "focus unknown"
TAIL_CHARS = 64
_REDACTED_KEY = int(EventFlag.KEY_CLASS | EventFlag.REDACTED)
KEYBOARD = DeviceClass.KEYBOARD
UNKNOWN = int(KeyClass.UNKNOWN)
SECURE = int(EventFlag.SECURE_INPUT)
CLASS_ONLY = int(EventFlag.KEY_CLASS)


@dataclass
class _TextBuffer:
    """Keyboard events waiting for a boundary, with the text they typed."""

    entries: list[list[int]] = field(default_factory=list)
    chars: list[tuple[str, int]] = field(default_factory=list)
    deleted: list[tuple[int, int]] = field(default_factory=list)  # (position, entry index)
    press_of: dict[int, int] = field(default_factory=dict)
    releases: list[tuple[int, int]] = field(default_factory=list)  # (release, press) entries
    last_arrival: int = 0  # monotonic clock when the last key arrived (not its timestamp)


@dataclass
class EdgeCounters:
    kept: int = 0
    dropped_by_scope: int = 0
    reduced_to_class: int = 0
    secure_input: int = 0
    redacted_keys: int = 0
    redacted_titles: int = 0
    screenshots: int = 0
    screenshots_withheld: int = 0
    excluded_spans: int = 0  # spans that began while capturing (a window, a lock, a lost source)
    excluded_keys: int = 0  # key presses withheld in them
    excluded_clicks: int = 0  # mouse button presses withheld in them
    excluded_other: int = 0  # every other input event withheld (releases, motion, wheel, touch)
    screenshots_excluded: int = 0
    findings: dict[str, int] = field(default_factory=dict)  # redaction findings by kind

    def found(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            self.findings[kind] = self.findings.get(kind, 0) + 1


class EdgeFilter:
    def __init__(
        self,
        scopes: Iterable[Scope],
        *,
        pause_chord: frozenset[int] | None = None,
        secret_prompts: Iterable[str] = keys.DEFAULT_SECRET_PROMPTS,
        idle_flush_ns: int = 3_000_000_000,
        max_buffer_events: int = 4096,
        extra_recognisers: Iterable[Recogniser] = (),
        exclusions: Exclusions = NONE,
        watch_focus: bool = False,
    ) -> None:
        self.scopes = frozenset(scopes)
        self.exclusions = exclusions
        self.extra_recognisers = tuple(extra_recognisers)  # e.g. person names (capturelab.names)
        self.pause_chord = pause_chord or keys.parse_chord(list(DEFAULT_PAUSE_CHORD), "pause_chord")
        self.secret_prompts = keys.SecretPrompts(secret_prompts)
        self.idle_flush_ns = idle_flush_ns
        self.max_buffer_events = max_buffer_events
        self.out: list[Item] = []
        self.counters = EdgeCounters()
        self.secure_reasons: set[str] = set()
        self._pressed: set[int] = set()
        self._shift = 0
        self._caps = False
        self._ctrl_alt_meta = 0
        self._buffer = _TextBuffer()
        self._tail = ""
        # Keys whose press left masked (secure input, redacted): their repeats and release
        # leave masked the same way, even after the mode or the buffer changed.
        self._masked_down: dict[int, tuple[int, int]] = {}
        # "window", "lock screen", "focus unknown" (a context source that has not spoken yet)
        self.excluded_reasons: set[str] = {FOCUS_UNKNOWN} if watch_focus else set()
        self._excluded_down: set[tuple[DeviceClass, int]] = set()  # pressed while excluded
        self._handed_down: set[tuple[DeviceClass, int]] = set()  # pressed, handed out, held
        self._focus: tuple[str, str] | None = None  # the last focused window reported

    # --- modes ------------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """Events handed out but not sealed yet, or keys waiting in the text buffer."""
        return bool(self.out or self._buffer.entries)

    @property
    def secure(self) -> bool:
        return bool(self.secure_reasons)

    def set_secure(self, reason: str, on: bool) -> None:
        if on and reason not in self.secure_reasons:
            self.flush()  # what was typed before the mode changed is judged as before
            self.secure_reasons.add(reason)
        elif not on and reason in self.secure_reasons:
            self.secure_reasons.discard(reason)

    def is_secret_prompt(self, app: str, title: str) -> bool:
        return self.secret_prompts.matches(app, title)

    @property
    def excluded(self) -> bool:
        return bool(self.excluded_reasons)

    def inherit(self, old: EdgeFilter) -> None:
        """Take over from the filter before this one (a consent re-scoped): what is held, masked,
        paused or excluded stays so, the counters go on, and the last focus is judged again
        under this filter's exclusions. ``old`` was flushed."""
        self.secure_reasons = set(old.secure_reasons)
        self.excluded_reasons = set(old.excluded_reasons)
        self._excluded_down = set(old._excluded_down)
        self._handed_down = set(old._handed_down)
        self._masked_down = dict(old._masked_down)
        self._pressed = set(old._pressed)
        self._shift, self._caps, self._ctrl_alt_meta = old._shift, old._caps, old._ctrl_alt_meta
        self.counters = old.counters
        if old._focus is not None:
            self.context(*old._focus, time.monotonic_ns(), time.time_ns())

    def set_excluded(self, reason: str, on: bool, mono_ns: int, wall_ns: int) -> None:
        """Start or end one reason to withhold everything; marks the change in the stream."""
        was = self.excluded
        if on:
            self.excluded_reasons.add(reason)
        else:
            self.excluded_reasons.discard(reason)
        self._changed(was, mono_ns, wall_ns)

    def _changed(self, was: bool, mono_ns: int, wall_ns: int) -> bool:
        """Mark a change of the excluded state in the stream; False when there was none."""
        if self.excluded == was:
            return False
        if self.excluded:
            self.flush()  # what was typed before is judged and handed out as before
            self._tail = ""
            self.counters.excluded_spans += 1
            self._release_held(mono_ns, wall_ns)
            if Scope.CONTEXT in self.scopes:
                self.out.append((mono_ns, wall_ns, "", "", int(EventFlag.EXCLUDED)))
        else:
            self._context_event(*(self._focus or ("", "")), mono_ns, wall_ns)
        return True

    def _release_held(self, mono_ns: int, wall_ns: int) -> None:
        """At a span's start, a release for every key and button whose press was handed out,
        so no reader sees one held through the span; its real release is withheld."""
        for device, code in sorted(self._handed_down):
            if device is not DeviceClass.KEYBOARD and Scope.MOUSE not in self.scopes:
                continue  # a button of a consent before a re-scope that dropped the mouse
            out_code, flags = code, 0
            if device is DeviceClass.KEYBOARD:
                masked = self._masked_down.pop(code, None)
                if masked is not None:
                    out_code, flags = masked
                elif Scope.KEYS_TEXT not in self.scopes:
                    out_code, flags = keys.CLASS_OF.get(code, KeyClass.OTHER), CLASS_ONLY
            self.counters.kept += 1
            flags |= int(EventFlag.EXCLUDED)
            self.out.append((mono_ns, wall_ns, device, EV_KEY, out_code, 0, flags))
            self._excluded_down.add((device, code))
        self._handed_down.clear()

    def _withheld(self, device: DeviceClass, etype: int, code: int, value: int) -> bool:
        """Excluded: count and drop. A key or button pressed while excluded is dropped up to
        its release, so no part of it shows after the exclusion ends; pressed again after the
        span (its release was lost: the devices were closed), it is a new press."""
        down = (device, code)
        held_over = etype == EV_KEY and down in self._excluded_down
        if held_over and value == 0:
            self._excluded_down.discard(down)
        elif held_over and not self.excluded and value == 1:
            self._excluded_down.discard(down)
            return False
        elif not held_over and not self.excluded:
            return False
        elif etype == EV_KEY and value == 1:  # a press in the span
            self._excluded_down.add(down)
            self._masked_down.pop(code, None)
            if device is DeviceClass.KEYBOARD:
                self.counters.excluded_keys += 1
            elif device is DeviceClass.MOUSE and keys.BTN_MOUSE <= code <= keys.BTN_TASK:
                self.counters.excluded_clicks += 1
            else:
                self.counters.excluded_other += 1  # a touch, a tool, another device's key
            return True
        elif etype == EV_KEY and value == 0 and device is DeviceClass.KEYBOARD:
            self._masked_down.pop(code, None)
        self.counters.excluded_other += 1
        return True

    # --- input ------------------------------------------------------------------------------

    def process(self, device: DeviceClass, raw: Raw, mono_ns: int) -> None:
        sec, usec, etype, code, value = raw
        wall_ns = sec * 1_000_000_000 + usec * 1000
        chord = False
        if device is DeviceClass.KEYBOARD and etype == EV_KEY:
            self._track_modifiers(code, value)  # withheld or not, the state stays right
            chord = value == 1 and code in self.pause_chord and self.pause_chord <= self._pressed
        if self._withheld(device, etype, code, value):
            pass
        elif device is DeviceClass.KEYBOARD:
            if etype == EV_KEY:
                self._held((device, code), value)
                self._key(wall_ns, mono_ns, code, value)
            elif etype == EV_SYN:
                self._keyboard_event(
                    (mono_ns, wall_ns, DeviceClass.KEYBOARD, etype, code, value, 0)
                )
            else:
                self.counters.dropped_by_scope += 1
        elif device is DeviceClass.OTHER or Scope.MOUSE not in self.scopes:
            self.counters.dropped_by_scope += 1
        else:
            if etype == EV_KEY:
                self._held((device, code), value)
            self.counters.kept += 1
            self.out.append((mono_ns, wall_ns, device, etype, code, value, 0))
        if chord:  # the pause chord works in an excluded window too
            self.set_secure("chord", "chord" not in self.secure_reasons)

    def _held(self, down: tuple[DeviceClass, int], value: int) -> None:
        if value == 1:
            self._handed_down.add(down)
        elif value == 0:
            self._handed_down.discard(down)

    def _track_modifiers(self, code: int, value: int) -> None:
        if value == 1:
            self._pressed.add(code)
        elif value == 0:
            self._pressed.discard(code)
        if code in keys.SHIFTS and value != 2:
            self._shift += 1 if value == 1 else -1
            self._shift = max(self._shift, 0)
        elif code in keys.CTRL_ALT_META and value != 2:
            self._ctrl_alt_meta += 1 if value == 1 else -1
            self._ctrl_alt_meta = max(self._ctrl_alt_meta, 0)
        elif code == keys.K["KEY_CAPSLOCK"] and value == 1:
            self._caps = not self._caps

    def _key(self, wall_ns: int, mono_ns: int, code: int, value: int) -> None:
        masked = self._masked_down.get(code)
        if masked is not None and value != 1:
            if value == 0:
                del self._masked_down[code]
            self._keyboard_event(
                (mono_ns, wall_ns, DeviceClass.KEYBOARD, EV_KEY, masked[0], value, masked[1])
            )
        elif self.secure:
            self._masked_down[code] = (KeyClass.UNKNOWN, EventFlag.SECURE_INPUT)
            self.counters.secure_input += 1
            self._keyboard_event((mono_ns, wall_ns, KEYBOARD, EV_KEY, UNKNOWN, value, SECURE))
        elif Scope.KEYS_TEXT not in self.scopes:
            self.counters.reduced_to_class += 1
            cls = keys.CLASS_OF.get(code, KeyClass.OTHER)
            self._keyboard_event((mono_ns, wall_ns, KEYBOARD, EV_KEY, cls, value, CLASS_ONLY))
        else:
            self._buffered_key(wall_ns, mono_ns, code, value)

    def _keyboard_event(self, event: Out) -> None:
        """Out now, or behind the buffered keys (order is kept)."""
        if self._buffer.entries:
            self._buffer.entries.append(list(event))
            return
        self.counters.kept += 1
        self.out.append(event)

    def _buffered_key(self, wall_ns: int, mono_ns: int, code: int, value: int) -> None:
        buf = self._buffer
        index = len(buf.entries)
        buf.entries.append([mono_ns, wall_ns, DeviceClass.KEYBOARD, EV_KEY, code, value, 0])
        buf.last_arrival = time.monotonic_ns()
        if value == 0:
            press = buf.press_of.pop(code, None)
            if press is not None:
                buf.releases.append((index, press))
            return
        buf.press_of[code] = index
        if code in keys.TEXT and not self._ctrl_alt_meta:
            plain, shifted = keys.TEXT[code]
            upper = bool(self._shift) != (self._caps and plain.isalpha())
            buf.chars.append((shifted if upper else plain, index))
        elif code == keys.K["KEY_BACKSPACE"] and buf.chars:
            _, typed = buf.chars.pop()
            buf.deleted.append((len(buf.chars), typed))
        boundary = code in keys.ENTERS or code == keys.K["KEY_TAB"]
        if boundary:
            buf.chars.append(("\t" if code == keys.K["KEY_TAB"] else "\n", index))
        if boundary or len(buf.entries) >= self.max_buffer_events:
            self.flush()

    def tick(self, mono_ns: int) -> None:
        """Flush the text buffer after an idle pause (call this from the daemon's loop)."""
        if self._buffer.entries and mono_ns - self._buffer.last_arrival >= self.idle_flush_ns:
            self.flush()

    def flush(self) -> None:
        """Judge the buffered text now and hand its events out, redacted where needed."""
        buf = self._buffer
        if not buf.entries:
            return
        text = "".join(ch for ch, _ in buf.chars)
        tail = self._tail
        redacted_entries: set[int] = set()
        for finding in find(tail + text, self.extra_recognisers):
            start, end = max(finding.start - len(tail), 0), finding.end - len(tail)
            if end <= 0:
                continue
            self.counters.found([finding.kind])
            redacted_entries.update(buf.chars[i][1] for i in range(start, min(end, len(buf.chars))))
            redacted_entries.update(i for pos, i in buf.deleted if start <= pos <= end)
        redacted_entries.update(rel for rel, press in buf.releases if press in redacted_entries)
        for code, press in buf.press_of.items():  # still held at the boundary
            if press in redacted_entries:
                self._masked_down[code] = (keys.CLASS_OF.get(code, KeyClass.OTHER), _REDACTED_KEY)
        for i, entry in enumerate(buf.entries):
            if i in redacted_entries:
                entry[4] = keys.CLASS_OF.get(entry[4], KeyClass.OTHER)
                entry[6] = _REDACTED_KEY
                self.counters.redacted_keys += 1
            self.counters.kept += 1
            self.out.append(
                (entry[0], entry[1], DeviceClass.KEYBOARD, entry[3], entry[4], entry[5], entry[6])
            )
        self._tail = (tail + text)[-TAIL_CHARS:]
        self._buffer = _TextBuffer(press_of={})

    # --- screenshots ------------------------------------------------------------------------

    def wants_screenshot(self) -> bool:
        """Granted, no excluded window has focus and nothing holds secure input."""
        return not self.screenshot_refusal()

    def screenshot_refusal(self) -> str:
        """Why no screenshot may be taken now, or ``""`` when one may."""
        if WINDOW in self.excluded_reasons:
            return "an excluded window has focus"
        if self.excluded:
            return (
                "the screen is locked"
                if LOCK_SCREEN in self.excluded_reasons
                else ("the focused window is not known yet")
            )
        if self.secure:
            return "secure input"
        if Scope.SCREENSHOTS not in self.scopes:
            return "the consent does not grant screenshots"
        return ""

    def screenshot(self, image: bytes, fmt: ImageFormat, mono_ns: int, wall_ns: int) -> None:
        if self.excluded:
            self.counters.screenshots_excluded += 1
            return
        if not self.wants_screenshot() or len(image) > MAX_IMAGE_BYTES:
            self.counters.screenshots_withheld += 1
            return
        self.counters.screenshots += 1
        self.out.append((mono_ns, wall_ns, image, fmt, 0))

    # --- context ----------------------------------------------------------------------------

    def context(self, app: str, title: str, mono_ns: int, wall_ns: int) -> None:
        """The focused window changed: a boundary for typed text, maybe a secret prompt, maybe
        an excluded window (then only the ``EXCLUDED`` mark leaves, never its app or title)."""
        self.flush()
        self._tail = ""
        self._focus = (app, title)
        self.set_secure("prompt", self.is_secret_prompt(app, title))
        was = self.excluded
        self.excluded_reasons.discard(FOCUS_UNKNOWN)
        if self.exclusions.match(app, title):
            self.excluded_reasons.add(WINDOW)
        else:
            self.excluded_reasons.discard(WINDOW)
        if not self._changed(was, mono_ns, wall_ns) and not self.excluded:
            self._context_event(app, title, mono_ns, wall_ns)

    def _context_event(self, app: str, title: str, mono_ns: int, wall_ns: int) -> None:
        if Scope.CONTEXT not in self.scopes:
            return
        clean_app, app_findings = redact(app, self.extra_recognisers)
        clean_title, title_findings = redact(title, self.extra_recognisers)
        flags = 0
        if app_findings or title_findings:
            flags = int(EventFlag.REDACTED)
            self.counters.redacted_titles += 1
            self.counters.found(f.kind for f in (*app_findings, *title_findings))
        self.out.append((mono_ns, wall_ns, clean_app, clean_title, flags))


def number(items: list[Item], first_seq: int) -> list[Event]:
    """What the filter handed out, as schema events numbered from ``first_seq`` (in order)."""
    events: list[Event] = []
    seq = first_seq
    for item in items:
        if len(item) == 7:
            mono, wall, device, etype, code, value, flags = item
            events.append(InputEvent(seq, mono, wall, device, etype, code, value, EventFlag(flags)))
        elif isinstance(item[2], bytes):
            mono, wall, image, fmt, flags = item
            events.append(ScreenshotEvent(seq, mono, wall, image, fmt, EventFlag(flags)))
        else:
            mono, wall, app, title, flags = item
            events.append(ContextEvent(seq, mono, wall, app, title, EventFlag(flags)))
        seq += 1
    return events
