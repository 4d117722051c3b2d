"""Screenshots, off by default: only with the ``screenshots`` scope and a configured interval.

``grim`` on wlroots compositors (JPEG, scaled down: ``grim -t jpeg -q Q -s S -``), ``mss`` on
X11 (PNG; ``pip install mss``). Never during secure input (a secret prompt may be on screen).
An image above ``MAX_IMAGE_BYTES`` is not kept (counted): a batch must fit one Kafka message.
Text on a screenshot is not redacted (that would need OCR): granting the scope says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from capturelab.schema import ImageFormat

TOOLS = ("auto", "grim", "mss")


class ScreenshotUnavailableError(Exception):
    """No display or no tool: capture goes on without screenshots (the status says why)."""


def _grim(scale: float, quality: int) -> tuple[bytes, ImageFormat]:
    grim = shutil.which("grim")
    if grim is None or not os.environ.get("WAYLAND_DISPLAY"):
        raise ScreenshotUnavailableError("grim needs a wlroots session (WAYLAND_DISPLAY) and grim")
    argv = [grim, "-t", "jpeg", "-q", str(quality), "-s", str(scale), "-"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=5, check=True)  # noqa: S603 - fixed argv
    except (subprocess.SubprocessError, OSError) as exc:
        raise ScreenshotUnavailableError(f"grim failed: {exc}") from None
    return proc.stdout, ImageFormat.JPEG


def _mss() -> tuple[bytes, ImageFormat]:
    if not os.environ.get("DISPLAY"):
        raise ScreenshotUnavailableError("mss needs an X11 display (DISPLAY)")
    try:
        import mss  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
        import mss.tools  # type: ignore[import-not-found]  # noqa: PLC0415
    except ModuleNotFoundError:
        raise ScreenshotUnavailableError("mss is not installed (pip install mss)") from None
    with mss.mss() as grabber:
        shot: Any = grabber.grab(grabber.monitors[0])
        return bytes(mss.tools.to_png(shot.rgb, shot.size)), ImageFormat.PNG


def take(tool: str, scale: float, quality: int) -> tuple[bytes, ImageFormat]:
    """One screenshot with the configured tool (auto: grim on wlroots, else mss on X11)."""
    if tool == "grim" or (tool == "auto" and os.environ.get("WAYLAND_DISPLAY")):
        return _grim(scale, quality)
    return _mss()
