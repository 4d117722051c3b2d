"""A fresh machine builds the arm64 image beside the others; cached images are only verified."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from capturelab.errors import CapturelabError
from capturelab.lab.images import NodeImage, StorageVmImage, VmArtifacts, build_all
from capturelab.lab.paths import LabPaths
from capturelab.lab.process import output_to, run


class FakeBuilds:
    """NodeImage/StorageVmImage with builds that must overlap: both wait at one barrier."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, built: set[str], fail: str = "") -> None:
        self.built, self.fail = built, fail
        self.barrier = threading.Barrier(2, timeout=10)
        self.order: list[str] = []
        fake = self

        def node_exists(image: NodeImage) -> bool:
            return image.arch in fake.built

        def node_ensure(image: NodeImage) -> str:
            fake.build(image.arch)
            return f"capturelab/node:{image.arch}-test"

        def vm_exists(image: StorageVmImage) -> bool:
            return "vm" in fake.built

        def vm_ensure(image: StorageVmImage) -> VmArtifacts:
            fake.build("vm")
            return VmArtifacts(Path("disk.raw"), Path("vmlinuz"), Path("initrd.img"))

        monkeypatch.setattr(NodeImage, "exists", node_exists)
        monkeypatch.setattr(NodeImage, "ensure", node_ensure)
        monkeypatch.setattr(StorageVmImage, "exists", vm_exists)
        monkeypatch.setattr(StorageVmImage, "ensure", vm_ensure)

    def build(self, name: str) -> None:
        if name in self.built:
            self.order.append(f"{name} verified")
            return
        run([sys.executable, "-c", f"print('building {name}')"], what=f"build {name}")
        if name in ("arm64", "amd64"):
            self.barrier.wait()  # a sequential build never gets past this
        if name == self.fail:
            raise CapturelabError(f"{name} broke")
        self.order.append(name)


def test_a_fresh_machine_builds_arm64_beside_amd64_and_the_vm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = FakeBuilds(monkeypatch, built=set())
    paths = LabPaths(tmp_path)
    got = build_all(paths, ["amd64", "arm64"], vm=True)
    assert got.tags == {
        "amd64": "capturelab/node:amd64-test",
        "arm64": "capturelab/node:arm64-test",
    }
    assert got.vm is not None
    assert fake.order.index("amd64") < fake.order.index("vm")  # lane 2 in order
    assert "building arm64" in (paths.state / "logs" / "images-arm64.log").read_text()
    assert "building vm" in (paths.state / "logs" / "images-rest.log").read_text()


def test_cached_images_are_verified_in_order_without_lanes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = FakeBuilds(monkeypatch, built={"amd64", "arm64", "vm"})
    build_all(LabPaths(tmp_path), ["amd64", "arm64"], vm=True)
    assert fake.order == ["amd64 verified", "arm64 verified", "vm verified"]
    assert not (tmp_path / ".lab" / "logs").exists()


def test_a_failed_lane_is_named_with_the_end_of_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    FakeBuilds(monkeypatch, built=set(), fail="arm64")
    with pytest.raises(CapturelabError, match="images lane arm64: arm64 broke"):
        build_all(LabPaths(tmp_path), ["amd64", "arm64"], vm=False)


def test_streamed_output_goes_to_the_lane_log_and_a_failure_quotes_it(tmp_path: Path):
    log = tmp_path / "lane.log"
    with output_to(log), pytest.raises(CapturelabError) as err:
        run([sys.executable, "-c", "print('step 1'); raise SystemExit(3)"], what="a step")
    assert "step 1" in log.read_text()
    assert "failed (exit 3)" in str(err.value)
    assert f"(the end of {log})" in str(err.value) and "step 1" in str(err.value)
