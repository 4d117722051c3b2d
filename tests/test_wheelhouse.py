"""The wheelhouse key follows the pins and the source; requirements come from pyproject."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from capturelab.errors import InputError
from capturelab.lab import cache, wheelhouse
from capturelab.lab.paths import LabPaths


def _repo(tmp_path: Path, repo: Path) -> Path:
    copy = tmp_path / "repo"
    (copy / "src").mkdir(parents=True)
    shutil.copytree(repo / "src" / "capturelab", copy / "src" / "capturelab")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(repo / name, copy / name)
    return copy


def test_key_changes_with_source_pins_and_python(tmp_path: Path, repo: Path):
    copy = _repo(tmp_path, repo)
    key = wheelhouse.source_key(copy, "3.11", ())
    assert key == wheelhouse.source_key(copy, "3.11", ())
    assert key != wheelhouse.source_key(copy, "3.12", ())
    assert key != wheelhouse.source_key(copy, "3.11", ("lab",))
    (copy / "src" / "capturelab" / "sink" / "store.py").write_text("# changed\n")
    changed = wheelhouse.source_key(copy, "3.11", ())
    assert changed != key
    (copy / "constraints.txt").write_text("zstandard==0.25.0\n")
    assert wheelhouse.source_key(copy, "3.11", ()) != changed


def test_runtime_requirements_are_the_core_dependencies(repo: Path):
    reqs = wheelhouse.runtime_requirements(repo, ())
    assert any(r.startswith("confluent-kafka") for r in reqs)
    assert not any(r.startswith("ansible") for r in reqs)  # the lab extra stays on the controller
    with pytest.raises(InputError, match="no extra 'gpu'"):
        wheelhouse.runtime_requirements(repo, ("gpu",))


def test_unknown_arch_is_named(tmp_path: Path, repo: Path):
    with pytest.raises(InputError, match="arch 'riscv64'"):
        wheelhouse.build(LabPaths(repo), "riscv64")


def test_prune_keeps_the_newest_of_a_family_only(tmp_path: Path):
    made = []
    for i, name in enumerate(
        ["amd64-py3.11-train-aaaaaaaaaaaa", "amd64-py3.11-train-bbbbbbbbbbbb",
         "amd64-py3.11-train-cccccccccccc", "amd64-py3.11-core-dddddddddddd",
         "amd64-py3.11-train+qlora-eeeeeeeeeeee"]
    ):  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        (d / "requirements.txt").write_text("x\n")
        cache.seal(d)  # only sealed (complete) wheelhouses count
        os.utime(d, (1_000 + i, 1_000 + i))
        made.append(d)
    removed = wheelhouse.prune(tmp_path, "amd64-py3.11-train", keep=2)
    assert removed == [made[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in made[1:])


def test_archive_unpacks_to_a_folder_its_manifest_checks(tmp_path: Path):
    built = tmp_path / "wh"
    built.mkdir()
    names = ["a-1.0-py3-none-any.whl", "b-2.0-cp311-cp311-manylinux_2_17_aarch64.whl"]
    for i, name in enumerate(names):
        (built / name).write_bytes(bytes([i]) * (1000 + i))
    (built / "requirements.txt").write_text("a==1.0\nb==2.0\n")
    tar = wheelhouse.archive(built, [*names, "requirements.txt"])
    assert tar.name == wheelhouse.ARCHIVE

    node = tmp_path / "node"
    node.mkdir()
    with tarfile.open(tar) as t:
        members = t.getmembers()
        t.extractall(node, filter="data")
    assert sorted(m.name for m in members) == sorted(
        [*names, "requirements.txt", "NODE.SHA256SUMS"]
    )
    assert {(m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, "root", 0o644)}
    check = ["sha256sum", "--check", "--quiet", "--strict", wheelhouse.NODE_MANIFEST]
    assert subprocess.run(check, cwd=node, check=False).returncode == 0
    # The manifest lists every other member: a wheel changed on the way fails the node's check.
    (node / names[1]).write_bytes(b"truncated")
    assert subprocess.run(check, cwd=node, capture_output=True, check=False).returncode != 0
