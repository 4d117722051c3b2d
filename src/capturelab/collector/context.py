"""Focus context: which application (and window title) has the keyboard, where a display says so.

Three sources, chosen by the config's ``context``:

- ``sway``: the sway/wlroots IPC socket (``$SWAYSOCK``; i3-ipc framing: ``i3-ipc``, length,
  type, JSON), subscribed to ``window`` events, with the focused window of ``GET_TREE`` first
  (so a collector that starts or resumes knows the focus before the next change);
- ``x11``: ``xprop`` on ``_NET_ACTIVE_WINDOW``, polled once a second;
- ``inject``: a FIFO (``<inject_dir>/context.fifo``) of JSON lines ``{"app", "title"}`` that
  ``capturelab synth`` writes, so containers without a display exercise the same path.

Each returns focus changes as (app, title). Nothing here leaves the process unredacted: the edge
filter decides (secret prompts switch secure input on; excluded windows withhold everything;
titles are redacted when kept).

A lock screen is not a window that any of these reports (swaylock draws on a session-lock
surface), so ``running_lock_screen`` looks for its process instead, whatever the source.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)
Focus = tuple[str, str]


class ContextSource(Protocol):
    def fileno(self) -> int | None: ...
    def read(self) -> list[Focus]: ...
    def close(self) -> None: ...


class InjectContext:
    def __init__(self, path: Path) -> None:
        if not stat.S_ISFIFO(path.stat().st_mode):
            raise FileNotFoundError(f"{path} is not a FIFO")
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._rest = b""

    def fileno(self) -> int | None:
        return self.fd

    def read(self) -> list[Focus]:
        try:
            data = self._rest + os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        lines = data.split(b"\n")
        self._rest = lines.pop()
        out: list[Focus] = []
        for line in lines:
            try:
                doc = json.loads(line)
                out.append((str(doc.get("app", "")), str(doc.get("title", ""))))
            except (ValueError, AttributeError):
                log.warning("%s: a line that is not JSON {app, title} was ignored", self.path)
        return out

    def close(self) -> None:
        os.close(self.fd)


_I3_MAGIC = b"i3-ipc"
_I3_HEADER = struct.Struct("=6sII")
_I3_SUBSCRIBE = 2
_I3_GET_TREE = 4
_I3_EVENT_WINDOW = 0x80000003


def sway_focus(event: dict[str, Any]) -> Focus | None:
    """The focused window of a sway ``window`` event (focus or title change), else None."""
    if event.get("change") not in ("focus", "title"):
        return None
    container = event.get("container") or {}
    if event.get("change") == "title" and not container.get("focused"):
        return None
    props = container.get("window_properties") or {}
    app = container.get("app_id") or props.get("class") or ""
    return str(app), str(container.get("name") or "")


def sway_tree_focus(node: dict[str, Any]) -> Focus | None:
    """The focused window in a ``GET_TREE`` reply (depth first), else None."""
    if node.get("focused") and (node.get("app_id") or node.get("window_properties")):
        props = node.get("window_properties") or {}
        return str(node.get("app_id") or props.get("class") or ""), str(node.get("name") or "")
    for child in (*node.get("nodes", ()), *node.get("floating_nodes", ())):
        found = sway_tree_focus(child)
        if found is not None:
            return found
    return None


class SwayContext:
    def __init__(self, socket_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        payload = json.dumps(["window"]).encode()
        self.sock.sendall(_I3_HEADER.pack(_I3_MAGIC, len(payload), _I3_SUBSCRIBE) + payload)
        self.sock.sendall(_I3_HEADER.pack(_I3_MAGIC, 0, _I3_GET_TREE))
        self.sock.setblocking(False)
        self._buf = b""

    def fileno(self) -> int | None:
        return self.sock.fileno()

    def read(self) -> list[Focus]:
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return []
        if not chunk:
            raise ConnectionError("sway closed the IPC socket")
        self._buf += chunk
        out: list[Focus] = []
        while len(self._buf) >= _I3_HEADER.size:
            magic, length, kind = _I3_HEADER.unpack_from(self._buf)
            if magic != _I3_MAGIC:
                raise ConnectionError("sway IPC: bad magic")
            if len(self._buf) < _I3_HEADER.size + length:
                break
            body = self._buf[_I3_HEADER.size : _I3_HEADER.size + length]
            self._buf = self._buf[_I3_HEADER.size + length :]
            focus = None
            if kind == _I3_EVENT_WINDOW:
                focus = sway_focus(json.loads(body))
            elif kind == _I3_GET_TREE:
                focus = sway_tree_focus(json.loads(body))
            if focus is not None:
                out.append(focus)
        return out

    def close(self) -> None:
        self.sock.close()


def _xprop(*args: str) -> str:
    xprop = shutil.which("xprop")
    if xprop is None:
        raise FileNotFoundError("xprop is not installed (apt install x11-utils)")
    argv = [xprop, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=2, check=True).stdout  # noqa: S603 - fixed argv


def x11_focus() -> Focus | None:
    """The active window's WM_CLASS and title through ``xprop``; None when there is none."""
    root = _xprop("-root", "_NET_ACTIVE_WINDOW")
    window = root.rsplit("#", 1)[-1].strip().split(",")[0].strip()
    if not window.startswith("0x") or int(window, 16) == 0:
        return None
    props = _xprop("-id", window, "WM_CLASS", "_NET_WM_NAME")
    app = title = ""
    for line in props.splitlines():
        if line.startswith("WM_CLASS") and "=" in line:
            app = line.split("=", 1)[1].split(",")[-1].strip().strip('"')
        elif line.startswith("_NET_WM_NAME") and "=" in line:
            title = line.split("=", 1)[1].strip().strip('"')
    return app, title


