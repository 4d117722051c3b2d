"""``capturelab synth``: realistic synthetic sessions, injected where a real device would be read.

A session alternates typing (about 52 words per minute on average: short intervals inside a
word and inside common digraphs, longer ones between words and after punctuation, held keys,
shift for capitals and symbols), mouse work (125 Hz relative motion along minimum-jerk paths,
then a click) and pauses. Planted canaries, all fake, test the privacy path end to end:

- ``prompt_password``: typed while a ``[sudo] password for ...`` window has focus (secure input);
- ``excluded_window``: typed (then a click) while a password manager has focus: an excluded
  window, so the collector keeps nothing of it (the manifest counts those presses);
- ``label_password``: typed after ``password: `` in an editor (the text scrubber);
- ``email`` and ``card`` (Luhn-valid test number): typed in a message (the text scrubber).

Events are the kernel's: EV_MSC scan codes before key events as a USB keyboard sends them,
EV_SYN after each report. They go to ``/dev/uinput`` where it exists, else to the collector's
injection FIFOs (``keyboard-0.evdev``, ``mouse-0.evdev``, ``context.fifo`` in the inject dir),
which the daemon reads exactly as it reads ``/dev/input/eventN``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import random
import select
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capturelab import keys
from capturelab.collector import evdev
from capturelab.errors import HostEnvironmentError
from capturelab.exclusions import NONE, Exclusions
from capturelab.schema import ContextEvent, DeviceClass, Event, EventFlag, InputEvent

# (offset ns from the session start, device, type, code, value) or a focus change
KeyEvent = tuple[int, DeviceClass, int, int, int]
Focus = tuple[int, str, str]

PHRASES = (
    "git status",
    "ls -la ~/projects",
    "the quick brown fox jumps over the lazy dog.",
    "Meeting notes: review the pipeline, then ship the fix.",
    "for i in range(10): print(i)",
    "docker compose up -d",
    "Thanks, that works for me. See you on Monday!",
    "SELECT id, name FROM users WHERE active = 1;",
    "make test && git push",
    "Could you send the report by Friday?",
)
APPS = (("xterm", "alice@lab: ~/projects"), ("firefox", "Docs - Mozilla Firefox"),
        ("code", "pipeline.py - Visual Studio Code"))  # fmt: skip
F_SETPIPE_SZ = 1031
# What synth plants, in this order: each once in every session of FULL_SESSION_S or more (it
# runs on past its duration until it has); a shorter session plants the first ones.
CANARY_KINDS = ("prompt_password", "excluded_window", "label_password", "email", "card")
FULL_SESSION_S = 40.0  # a session this long plants every kind of canary
VAULT = ("org.keepassxc.KeePassXC", "Passwords.kdbx - KeePassXC")  # excluded by default


@dataclass
class Canary:
    kind: str
    value: str
    how: str


@dataclass
class Session:
    keyboard: list[KeyEvent] = field(default_factory=list)
    mouse: list[KeyEvent] = field(default_factory=list)
    focus: list[Focus] = field(default_factory=list)
    canaries: list[Canary] = field(default_factory=list)
    typed_chars: int = 0
    typing_ns: int = 0

    def merged(self) -> list[KeyEvent | Focus]:
        items: list[KeyEvent | Focus] = [*self.keyboard, *self.mouse, *self.focus]
        return sorted(items, key=lambda e: e[0])

    def manifest(self) -> dict[str, Any]:
        minutes = self.typing_ns / 60e9
        return {
            "keyboard_events": len(self.keyboard),
            "mouse_events": len(self.mouse),
            "focus_changes": len(self.focus),
            "typed_chars": self.typed_chars,
            "wpm_while_typing": round(self.typed_chars / 5 / minutes, 1) if minutes else 0.0,
            "canaries": [vars(c) for c in self.canaries],
            "excluded_presses": self.excluded_presses(),
        }

    def excluded_presses(self, exclusions: Exclusions = NONE) -> dict[str, int]:
        """Key and button presses made while an excluded window had focus: what a collector
        must withhold (its ``excluded_keys`` and ``excluded_clicks``)."""
        excluded, keys_n, clicks_n = False, 0, 0
        for item in self.merged():
            if len(item) == 3:
                excluded = bool(exclusions.match(str(item[1]), str(item[2])))
            elif excluded and item[2] == keys.EV_KEY and item[4] == 1:
                if item[1] == DeviceClass.KEYBOARD:
                    keys_n += 1
                else:
                    clicks_n += 1
        return {"keys": keys_n, "clicks": clicks_n}


def luhn_card(rng: random.Random) -> str:
    """A 16-digit test card number (prefix 4000) with a valid Luhn check digit."""
    digits = [4, 0, 0, 0] + [rng.randrange(10) for _ in range(11)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d2 = d * 2 if i % 2 == 0 else d
        total += d2 - 9 if d2 > 9 else d2
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


class _Builder:
    def __init__(self, rng: random.Random, wpm: float, mouse_hz: int) -> None:
        self.rng = rng
        self.t = 0
        self.s = Session()
        self.mean_interval = 60 / (wpm * 5)  # seconds per character
        self.mouse_period = int(1e9 / mouse_hz)

    def _key(self, code: int, value: int) -> None:
        kb = self.s.keyboard
        kb.append((self.t, DeviceClass.KEYBOARD, keys.EV_MSC, 4, 0x70000 + code))
        kb.append((self.t, DeviceClass.KEYBOARD, keys.EV_KEY, code, value))
        kb.append((self.t, DeviceClass.KEYBOARD, keys.EV_SYN, keys.SYN_REPORT, 0))

    def type_text(self, text: str) -> None:
        start = self.t
        # Bursts inside words, pauses after spaces and punctuation; the factors are scaled so
        # that the phrase's mean interval (key hold and shift included) is the target's.
        factors = [
            1.7 if prev in " .,;:!?" else 0.75 if prev.isalpha() and ch.isalpha() else 1.0
            for prev, ch in zip(" " + text, text, strict=False)
        ]
        shift_ns = sum(0.05 for ch in text if keys.CHAR_TO_KEY[ch][1])
        budget = max(self.mean_interval * len(text) - shift_ns, 0.05 * len(text))
        scale = budget / sum(factors)
        sigma = 0.35
        for ch, factor in zip(text, factors, strict=True):
            code, shifted = keys.CHAR_TO_KEY[ch]
            median = scale * factor / math.exp(0.5 * sigma**2)
            gap = self.rng.lognormvariate(math.log(median), sigma)
            hold = min(self.rng.uniform(0.06, 0.12), gap * 0.8)
            self.t += int((gap - hold) * 1e9)
            if shifted:
                self._key(keys.K["KEY_LEFTSHIFT"], 1)
                self.t += int(0.03e9)
            self._key(code, 1)
            self.t += int(hold * 1e9)
            self._key(code, 0)
            if shifted:
                self.t += int(0.02e9)
                self._key(keys.K["KEY_LEFTSHIFT"], 0)
        self.s.typed_chars += len(text)
        self.s.typing_ns += self.t - start

    def press(self, name: str) -> None:
        self.t += int(self.rng.uniform(0.15, 0.35) * 1e9)
        self._key(keys.K[name], 1)
        self.t += int(0.08e9)
        self._key(keys.K[name], 0)

    def pause(self, low: float, high: float) -> None:
        self.t += int(self.rng.uniform(low, high) * 1e9)

    def focus(self, app: str, title: str) -> None:
        self.t += int(0.2e9)
        self.s.focus.append((self.t, app, title))
        self.t += int(0.3e9)

    def move_and_click(self) -> None:
        m = self.s.mouse
        dx, dy = self.rng.randint(-600, 600), self.rng.randint(-400, 400)
        duration = self.rng.uniform(0.3, 1.1)
        steps = max(2, int(duration * 1e9 / self.mouse_period))
        done_x = done_y = 0
        for i in range(1, steps + 1):
            tau = i / steps
            frac = 10 * tau**3 - 15 * tau**4 + 6 * tau**5  # minimum-jerk profile
            x, y = round(dx * frac), round(dy * frac)
            jitter = self.mouse_period // 25  # USB polling is regular to a few per cent
            self.t += self.mouse_period + self.rng.randint(-jitter, jitter)
            if x != done_x:
                m.append((self.t, DeviceClass.MOUSE, keys.EV_REL, keys.REL_X, x - done_x))
            if y != done_y:
                m.append((self.t, DeviceClass.MOUSE, keys.EV_REL, keys.REL_Y, y - done_y))
            m.append((self.t, DeviceClass.MOUSE, keys.EV_SYN, keys.SYN_REPORT, 0))
            done_x, done_y = x, y
        self.t += int(self.rng.uniform(0.08, 0.3) * 1e9)
        for value, gap in ((1, 0.09), (0, 0.0)):
            m.append((self.t, DeviceClass.MOUSE, keys.EV_MSC, 4, 0x90001))
            m.append((self.t, DeviceClass.MOUSE, keys.EV_KEY, keys.BTN_LEFT, value))
            m.append((self.t, DeviceClass.MOUSE, keys.EV_SYN, keys.SYN_REPORT, 0))
            self.t += int(gap * 1e9)


def build_session(
    seed: int, duration_s: float, *, wpm: float = 52, mouse_hz: int = 125, canaries: bool = True
) -> Session:
    """A deterministic session of about ``duration_s`` seconds (the same seed, the same events)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic behaviour, not cryptography
    b = _Builder(rng, wpm, mouse_hz)
    end = int(duration_s * 1e9)
    app = APPS[0]
    b.focus(*app)
    b.type_text(rng.choice(PHRASES))  # every session types something ordinary
    b.press("KEY_ENTER")
    planted = 0
    # A canary is due at each (k + 1) / (kinds + 1) of the duration (and comes now and then
    # before); a session of FULL_SESSION_S or more runs on until it planted every kind, a
    # shorter one plants what falls due within it.
    full = canaries and duration_s >= FULL_SESSION_S
    while b.t < end or (full and planted < len(CANARY_KINDS)):
        roll = rng.random()
        due = b.t >= (planted + 1) * end // (len(CANARY_KINDS) + 1)
        if canaries and planted < len(CANARY_KINDS) and (roll < 0.25 or due):
            _plant(b, rng, planted, app)
            planted += 1
        elif roll < 0.6:
            b.type_text(rng.choice(PHRASES))
            b.press("KEY_ENTER")
        elif roll < 0.9:
            for _ in range(rng.randint(1, 3)):
                b.move_and_click()
        else:
            app = rng.choice(APPS)
            b.focus(*app)
        b.pause(0.3, 1.5)
    return b.s


