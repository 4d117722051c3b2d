"""Durable file writes shared by the tiers: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a created, renamed or removed entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write new, fsync, rename, fsync the directory.

    The new file is written in ``tmp_dir`` (same filesystem; a spool cleans it on start) or next
    to ``path`` as a hidden file; its name carries the process and thread, so two writers never
    share one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = tmp_dir if tmp_dir is not None else path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    write_synced(tmp, data)
    tmp.replace(path)
    fsync_dir(path.parent)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``path`` whole and fsync its data (the caller makes its name durable)."""
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def point_latest(folder: Path, name: str) -> None:
    """Atomically (re)point ``folder/latest`` at the entry ``name`` in ``folder``."""
    link = folder / f".latest.{os.getpid()}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(name)
    link.replace(folder / "latest")
    fsync_dir(folder)
