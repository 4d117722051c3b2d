"""Sealed cache folders: a build is used only when it finished and its files are unchanged.

A cache folder (a wheelhouse, the storage VM image, ...) is built in ``<name>.partial`` and
sealed there: ``SHA256SUMS`` lists every file with its SHA-256, and ``.complete`` holds the
SHA-256 of ``SHA256SUMS``. Only then is it renamed into place. Invariants:

- a folder without ``.complete`` was never finished (a build killed half-way) and is not used;
- a folder whose ``.complete`` does not match its manifest, or one of whose files is missing,
  of another size, or of another SHA-256 (truncated or changed later), is not used;
- in either case the log names the cache and the reason, and the folder is built again;
  nothing half-written is ever renamed into place, so a reader sees a whole cache or none.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from capturelab.lab.process import say

MANIFEST = "SHA256SUMS"
MARKER = ".cache-complete"
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (as sha256sum prints it), reading only its data extents.

    A sparse file's holes (the VM disk is 6 GiB, mostly holes) are fed to the digest as zeros
    without being read, so the sum is the ordinary one at a fraction of the reads.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            data = _next_data(f.fileno(), pos, size)
            _feed_zeros(digest, data - pos)
            end = _next_hole(f.fileno(), data, size)
            f.seek(data)
            left = end - data
            while left > 0 and (block := f.read(min(CHUNK, left))):
                digest.update(block)
                left -= len(block)
            pos = end
    return digest.hexdigest()


def _next_data(fd: int, pos: int, size: int) -> int:
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:  # ENXIO: only a hole is left; or no SEEK_DATA on this filesystem
        return size if _has_seek_data(fd) else pos


def _next_hole(fd: int, pos: int, size: int) -> int:
    try:
        return min(os.lseek(fd, pos, os.SEEK_HOLE), size)
    except OSError:
        return size


def _has_seek_data(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        return False
    return True


_ZEROS = bytes(CHUNK)


def _feed_zeros(digest: hashlib._Hash, count: int) -> None:
    while count > 0:
        n = min(count, CHUNK)
        digest.update(_ZEROS[:n] if n < CHUNK else _ZEROS)
        count -= n


def seal(folder: Path) -> None:
    """Write the manifest of every file below ``folder``, then the completion marker."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, MARKER))
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    manifest = folder / MANIFEST
    manifest.write_text("\n".join(lines) + "\n")
    (folder / MARKER).write_text(file_sha256(manifest) + "\n")


def problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be used as a cache (None: it is complete and intact)."""
    if not folder.is_dir():
        return "not built yet"
    marker, manifest = folder / MARKER, folder / MANIFEST
    if not marker.is_file():
        return f"no completion marker ({MARKER}): its build did not finish"
    if not manifest.is_file():
        return f"no {MANIFEST} beside its completion marker"
    if marker.read_text().strip() != file_sha256(manifest):
        return f"{MANIFEST} does not match the completion marker (changed after the build)"
    return _damaged_file(folder, manifest)


def _damaged_file(folder: Path, manifest: Path) -> str | None:
    """The first file of the manifest that is missing or whose SHA-256 differs."""
    for line in manifest.read_text().splitlines():
        want, _, name = line.partition("  ")
        if not name:
            continue
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != want:
            return f"{name} does not match its SHA-256 in {MANIFEST} (truncated or changed)"
    return None


def ensure(folder: Path, what: str, build: Callable[[Path], None]) -> Path:
    """``folder``, verified; else built again by ``build(partial_folder)``, sealed, moved in.

    ``what`` names the cache in the log ("wheelhouse", "storage VM image"). Builds of one
    folder are serialised by a lock file beside it (molecule lanes run side by side): the
    second waits, then finds the first one's cache and verifies it.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(folder, what, build)


def _ensure_locked(folder: Path, what: str, build: Callable[[Path], None]) -> Path:
    reason = problem(folder)
    if reason is None:
        say(f"{what} {folder.name}: verified ({MANIFEST} and {MARKER})")
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        reason += f"; an earlier build stopped half-way ({tmp.name} is left, and is removed)"
    say(f"{what} {folder}: {reason}; building it")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    seal(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
