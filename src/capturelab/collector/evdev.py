"""The kernel's input events, read the way evdev hands them out, and the devices that produce them.

A read from ``/dev/input/eventN`` returns whole ``struct input_event`` records: a ``struct
timeval`` (two longs: 16 bytes on 64-bit) then ``__u16 type``, ``__u16 code``, ``__s32 value``:
24 bytes on arm64 and x86-64. ``DeviceReader`` reads exactly that from any file descriptor, so
the same code reads a real evdev node and the injection FIFO that ``capturelab synth`` writes
where ``/dev/uinput`` does not exist (containers): the injection sits just below the device
read, and everything after it runs unchanged.

Devices are classified from sysfs (``/sys/class/input/eventN/device/capabilities``), the same
bitmaps udev's input_id builtin reads, so no ioctl and no libevdev are needed.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from capturelab.keys import (
    ABS_X,
    ABS_Y,
    BTN_LEFT,
    BTN_TOUCH,
    EV_ABS,
    EV_KEY,
    EV_MAX,
    EV_REL,
    EV_SYN,
    KEY_A,
    KEY_MAX,
    KEY_SPACE,
    KEY_Z,
    REL_X,
    REL_Y,
)
from capturelab.schema import DeviceClass

INPUT_EVENT = struct.Struct("@llHHi")
EVENT_SIZE = INPUT_EVENT.size  # 24 on 64-bit Linux

INJECT_SUFFIX = ".evdev"

Raw = tuple[int, int, int, int, int]  # sec, usec, type, code, value


def _bitmap(text: str) -> int:
    """A sysfs capability bitmap: space-separated hex words, most significant first."""
    value = 0
    for word in text.split():
        value = (value << (8 * struct.calcsize("l"))) | int(word, 16)
    return value


def _bit(bitmap: int, n: int) -> bool:
    return bool(bitmap >> n & 1)


def classify(ev: int, key: int, rel: int, abs_: int) -> DeviceClass | None:
    """Keyboard, mouse or touchpad from capability bitmaps; None for what we never read."""
    if _bit(ev, EV_REL) and _bit(rel, REL_X) and _bit(rel, REL_Y) and _bit(key, BTN_LEFT):
        return DeviceClass.MOUSE
    if _bit(ev, EV_ABS) and _bit(abs_, ABS_X) and _bit(abs_, ABS_Y) and _bit(key, BTN_TOUCH):
        return DeviceClass.TOUCHPAD
    if _bit(ev, EV_KEY) and all(_bit(key, k) for k in (KEY_A, KEY_Z, KEY_SPACE)):
        return DeviceClass.KEYBOARD
    return None


@dataclass(frozen=True)
class DeviceInfo:
    path: Path
    device: DeviceClass
    name: str


def discover(
    sysfs_input: Path = Path("/sys/class/input"), dev_dir: Path = Path("/dev/input")
) -> list[DeviceInfo]:
    """Keyboards, mice and touchpads the kernel knows (sysfs), as their /dev/input nodes."""
    found: list[DeviceInfo] = []
    if not sysfs_input.is_dir():
        return found
    for entry in sorted(sysfs_input.glob("event*")):
        caps = entry / "device" / "capabilities"
        try:
            bitmaps = [
                _bitmap((caps / name).read_text()) if (caps / name).exists() else 0
                for name in ("ev", "key", "rel", "abs")
            ]
            name = (entry / "device" / "name").read_text().strip()
        except (OSError, ValueError):
            continue
        device = classify(*bitmaps)
        if device is not None:
            found.append(DeviceInfo(dev_dir / entry.name, device, name))
    return found


def discover_injected(inject_dir: Path) -> list[DeviceInfo]:
    """``<class>-<n>.evdev`` FIFOs that ``capturelab synth`` feeds (keyboard-0.evdev, mouse-0...)."""
    found: list[DeviceInfo] = []
    if not inject_dir.is_dir():
        return found
    classes = {c.name.lower(): c for c in DeviceClass}
    for path in sorted(inject_dir.glob(f"*{INJECT_SUFFIX}")):
        prefix = path.name.split("-", 1)[0]
        if prefix in classes and stat.S_ISFIFO(path.stat().st_mode):
            found.append(DeviceInfo(path, classes[prefix], f"injected {path.name}"))
    return found


def check_raw(raw: Raw, device: DeviceClass) -> str | None:
    """Why a record is malformed (quarantine it), or None. Values the kernel never produces."""
    _sec, usec, etype, code, value = raw
    if not 0 <= usec < 1_000_000:
        return f"usec {usec} out of range"
    if etype > EV_MAX:
        return f"type {etype:#x} above EV_MAX"
    if etype == EV_KEY:
        if code > KEY_MAX:
            return f"key code {code:#x} above KEY_MAX"
        if value not in (0, 1, 2):
            return f"key value {value} is not 0 (release), 1 (press) or 2 (repeat)"
    if etype == EV_SYN and code > 0xF:
        return f"syn code {code:#x} unknown"
    return None


@dataclass
class DeviceReader:
    """Non-blocking reads of whole 24-byte records from one device node or injection FIFO."""

    info: DeviceInfo
    fd: int = -1
    _rest: bytes = field(default=b"", repr=False)

    def open(self) -> None:
        mode = self.info.path.stat().st_mode
        # A FIFO is opened read-write so that it never reports end-of-file between writers.
        flags = os.O_RDWR if stat.S_ISFIFO(mode) else os.O_RDONLY
        self.fd = os.open(self.info.path, flags | os.O_NONBLOCK | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._rest = b""

    def read(self, max_bytes: int = EVENT_SIZE * 4096) -> Iterator[Raw] | None:
        """The records available now; None when the device is gone (unplugged: reopen later)."""
        try:
            chunk = os.read(self.fd, max_bytes)
        except BlockingIOError:
            return iter(())
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EIO, errno.EBADF):
                return None
            raise
        if not chunk:
            return None
        data = self._rest + chunk
        whole = len(data) - len(data) % EVENT_SIZE
        self._rest = data[whole:]
        return INPUT_EVENT.iter_unpack(data[:whole]) if whole else iter(())


def pack(sec: int, usec: int, etype: int, code: int, value: int) -> bytes:
    return INPUT_EVENT.pack(sec, usec, etype, code, value)