def build_busy_session(
    seed: int, duration_s: float, *, wpm: float = 52, mouse_hz: int = 1000
) -> Session:
    """The worst case for load: the mouse moves without a pause while typing goes on.

    Nobody does both at once; this stacks a session's typing on continuous motion at
    ``mouse_hz`` so a benchmark measures the busiest stream a collector could see.
    """
    session = build_session(seed, duration_s, wpm=wpm, mouse_hz=mouse_hz)
    motion = _Builder(random.Random(seed + 1), wpm, mouse_hz)  # noqa: S311 - synthetic data
    end = int(duration_s * 1e9)
    while motion.t < end:
        motion.move_and_click()
    session.mouse = motion.s.mouse
    return session


def _plant(b: _Builder, rng: random.Random, n: int, app: tuple[str, str]) -> None:
    tag = f"{rng.randrange(16**6):06x}"
    kind = CANARY_KINDS[n % len(CANARY_KINDS)]
    if kind == "prompt_password":
        value = f"Canary{tag}Pw!"
        b.focus("xterm", "[sudo] password for alice")
        b.type_text(value)
        b.press("KEY_ENTER")
        b.focus(*app)
        how = "typed while a sudo prompt had focus"
    elif kind == "excluded_window":
        value = f"vAult{tag}canary"
        b.focus(*VAULT)
        b.type_text(value)
        b.press("KEY_ENTER")
        b.move_and_click()
        b.focus(*app)
        how = "typed, then a click, while a password manager had focus (an excluded window)"
    elif kind == "label_password":
        value = f"cAnary{tag}pw7"
        b.type_text(f"password: {value}")
        b.press("KEY_ENTER")
        how = "typed after 'password: '"
    elif kind == "email":
        value = f"canary.{tag}@example.org"
        b.type_text(f"write to {value} today")
        b.press("KEY_ENTER")
        how = "typed in a sentence"
    else:
        value = luhn_card(rng)
        b.type_text(f"card {value} exp 12/29")
        b.press("KEY_ENTER")
        how = "typed in a sentence"
    b.s.canaries.append(Canary(kind, value, how))


