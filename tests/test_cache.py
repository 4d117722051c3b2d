"""Caches killed half-way or damaged later are detected, named with the reason, and rebuilt.

Each test kills a real build process with SIGKILL half-way (or truncates a file of a finished
cache), then runs the build again and reads the log: the cache is named, the reason is given,
and the rebuilt cache verifies. Kafka's jars go through the real playbook (the role's fetch
tasks, maven from the local repository of the first resolution).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kafka_local import require_libs

from capturelab.lab import cache, images, wheelhouse
from capturelab.lab.images import ROOTFS_MARKER, StorageVmImage
from capturelab.lab.paths import LabPaths

REPO = Path(__file__).resolve().parents[1]

# A wheelhouse build whose pip download is replaced by files written slowly: the first wheel,
# then a pause in which the test kills the process.
KILLED_BUILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from capturelab.lab import wheelhouse
    from capturelab.lab.paths import LabPaths

    def slow_download(repo, arch, python, extras, tmp):
        (tmp / "a-1.0-py3-none-any.whl").write_bytes(b"half" * 1000)
        (Path(sys.argv[2]) / "ready").touch()
        time.sleep(60)  # killed here

    wheelhouse._download = slow_download
    wheelhouse.build(LabPaths(Path(sys.argv[1])), "arm64")
    """
)


def fake_download(repo: Path, arch: str, python: str, extras: tuple[str, ...], tmp: Path) -> None:
    for name in ("a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl"):
        (tmp / name).write_bytes(name.encode() * 1000)
    (tmp / "requirements.txt").write_text("a==1.0\nb==2.0\n")


