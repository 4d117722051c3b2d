"""The wheelhouse key follows the pins and the source; requirements come from pyproject."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from capturelab.errors import InputError
from capturelab.lab import wheelhouse
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
