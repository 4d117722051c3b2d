"""The collector's control socket: ``capturelab collector pause|resume|status``.

A Unix stream socket (mode 0660, the service's group), one short command per connection and one
JSON line back. Invariants: a socket that cannot be made is a warning (pausing still works by
the chord), never fatal; a client that hangs or goes away costs at most one second and is never
an error of the daemon; the answers come from ``handle`` (the daemon's), this class only carries
them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("capturelab.collector")

Handler = Callable[[str], dict[str, Any]]


class ControlSocket:
    def __init__(self, path: Path, selector: selectors.BaseSelector, handle: Handler) -> None:
        self.path = path
        self.handle = handle
        self.server: socket.socket | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            path.chmod(0o660)
            server.listen(4)
            server.setblocking(False)
        except OSError as exc:
            log.warning("no control socket at %s (%s): pause works by chord only", path, exc)
            return
        selector.register(server, selectors.EVENT_READ, "control")
        self.server = server

    def accept(self) -> None:
        """Answer one waiting client (the selector said the socket is readable)."""
        if self.server is None:
            return
        try:
            conn, _ = self.server.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(1.0)
            try:
                command = conn.recv(64).decode(errors="replace").strip()
            except OSError:
                return
            reply = self.handle(command)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.path.unlink(missing_ok=True)