def _repo_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "src" / "capturelab").mkdir(parents=True)
    for name in ("pyproject.toml", "constraints.txt"):
        (repo / name).write_text((REPO / name).read_text())
    (repo / "src" / "capturelab" / "__init__.py").write_text("")
    return repo


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"the build exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_wheelhouse_killed_half_way_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    repo, cache_dir = _repo_copy(tmp_path), tmp_path / "cache"
    env = dict(os.environ, CAPTURELAB_CACHE=str(cache_dir), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(repo), str(tmp_path)], env=env)
    _wait_for(tmp_path / "ready", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (partial,) = (cache_dir / "wheelhouse").glob("*.partial")
    assert not (cache_dir / "wheelhouse" / partial.name.removesuffix(".partial")).exists()

    monkeypatch.setenv("CAPTURELAB_CACHE", str(cache_dir))
    monkeypatch.setattr(wheelhouse, "_download", fake_download)
    out = wheelhouse.build(LabPaths(repo), "arm64")
    log = capsys.readouterr().err
    assert f"wheelhouse {out}: not built yet; an earlier build stopped half-way" in log
    assert cache.problem(out) is None
    assert not partial.exists()
    assert sorted(p.name for p in out.glob("*.whl")) == ["a-1.0-py3-none-any.whl",
                                                          "b-2.0-py3-none-any.whl"]  # fmt: skip


def test_wheelhouse_truncated_later_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    repo = _repo_copy(tmp_path)
    monkeypatch.setenv("CAPTURELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(wheelhouse, "_download", fake_download)
    out = wheelhouse.build(LabPaths(repo), "amd64")
    capsys.readouterr()
    assert wheelhouse.build(LabPaths(repo), "amd64") == out
    assert "verified" in capsys.readouterr().err

    with (out / "b-2.0-py3-none-any.whl").open("r+b") as f:
        f.truncate(100)
    wheelhouse.build(LabPaths(repo), "amd64")
    log = capsys.readouterr().err
    assert (
        f"wheelhouse {out}: b-2.0-py3-none-any.whl does not match its SHA-256 in SHA256SUMS "
        "(truncated or changed); building it"
    ) in log
    assert cache.problem(out) is None
    assert (out / "b-2.0-py3-none-any.whl").stat().st_size == len(b"b-2.0-py3-none-any.whl") * 1000


def test_a_cache_without_its_marker_or_with_a_changed_manifest_is_not_used(tmp_path: Path):
    folder = tmp_path / "c"
    cache.ensure(folder, "test cache", lambda d: (d / "f").write_text("x"))
    assert cache.problem(folder) is None
    manifest = folder / cache.MANIFEST
    manifest.write_text(manifest.read_text() + "0" * 64 + "  g\n")
    assert "does not match the completion marker" in str(cache.problem(folder))
    (folder / cache.MARKER).unlink()
    assert "no completion marker" in str(cache.problem(folder))
    cache.ensure(folder, "test cache", lambda d: (d / "f").write_text("x"))
    (folder / "f").unlink()
    assert cache.problem(folder) == "f is missing"


def test_storage_vm_image_with_a_truncated_disk_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("CAPTURELAB_CACHE", str(tmp_path / "cache"))
    builds: list[Path] = []

    def fake_build(self: StorageVmImage, tmp: Path) -> None:
        builds.append(tmp)
        for name in ("disk.raw", "vmlinuz", "initrd.img"):
            (tmp / name).write_bytes(name.encode() * 4096)

    monkeypatch.setattr(StorageVmImage, "_build", fake_build)
    image = StorageVmImage(LabPaths(REPO), mirror="http://mirror.invalid/debian")
    disk = image.ensure().disk
    assert image.exists() and len(builds) == 1
    image.ensure()
    assert len(builds) == 1, "a verified image is not built again"
    with disk.open("r+b") as f:
        f.truncate(10)
    assert not image.exists()
    capsys.readouterr()
    image.ensure()
    assert len(builds) == 2
    assert "storage VM image" in (log := capsys.readouterr().err)
    assert "disk.raw does not match its SHA-256" in log
    assert image.exists()


FAKE_DEBOOTSTRAP = """#!/bin/sh
# debootstrap --arch=A --variant=V --include=I SUITE TARGET MIRROR
target="$5"
case "$target" in /*) ;; *) echo "not a path: $target" >&2; exit 2;; esac
mkdir -p "$target"
if [ -e "$HALF" ]; then
  echo half > "$target/half-made"; touch "$READY"; exec sleep 60
fi
echo whole > "$target/etc-os-release"
"""


def test_node_rootfs_killed_during_debootstrap_is_made_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The real recipe (images/rootfs.py through pyinfra @local), a stand-in debootstrap."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "debootstrap").write_text(FAKE_DEBOOTSTRAP)
    (bindir / "debootstrap").chmod(0o755)
    rootfs = tmp_path / "cache" / "rootfs" / "node-arm64-test"
    half, ready = tmp_path / "half", tmp_path / "ready"
    half.touch()
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", HALF=str(half), READY=str(ready))
    script = (
        "import sys; from pathlib import Path; from capturelab.lab import images; "
        "from capturelab.lab.paths import LabPaths; "
        "images.make_rootfs(LabPaths(Path(sys.argv[1])), 'arm64', Path(sys.argv[2]), "
        "('python3',), 'http://mirror.invalid/debian')"
    )
    argv = [sys.executable, "-c", script, str(REPO), str(rootfs)]
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    _wait_for(ready, proc, seconds=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (rootfs / "half-made").exists() and not (rootfs / ROOTFS_MARKER).exists()

    half.unlink()
    os.environ["PATH"], saved = env["PATH"], os.environ["PATH"]
    try:
        images.make_rootfs(LabPaths(REPO), "arm64", rootfs, ("python3",), "http://x.invalid")
    finally:
        os.environ["PATH"] = saved
    log = capsys.readouterr().err
    assert f"rootfs cache {rootfs}: no completion marker ({ROOTFS_MARKER})" in log
    assert (rootfs / ROOTFS_MARKER).exists()
    assert not (rootfs / "half-made").exists(), "a half-made rootfs is never reused"
    assert (rootfs / "etc-os-release").read_text() == "whole\n"


def _kafka_jars(cache_dir: Path, tool_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    extra = json.dumps({"kafka_controller_cache_dir": str(cache_dir)})
    return subprocess.run(
        ["ansible-playbook", str(REPO / "playbooks" / "kafka-jars.yml"), "-e", extra],
        env=tool_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_kafka_jars_truncated_later_are_resolved_again(tmp_path: Path, tool_env: dict[str, str]):
    """A copy of the real cache, one jar truncated: the playbook names it and resolves again."""
    src = require_libs().parent  # <cache>/kafka/<version>-maven, from `make kafka-jars`
    cache_dir = tmp_path / "kafka"
    copy = cache_dir / src.name
    copy.parent.mkdir()
    shutil.copytree(src, copy, symlinks=True)
    jar = copy / "libs" / next(p.name for p in (copy / "libs").glob("kafka-clients-*.jar"))
    with jar.open("r+b") as f:
        f.truncate(1000)
    proc = _kafka_jars(cache_dir, tool_env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"Kafka jars cache {copy}/libs" in proc.stdout
    assert f"{jar.name}: FAILED" in proc.stdout
    assert jar.stat().st_size > 1000
    again = _kafka_jars(cache_dir, tool_env)
    assert again.returncode == 0 and "resolving them again" not in again.stdout


def test_two_builds_of_one_cache_at_once_build_it_once(tmp_path: Path):
    """Two processes (molecule lanes) ask for the same cache: one builds, the other verifies."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from capturelab.lab import cache

        def build(d):
            with open(sys.argv[2], "a") as log:
                log.write("built\\n")
            time.sleep(1)
            (d / "f").write_text("x")

        cache.ensure(Path(sys.argv[1]), "test cache", build)
        """
    )
    folder, log = tmp_path / "c", tmp_path / "builds.log"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(folder), str(log)], env=env)
        for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert log.read_text() == "built\n"
    assert cache.problem(folder) is None


def test_a_sparse_file_sums_as_sha256sum_does(tmp_path: Path):
    """Holes at the start, between data and at the end: the ordinary SHA-256 of every byte."""
    sparse = tmp_path / "disk.raw"
    with sparse.open("wb") as f:
        f.seek(3 << 20)
        f.write(b"data" * 5000)
        f.seek(9 << 20)
        f.write(b"more")
        f.truncate(16 << 20)
    expected = subprocess.run(
        ["sha256sum", str(sparse)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert cache.file_sha256(sparse) == expected
    dense = tmp_path / "dense"
    dense.write_bytes(os.urandom(3 << 20) + b"tail")
    assert cache.file_sha256(dense) == hashlib.sha256(dense.read_bytes()).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert cache.file_sha256(empty) == hashlib.sha256(b"").hexdigest()