def as_events(session: Session, first_seq: int = 0, t0_ns: int = 0) -> list[Event]:
    """The session as stored events without any edge filter (raw key codes, every title).

    What a collector that skipped its edge policy would land: the dataset builder's own
    redaction and consent filter are tested (and benchmarked) on it.
    """
    out: list[Event] = []
    for i, item in enumerate(session.merged()):
        seq, t = first_seq + i, item[0]
        if isinstance(item[1], str):
            out.append(ContextEvent(seq, t, t0_ns + t, item[1], str(item[2]), EventFlag.SYNTHETIC))
        else:
            _t, device, etype, code, value = item
            out.append(
                InputEvent(seq, t, t0_ns + t, device, etype, code, value, EventFlag.SYNTHETIC)
            )
    return out


# --- injection ----------------------------------------------------------------------------


class FifoInjector:
    """Writes the session into the collector's injection FIFOs (created when missing)."""

    def __init__(self, inject_dir: Path, write_timeout_s: float = 30.0) -> None:
        inject_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = write_timeout_s
        self.fds: dict[str, int] = {}
        for name in ("keyboard-0.evdev", "mouse-0.evdev", "context.fifo"):
            path = inject_dir / name
            if not path.exists():
                os.mkfifo(path, 0o660)
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
            self.fds[name] = fd

    def _write(self, name: str, data: bytes) -> None:
        fd = self.fds[name]
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostEnvironmentError(
                        f"nobody reads {name} in the inject dir for {self.timeout:.0f} s: is the "
                        "collector running with consent, and inject_dir set?"
                    ) from None
                select.select([], [fd], [], 0.05)

    def key(self, device: DeviceClass, records: bytes) -> None:
        self._write(
            "keyboard-0.evdev" if device is DeviceClass.KEYBOARD else "mouse-0.evdev", records
        )

    def focus(self, app: str, title: str) -> None:
        self._write("context.fifo", json.dumps({"app": app, "title": title}).encode() + b"\n")

    def drained(self) -> bool:
        """True once the reader took everything (FIONREAD on each FIFO is 0)."""
        import termios  # noqa: PLC0415 - Linux only, used here only

        buf = bytearray(4)
        for fd in self.fds.values():
            fcntl.ioctl(fd, termios.FIONREAD, buf)
            if struct.unpack("i", buf)[0]:
                return False
        return True

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


