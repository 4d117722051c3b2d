"""The wheelhouse: capturelab and its pinned runtime dependencies as wheels, once per architecture.

Built on the controller, cached under
``~/.cache/capturelab/wheelhouse/<arch>-py<ver>-<extras>-<key>/`` (the newest two of each such
family are kept), copied to the hosts, installed with ``pip --no-index``: nothing is compiled on
a node (arm64 under emulation compiles about 10x slower) and the nodes need no index. ``key``
hashes the pins (constraints.txt), pyproject.toml and the package source, so a change rebuilds
it and nothing else does. Beside the loose wheels, ``wheels.tar`` holds what a node's copy
holds (the wheels, requirements.txt and ``NODE.SHA256SUMS``, their checksums): the role sends
that one file instead of one module round trip per wheel (each is seconds on an emulated node).
Dependencies come only as binary wheels for the target platform (``--only-binary``); a
dependency without one fails here, on the controller, naming it.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import sys
import tarfile
import tomllib
from pathlib import Path

from capturelab.errors import InputError
from capturelab.lab import cache
from capturelab.lab.paths import LabPaths
from capturelab.lab.process import run, say

GLIBC_MINOR = 36  # Debian bookworm's glibc 2.36: every manylinux_2_x with x <= 36 runs there


def _manylinux(machine: str) -> tuple[str, ...]:
    # pip's --platform does not widen a tag to the older glibcs it implies: list them all
    # (the CUDA wheels behind torch say manylinux_2_27, cuda-bindings manylinux_2_24).
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    return (*tags, f"manylinux2014_{machine}")


PLATFORMS = {"amd64": _manylinux("x86_64"), "arm64": _manylinux("aarch64")}
DEFAULT_PYTHON = "3.11"  # Debian bookworm's python3 (the nodes' venvs)
KEEP = 2  # wheelhouses kept per family (arch, python, extras): the current one and the last
ARCHIVE = "wheels.tar"  # uncompressed: wheels are zip files already
NODE_MANIFEST = "NODE.SHA256SUMS"  # sha256sum --check format, of the archive's other members


def source_key(repo: Path, python: str, extras: tuple[str, ...]) -> str:
    digest = hashlib.sha256(f"{python}|{','.join(extras)}".encode())
    files = [repo / "constraints.txt", repo / "pyproject.toml"]
    files += sorted((repo / "src" / "capturelab").rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def runtime_requirements(repo: Path, extras: tuple[str, ...]) -> list[str]:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise InputError(f"wheelhouse: pyproject.toml has no extra {extra!r}")
        reqs += optional[extra]
    return reqs


def build(
    paths: LabPaths, arch: str, python: str = DEFAULT_PYTHON, extras: tuple[str, ...] = ()
) -> Path:
    if arch not in PLATFORMS:
        raise InputError(f"wheelhouse: arch {arch!r} is not one of {sorted(PLATFORMS)}")
    repo = paths.repo
    key = source_key(repo, python, extras)
    family = f"{arch}-py{python}-{'+'.join(extras) or 'core'}"
    out = paths.cache / "wheelhouse" / f"{family}-{key}"
    # One wheelhouse build at a time on this machine: each builds the capturelab wheel in the
    # source tree (pip's in-tree build), which two builds at once would share.
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / ".build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache.ensure(out, "wheelhouse", lambda tmp: _download(repo, arch, python, extras, tmp))
        prune(out.parent, family)
    return out


def _download(repo: Path, arch: str, python: str, extras: tuple[str, ...], tmp: Path) -> None:
    """The wheels and their pins into ``tmp`` (sealed by the cache: SHA256SUMS, marker)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(tmp), str(repo)],
        what="wheelhouse: the capturelab wheel (pure Python)",
        stream=False,
    )
    platform_args = [a for p in PLATFORMS[arch] for a in ("--platform", p)]
    run(
        [
            *pip,
            "download",
            "--dest",
            str(tmp),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python,
            *platform_args,
            "--constraint",
            str(repo / "constraints.txt"),
            *runtime_requirements(repo, extras),
        ],
        what=f"wheelhouse: binary wheels for {arch} / CPython {python}",
        stream=False,
    )
    wheels = sorted(p.name for p in tmp.glob("*.whl"))
    pins = sorted(
        "{}=={}".format(*name.split("-")[:2]) for name in wheels
    )  # wheel names: dist-version-...; dist names use underscores, which pip accepts
    (tmp / "requirements.txt").write_text("\n".join(pins) + "\n")
    archive(tmp, [*wheels, "requirements.txt"])
    say(f"wheelhouse {tmp.name.removesuffix('.partial')}: {len(wheels)} wheels")


def archive(folder: Path, names: list[str]) -> Path:
    """``folder/wheels.tar``: ``names`` and their NODE.SHA256SUMS, owned by root, mode 0644.

    Invariant: unpacked into an empty folder, ``sha256sum --check --strict NODE.SHA256SUMS``
    passes there, and the folder then holds everything ``pip install --no-index`` needs.
    """
    lines = [f"{cache.file_sha256(folder / name)}  {name}" for name in names]
    (folder / NODE_MANIFEST).write_text("\n".join(lines) + "\n")
    out = folder / ARCHIVE
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in [*names, NODE_MANIFEST]:
            tar.add(folder / name, arcname=name, filter=_as_root)
    return out


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o644
    return info


def prune(root: Path, family: str, keep: int = KEEP) -> list[Path]:
    """Remove all but the newest ``keep`` wheelhouses of a family (the train extra is ~3 GB)."""
    built = sorted(
        (p for p in root.glob(f"{family}-*") if (p / cache.MARKER).is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    old = [p for p in built if len(p.name) == len(family) + 13][keep:]  # family-<12 hex>
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
        say(f"wheelhouse {path.name}: removed (older than the newest {keep})")
    return old
