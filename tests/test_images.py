"""Image recipes are cached by hash: a changed recipe means a new tag, an unchanged one reuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capturelab.errors import InputError
from capturelab.lab import images
from capturelab.lab.images import (
    LabImage,
    NodeImage,
    StorageVmImage,
    debian_mirror,
    recipe_hash,
)
from capturelab.lab.paths import LabPaths

REPO = Path(__file__).resolve().parents[1]


def _recipe_copy(tmp_path: Path) -> LabPaths:
    (tmp_path / "images").mkdir()
    for src in (REPO / "images").glob("*.py"):
        (tmp_path / "images" / src.name).write_text(src.read_text())
    return LabPaths(tmp_path)


def test_hash_follows_recipe_content(tmp_path: Path):
    paths = _recipe_copy(tmp_path)
    node = NodeImage(paths, "arm64", mirror="http://mirror.invalid/debian")
    before = node.hash
    assert node.tag == f"capturelab/node:arm64-{before}"
    assert NodeImage(paths, "arm64", mirror="http://other.invalid/debian").hash == before, (
        "the mirror does not change the image"
    )
    assert NodeImage(paths, "amd64", mirror="x").hash != before
    (paths.images / "node.py").write_text((paths.images / "node.py").read_text() + "\n# changed\n")
    assert node.hash != before
    vm_before = StorageVmImage(paths, mirror="x").hash
    (paths.images / "debian_base.py").write_text("# changed\n")
    assert StorageVmImage(paths, mirror="x").hash != vm_before


def test_recipe_hash_depends_on_params(tmp_path: Path):
    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    assert recipe_hash([f], {"arch": "amd64"}) != recipe_hash([f], {"arch": "arm64"})
    assert recipe_hash([f], {"arch": "amd64"}) == recipe_hash([f], {"arch": "amd64"})


def test_unknown_arch_is_named():
    with pytest.raises(InputError, match=r"lab_arch: 'riscv64'"):
        NodeImage(LabPaths(REPO), "riscv64", mirror="x")


def test_mirror_override(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CAPTURELAB_DEBIAN_MIRROR", "http://apt.example.lan/debian/")
    assert debian_mirror() == "http://apt.example.lan/debian"


def test_mirror_from_deb822_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("CAPTURELAB_DEBIAN_MIRROR", raising=False)
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://ftp.example.org/debian\nSuites: bookworm\n"
    )
    real_path = images.Path

    def fake_path(p: str) -> Path:
        if p == "/etc/apt/sources.list":
            return tmp_path / "absent.list"
        if p == "/etc/apt/sources.list.d":
            return sources
        return real_path(p)

    monkeypatch.setattr(images, "Path", fake_path)
    assert debian_mirror() == "http://ftp.example.org/debian"


def test_paths_find_repo_from_subfolder():
    assert LabPaths.find(REPO / "roles" / "common").repo == REPO


def test_paths_outside_repo(tmp_path: Path):
    with pytest.raises(InputError, match=r"images/rootfs\.py"):
        LabPaths.find(tmp_path)


def _role_yaml(path: str) -> dict[str, object]:
    return yaml.safe_load((REPO / path).read_text())


def test_lab_images_carry_what_the_roles_install_on_lab_nodes():
    """Every apt package the roles install on the sim lab's nodes is in its image, no more."""
    common = _role_yaml("roles/common/defaults/main.yml")
    venv = _role_yaml("roles/capturelab_venv/defaults/main.yml")
    role_packages = {
        *common["common_base_packages"],  # type: ignore[misc]
        *common["common_validation_packages"],  # type: ignore[misc]
        *venv["capturelab_venv_packages"],  # type: ignore[misc]
    }
    kafka_tasks = " ".join(
        (REPO / "roles/kafka/tasks" / f).read_text() for f in ("install.yml", "security.yml")
    )
    for arch in images.ARCHES:
        carried = {*images.NODE_PACKAGES, *LabImage(NodeImage(LabPaths(REPO), arch, "x")).packages}
        assert role_packages <= carried, (arch, role_packages - carried)
    amd64 = set(images.LAB_PACKAGES["amd64"])
    assert amd64 == {"openjdk-17-jre-headless", "python3-cryptography"}
    assert all(f"name: {p}" in kafka_tasks for p in amd64)
    everything = role_packages | amd64
    extra = {p for ps in images.LAB_PACKAGES.values() for p in ps} - everything
    assert not extra, f"LAB_PACKAGES names packages no role installs: {extra}"
    assert {*role_packages, "chrony"} <= set(images.VM_PACKAGES)  # the VM runs chrony


def test_lab_image_hash_follows_its_base_and_packages(monkeypatch: pytest.MonkeyPatch):
    base = NodeImage(LabPaths(REPO), "arm64", mirror="x")
    lab = LabImage(base)
    before = lab.hash
    assert lab.tag == f"capturelab/node:arm64-lab-{before}"
    monkeypatch.setitem(images.LAB_PACKAGES, "arm64", ("tmux",))
    assert LabImage(base).hash != before