UI_DEV_CREATE = 0x5501
UI_DEV_DESTROY = 0x5502
UI_SET_EVBIT = 0x40045564
UI_SET_KEYBIT = 0x40045565
UI_SET_RELBIT = 0x40045566
UINPUT_USER_DEV = struct.Struct("80sHHHHi" + "i" * 256)  # name, id, ff_effects_max, abs*


class UinputInjector:
    """Two virtual devices (keyboard, mouse) through ``/dev/uinput`` (the legacy setup ioctls)."""

    def __init__(self, path: Path = Path("/dev/uinput")) -> None:
        self.fds: dict[DeviceClass, int] = {}
        try:
            for device, bits in (
                (DeviceClass.KEYBOARD, [(UI_SET_KEYBIT, c) for c in range(1, 128)]),
                (DeviceClass.MOUSE, [(UI_SET_KEYBIT, c) for c in (0x110, 0x111, 0x112)]
                 + [(UI_SET_RELBIT, c) for c in (0, 1, 6, 8)]),
            ):  # fmt: skip
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                for ev in (keys.EV_SYN, keys.EV_KEY, keys.EV_MSC, keys.EV_REL):
                    fcntl.ioctl(fd, UI_SET_EVBIT, ev)
                for request, code in bits:
                    fcntl.ioctl(fd, request, code)
                name = f"capturelab synth {device.name.lower()}".encode()
                os.write(fd, UINPUT_USER_DEV.pack(name, 0x06, 0x1209, 0x0001, 1, 0, *[0] * 256))
                fcntl.ioctl(fd, UI_DEV_CREATE)
                self.fds[device] = fd
        except OSError as exc:
            self.close()
            raise HostEnvironmentError(f"{path}: {exc.strerror}") from None
        time.sleep(0.5)  # let udev and the collector see the new devices

    def key(self, device: DeviceClass, records: bytes) -> None:
        os.write(self.fds[device], records)

    def focus(self, app: str, title: str) -> None:
        """uinput carries no focus: the context source of a real display reports it."""

    def drained(self) -> bool:
        return True

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, UI_DEV_DESTROY)
            os.close(fd)
        self.fds = {}


