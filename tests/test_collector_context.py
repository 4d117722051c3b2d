"""Focus context sources: sway IPC (a fake sway on a socket) and X11 (a fake xprop)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from capturelab.collector.context import (
    DEFAULT_LOCK_SCREENS,
    SwayContext,
    X11Context,
    open_source,
    running_lock_screen,
    sway_focus,
)

HEADER = struct.Struct("=6sII")


def test_sway_subscribes_and_reports_focus(tmp_path: Path) -> None:
    path = str(tmp_path / "sway.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    got: list[bytes] = []

    def fake_sway() -> None:
        conn, _ = server.accept()
        magic, length, kind = HEADER.unpack(conn.recv(HEADER.size))
        got.append(magic + kind.to_bytes(4, "little") + conn.recv(length))
        reply = json.dumps({"success": True}).encode()
        conn.sendall(HEADER.pack(b"i3-ipc", len(reply), 2) + reply)
        magic, length, kind = HEADER.unpack(conn.recv(HEADER.size))
        got.append(magic + kind.to_bytes(4, "little"))
        tree = json.dumps(
            {
                "type": "root",
                "nodes": [
                    {"type": "workspace", "nodes": [{"app_id": "foot", "name": "~"}]},
                    {
                        "type": "workspace",
                        "nodes": [],
                        "floating_nodes": [
                            {"app_id": "org.keepassxc.KeePassXC", "name": "KeePassXC",
                             "focused": True},
                        ],
                    },
                ],
            }
        ).encode()  # fmt: skip
        conn.sendall(HEADER.pack(b"i3-ipc", len(tree), 4) + tree)
        for event in (
            {
                "change": "focus",
                "container": {"app_id": "foot", "name": "sudo apt upgrade", "focused": True},
            },
            {"change": "title", "container": {"app_id": "foot", "name": "bg", "focused": False}},
            {
                "change": "title",
                "container": {
                    "window_properties": {"class": "Firefox"},
                    "name": "Docs",
                    "focused": True,
                },
            },
        ):
            body = json.dumps(event).encode()
            conn.sendall(HEADER.pack(b"i3-ipc", len(body), 0x80000003) + body[:5])
            conn.sendall(body[5:])  # split across reads: the client reassembles frames
        conn.close()

    thread = threading.Thread(target=fake_sway)
    thread.start()
    source = SwayContext(path)
    seen: list[tuple[str, str]] = []
    try:
        while len(seen) < 3:
            try:
                seen += source.read()
            except ConnectionError:
                break
    finally:
        source.close()
        thread.join(5)
        server.close()
    assert got and got[0].startswith(b"i3-ipc") and b'["window"]' in got[0]
    assert got[1] == b"i3-ipc" + (4).to_bytes(4, "little")  # GET_TREE: the focus right now
    assert seen == [
        ("org.keepassxc.KeePassXC", "KeePassXC"),
        ("foot", "sudo apt upgrade"),
        ("Firefox", "Docs"),
    ]


def test_sway_focus_ignores_other_changes() -> None:
    assert sway_focus({"change": "new", "container": {}}) is None
    assert sway_focus({"change": "focus", "container": {"app_id": "kitty", "name": "t"}}) == (
        "kitty",
        "t",
    )


@pytest.fixture
def fake_xprop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "title"
    state.write_text("Inbox - Thunderbird")
    script = tmp_path / "bin" / "xprop"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-root" ]; then echo "_NET_ACTIVE_WINDOW(WINDOW): window id # 0x2a00003"; exit 0; fi\n'
        'echo \'WM_CLASS(STRING) = "Mail", "thunderbird"\'\n'
        f'echo "_NET_WM_NAME(UTF8_STRING) = \\"$(cat {state})\\""\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return state


def test_x11_reports_changes_only(fake_xprop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = X11Context()
    assert source.read() == [("thunderbird", "Inbox - Thunderbird")]
    assert source.read() == []  # unchanged
    fake_xprop.write_text("[sudo] password for alice")
    assert source.read() == [("thunderbird", "[sudo] password for alice")]
    monkeypatch.setenv("DISPLAY", ":0")
    assert isinstance(open_source("x11", None), X11Context)
    monkeypatch.delenv("DISPLAY")
    assert open_source("x11", None) == "DISPLAY is not set (collector_session_environment)"
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert open_source("x11", None) == "xprop is not installed (apt install x11-utils)"
    monkeypatch.delenv("SWAYSOCK", raising=False)
    assert open_source("sway", None) == "SWAYSOCK is not set (collector_session_environment)"


def test_a_running_lock_screen_is_found_by_its_process_name(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, comm in (("1", "systemd"), ("42", "sway"), ("77", "swaylock")):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "comm").write_text(comm + "\n")
    (proc / "self").mkdir()
    (proc / "99").mkdir()  # a process that ended while /proc was read: no comm
    assert running_lock_screen(DEFAULT_LOCK_SCREENS, proc) == "swaylock"
    assert running_lock_screen(["i3lock"], proc) == ""
    assert running_lock_screen([], proc) == ""
    with pytest.raises(OSError, match="No such file"):
        running_lock_screen(["swaylock"], tmp_path / "no-proc")


def test_a_real_process_named_like_a_locker_is_found(tmp_path: Path) -> None:
    locker = tmp_path / "cl-ctx-locker"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", locker)
    proc = subprocess.Popen([str(locker), "30"])
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd (its comm changes then)
        while running_lock_screen(["hyprlock", "cl-ctx-locker"]) != "cl-ctx-locker":
            assert time.monotonic() < deadline, "the locker process was never seen"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert running_lock_screen(["cl-ctx-locker"]) == ""