class X11Context:
    """Polled (call ``read`` about once a second): reports a change of focus only."""

    def __init__(self) -> None:
        self._last: Focus | None = None

    def fileno(self) -> int | None:
        return None

    def read(self) -> list[Focus]:
        try:
            focus = x11_focus()
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConnectionError(f"xprop failed: {exc}") from None
        if focus is None or focus == self._last:
            return []
        self._last = focus
        return [focus]

    def close(self) -> None:
        pass


def _missing(kind: str) -> str:
    """What a display source lacks before it can open, or ``""``."""
    if kind == "sway" and not os.environ.get("SWAYSOCK"):
        return "SWAYSOCK is not set (collector_session_environment)"
    if kind == "x11" and not os.environ.get("DISPLAY"):
        return "DISPLAY is not set (collector_session_environment)"
    if kind == "x11" and shutil.which("xprop") is None:
        return "xprop is not installed (apt install x11-utils)"
    return ""


def open_source(kind: str, inject_dir: Path | None) -> ContextSource | str:
    """The configured source, or why it is not available (yet: the caller retries)."""
    missing = _missing(kind)
    if missing:
        return missing
    try:
        if kind == "inject" and inject_dir is not None:
            return InjectContext(inject_dir / "context.fifo")
        if kind == "sway":
            return SwayContext(os.environ["SWAYSOCK"])
        if kind == "x11":
            return X11Context()
    except OSError as exc:
        return f"{kind}: {exc}"
    return f"no source of kind {kind!r}"


# Screen lockers by their process name as /proc/<pid>/comm shows it (at most 15 characters).
# Daemons that only start a locker (xscreensaver, light-locker, gnome-screensaver) are not here:
# they run all the time.
DEFAULT_LOCK_SCREENS = (
    "swaylock",
    "hyprlock",
    "gtklock",
    "waylock",
    "i3lock",
    "xsecurelock",
    "xscreensaver-au",  # xscreensaver-auth, the unlock dialog of xscreensaver 6
    "kscreenlocker_g",  # kscreenlocker_greet (KDE)
    "physlock",
    "slock",
    "xlock",
)


def running_lock_screen(names: Iterable[str], proc: Path = Path("/proc")) -> str:
    """The name of a running screen locker, or ``""``. A process that ends while it is read
    is skipped; a /proc that cannot be listed raises OSError."""
    wanted = frozenset(names)
    if not wanted:
        return ""
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(entry.path, "comm").read_text().rstrip("\n")
        except OSError:
            continue
        if comm in wanted:
            return comm
    return ""