def play(session: Session, injector: FifoInjector | UinputInjector, speed: float) -> int:
    """Write every event; ``speed`` 1 = real time, 0 = as fast as the reader takes them."""
    start_wall = time.time_ns()
    start = time.monotonic_ns()
    written = 0
    pending: dict[DeviceClass, list[bytes]] = {}
    for item in session.merged():
        t = item[0]
        if speed > 0:
            delay = start + t / speed - time.monotonic_ns()
            if delay > 0:
                _flush(pending, injector)
                time.sleep(delay / 1e9)
        if len(item) == 3:
            # A focus change is ordered against the keys around it: everything before it is read
            # first, and it is read before anything after it (FIFOs are separate streams).
            _flush(pending, injector)
            _barrier(injector)
            injector.focus(str(item[1]), str(item[2]))
            _barrier(injector)
            continue
        device, etype, code, value = DeviceClass(item[1]), int(item[2]), int(item[3]), int(item[4])
        wall = start_wall + (time.monotonic_ns() - start if speed > 0 else t)
        pending.setdefault(device, []).append(
            evdev.pack(wall // 1_000_000_000, wall % 1_000_000_000 // 1000, etype, code, value)
        )
        written += 1
        if sum(len(v) for v in pending.values()) >= 512:
            _flush(pending, injector)
    _flush(pending, injector)
    return written


def _barrier(injector: FifoInjector | UinputInjector) -> None:
    timeout = injector.timeout if isinstance(injector, FifoInjector) else 0.0
    if not wait_drained(injector, timeout):
        raise HostEnvironmentError(
            f"the collector did not read the injected events within {timeout:.1f} s: is it "
            "running with consent, and is inject_dir its inject dir?"
        )


def _flush(
    pending: dict[DeviceClass, list[bytes]], injector: FifoInjector | UinputInjector
) -> None:
    for device, records in pending.items():
        if records:
            injector.key(device, b"".join(records))
    pending.clear()


def open_injector(
    inject_dir: Path | None, uinput: Path = Path("/dev/uinput"), timeout_s: float = 30.0
) -> FifoInjector | UinputInjector:
    """uinput where it exists (unless an inject dir is named), else the injection FIFOs."""
    if inject_dir is None and uinput.exists():
        return UinputInjector(uinput)
    if inject_dir is None:
        raise HostEnvironmentError(
            f"{uinput} does not exist: name the collector's inject_dir (--inject-dir)"
        )
    return FifoInjector(inject_dir, write_timeout_s=timeout_s)


def wait_drained(injector: FifoInjector | UinputInjector, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if injector.drained():
            return True
        time.sleep(0.05)
    return False
