"""Building the lab's base images from the pyinfra recipes in ``images/``, cached by recipe hash.

Node images (containers, amd64 and arm64):
    debootstrap rootfs (images/rootfs.py, @local) -> ``docker import`` -> customise
    (images/node.py, @docker/<container>) -> ``docker commit`` as ``capturelab/node:<arch>-<hash>``,
    also tagged ``capturelab/node:<arch>`` (what molecule platforms name).
The storage VM image:
    debootstrap rootfs with a Debian kernel (images/rootfs.py) -> customise (images/storage_vm.py,
    @chroot/<rootfs>) -> ``mkfs.ext4 -d`` into a raw disk, plus the kernel and initrd beside it,
    in ``<cache>/vm/<hash>/``.
The hash covers the recipe files and every parameter that changes the result, so an image is
rebuilt exactly when its recipe changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from capturelab.errors import CapturelabError, InputError
from capturelab.lab import cache
from capturelab.lab.paths import LabPaths
from capturelab.lab.process import output_to, run, say, succeeds, venv_tool

SUITE = "bookworm"
ARCHES = ("amd64", "arm64")
# Bumped when the build procedure in this module changes in a way the recipe files do not show.
BUILD_FORMAT = 1

NODE_PACKAGES = (
    "python3",
    "python3-apt",
    "systemd",
    "systemd-sysv",
    "dbus",
    "sudo",
    "iproute2",
    "procps",
    "ca-certificates",
)
# What the roles install with apt on the sim lab's nodes, carried by the lab's images (built on
# the node image, cached by hash) so that provisioning under emulation finds it installed. The
# roles still declare every package; molecule runs them on the bare node images, where they
# install it. tests/test_images.py keeps this in step with the roles' defaults.
LAB_PACKAGES: dict[str, tuple[str, ...]] = {
    # common (base + validation packages) and capturelab_venv, on every node
    "all": ("curl", "nftables", "less", "jq", "rsync", "iperf3", "python3-venv"),
    "amd64": ("openjdk-17-jre-headless", "python3-cryptography"),  # kafka (the gateway)
    "arm64": (),
}
VM_PACKAGES = (
    *NODE_PACKAGES,
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "udev",
    "openssh-server",
    "mdadm",
    "xfsprogs",
    # Preinstalled because apt under TCG takes minutes; the roles still declare them.
    "fio",
    *LAB_PACKAGES["all"],
    "chrony",  # common's time sync on VMs and hardware
)
VM_DISK_SIZE = "6G"
# images/rootfs.py writes it when debootstrap finished; a rootfs without it is made again.
ROOTFS_MARKER = ".capturelab-rootfs-complete"
# docker 20.10 (Debian's docker.io) accepts only CMD/ENV/... here, not STOPSIGNAL: the harness
# passes --stop-signal SIGRTMIN+3 when it runs a node (systemd's orderly shutdown signal).
NODE_IMAGE_CONFIG = (
    'CMD ["/lib/systemd/systemd"]',
    "ENV container=docker",
)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (CAPTURELAB_DEBIAN_MIRROR overrides)."""
    override = os.environ.get("CAPTURELAB_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    sources: list[Path] = [Path("/etc/apt/sources.list")]
    sources_d = Path("/etc/apt/sources.list.d")
    if sources_d.is_dir():
        sources.extend(sorted(sources_d.iterdir()))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            uris = [w for w in words if w.startswith(("http://", "https://"))]
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def recipe_hash(files: list[Path], params: dict[str, object]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": BUILD_FORMAT, **params}, sort_keys=True).encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def pyinfra_deploy(
    paths: LabPaths, target: str, deploy: str, data: dict[str, str], what: str
) -> None:
    """Run ``images/<deploy>`` against ``target`` (``@local``, ``@docker/ID``, ``@chroot/DIR``).

    Runs from images/ (so the recipes import ``debian_base``) with -vvv, so long commands such
    as debootstrap show their progress instead of a silent minute.
    """
    argv = [venv_tool("pyinfra"), "-y", "-vvv", target, deploy]
    for key, value in data.items():
        argv += ["--data", f"{key}={value}"]
    run(argv, what=what, cwd=str(paths.images))


def make_rootfs(
    paths: LabPaths, arch: str, rootfs: Path, packages: tuple[str, ...], mirror: str
) -> None:
    """A debootstrapped rootfs in ``rootfs`` (images/rootfs.py); a complete one is reused."""
    if rootfs.exists() and not (rootfs / ROOTFS_MARKER).exists():
        say(
            f"rootfs cache {rootfs}: no completion marker ({ROOTFS_MARKER}): an earlier "
            "debootstrap stopped half-way; it is made again from scratch"
        )
    data = {"arch": arch, "suite": SUITE, "mirror": mirror, "target": str(rootfs),
            "include": ",".join(packages)}  # fmt: skip
    pyinfra_deploy(paths, "@local", "rootfs.py", data, what=f"rootfs {rootfs.name}")


@dataclass
class NodeImage:
    paths: LabPaths
    arch: str
    mirror: str = field(default_factory=debian_mirror)

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise InputError(f"lab_arch: {self.arch!r} is not one of {', '.join(ARCHES)}")

    @property
    def recipe_files(self) -> list[Path]:
        return [self.paths.images / n for n in ("rootfs.py", "debian_base.py", "node.py")]

    @property
    def hash(self) -> str:
        return recipe_hash(
            self.recipe_files,
            {
                "arch": self.arch,
                "suite": SUITE,
                "packages": NODE_PACKAGES,
                "config": NODE_IMAGE_CONFIG,
            },
        )

    @property
    def tag(self) -> str:
        return f"capturelab/node:{self.arch}-{self.hash}"

    @property
    def alias(self) -> str:
        return f"capturelab/node:{self.arch}"

    def exists(self) -> bool:
        return succeeds(["docker", "image", "inspect", self.tag])

    def ensure(self) -> str:
        """Build the image unless its recipe hash is already built; return the tag."""
        if self.exists():
            say(f"node image {self.tag} is current (recipe unchanged)")
        else:
            say(f"node image {self.tag}: no image of this recipe hash; building it")
            self._build()
        run(["docker", "tag", self.tag, self.alias], what=f"tag {self.alias}", stream=False)
        return self.tag

    def _build(self) -> None:
        rootfs = self.paths.cache / "rootfs" / f"node-{self.arch}-{self.hash}"
        rootfs_tag = f"capturelab/rootfs:{self.arch}-{self.hash}"
        builder = f"capturelab-build-{self.arch}-{self.hash}"
        say(
            f"building node image {self.tag} (debootstrap {SUITE} {self.arch}; arm64 takes minutes)"
        )
        make_rootfs(self.paths, self.arch, rootfs, NODE_PACKAGES, self.mirror)
        subprocess.run(["docker", "rm", "-f", builder], capture_output=True, check=False)
        try:
            _docker_import(rootfs, rootfs_tag, NODE_IMAGE_CONFIG)
            run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    builder,
                    "--network",
                    "host",
                    rootfs_tag,
                    "sleep",
                    "infinity",
                ],
                what="start build container",
                stream=False,
            )
            pyinfra_deploy(
                self.paths,
                f"@docker/{builder}",
                "node.py",
                {"suite": SUITE, "mirror": self.mirror},
                what=f"customise node image {self.arch}",
            )
            commit = ["docker", "commit"]
            for change in NODE_IMAGE_CONFIG:
                commit += ["--change", change]
            run([*commit, builder, self.tag], what=f"commit {self.tag}", stream=False)
        finally:
            subprocess.run(["docker", "rm", "-f", builder], capture_output=True, check=False)
            subprocess.run(["docker", "rmi", rootfs_tag], capture_output=True, check=False)
        # Only a successful build discards the rootfs; a failed one is resumed from it.
        shutil.rmtree(rootfs, ignore_errors=True)
        say(f"node image {self.tag} built")


@dataclass
class LabImage:
    """The node image plus LAB_PACKAGES: what the sim lab's containers run (``make lab``)."""

    base: NodeImage

    @property
    def packages(self) -> tuple[str, ...]:
        return (*LAB_PACKAGES["all"], *LAB_PACKAGES[self.base.arch])

    @property
    def hash(self) -> str:
        return recipe_hash([], {"base": self.base.hash, "packages": self.packages})

    @property
    def tag(self) -> str:
        return f"capturelab/node:{self.base.arch}-lab-{self.hash}"

    def exists(self) -> bool:
        return succeeds(["docker", "image", "inspect", self.tag])

    def ensure(self) -> str:
        """The base image, then this one on it unless its hash is already built; the tag."""
        base = self.base.ensure()
        if self.exists():
            say(f"lab image {self.tag} is current")
            return self.tag
        say(f"lab image {self.tag}: not built yet; installing {len(self.packages)} packages")
        builder = f"capturelab-build-lab-{self.base.arch}-{self.hash}"
        subprocess.run(["docker", "rm", "-f", builder], capture_output=True, check=False)
        install = (
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"--no-install-recommends {' '.join(self.packages)} && apt-get clean"
        )
        try:
            run(["docker", "run", "-d", "--name", builder, "--network", "host", base,
                 "sleep", "infinity"], what="start lab image build container", stream=False)  # fmt: skip
            run(
                ["docker", "exec", builder, "sh", "-c", install], what=f"lab image {self.base.arch}"
            )
            commit = ["docker", "commit"]
            for change in NODE_IMAGE_CONFIG:
                commit += ["--change", change]
            run([*commit, builder, self.tag], what=f"commit {self.tag}", stream=False)
        finally:
            subprocess.run(["docker", "rm", "-f", builder], capture_output=True, check=False)
        return self.tag


def _docker_import(rootfs: Path, tag: str, changes: tuple[str, ...]) -> None:
    argv = ["docker", "import"]
    for change in changes:
        argv += ["--change", change]
    argv += ["-", tag]
    say(f"docker import {rootfs} as {tag}")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        imported = subprocess.run(argv, stdin=tar.stdout, capture_output=True, check=False)
    finally:
        if tar.stdout:
            tar.stdout.close()
        tar_rc = tar.wait()
    if tar_rc != 0 or imported.returncode != 0:
        raise CapturelabError(
            f"docker import of {rootfs} failed (tar exit {tar_rc}, import exit "
            f"{imported.returncode}): {imported.stderr.decode(errors='replace').strip()}"
        )


@dataclass(frozen=True)
class VmArtifacts:
    disk: Path
    kernel: Path
    initrd: Path


@dataclass
class StorageVmImage:
    paths: LabPaths
    mirror: str = field(default_factory=debian_mirror)

    @property
    def recipe_files(self) -> list[Path]:
        return [self.paths.images / n for n in ("rootfs.py", "debian_base.py", "storage_vm.py")]

    @property
    def hash(self) -> str:
        return recipe_hash(
            self.recipe_files,
            {"arch": "amd64", "suite": SUITE, "packages": VM_PACKAGES, "disk": VM_DISK_SIZE},
        )

    @property
    def directory(self) -> Path:
        return self.paths.cache / "vm" / f"storage-{self.hash}"

    def artifacts(self) -> VmArtifacts:
        d = self.directory
        return VmArtifacts(disk=d / "disk.raw", kernel=d / "vmlinuz", initrd=d / "initrd.img")

    def exists(self) -> bool:
        return cache.problem(self.directory) is None

    def ensure(self) -> VmArtifacts:
        """The image, verified against its manifest; built again when absent or damaged."""
        cache.ensure(self.directory, "storage VM image", self._build)
        for old in self.directory.parent.glob("storage-*"):
            if old != self.directory and not old.name.endswith(".partial"):
                shutil.rmtree(old, ignore_errors=True)  # older recipes' images (about 1 GB each)
                say(f"removed the outdated VM image {old.name}")
        return self.artifacts()

    def _build(self, tmp: Path) -> None:
        rootfs = self.paths.cache / "rootfs" / f"vm-{self.hash}"
        say(f"building storage VM image {self.directory.name} (debootstrap + Debian kernel)")
        make_rootfs(self.paths, "amd64", rootfs, VM_PACKAGES, self.mirror)
        pyinfra_deploy(
            self.paths,
            f"@chroot{rootfs}",
            "storage_vm.py",
            {"suite": SUITE, "mirror": self.mirror},
            what="customise storage VM rootfs",
        )
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise CapturelabError(f"storage VM rootfs {rootfs} has no kernel in /boot")
        # The initrd of that kernel version (not update-initramfs's .dpkg-bak of an older one).
        initrd = rootfs / "boot" / kernels[-1].name.replace("vmlinuz-", "initrd.img-", 1)
        if not initrd.is_file():
            raise CapturelabError(f"storage VM rootfs {rootfs} has no {initrd.name} in /boot")
        shutil.copy2(kernels[-1], tmp / "vmlinuz")
        shutil.copy2(initrd, tmp / "initrd.img")
        (rootfs / ROOTFS_MARKER).unlink(missing_ok=True)
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "capturelab-root",
                "-d",
                str(rootfs),
                str(tmp / "disk.raw"),
                VM_DISK_SIZE,
            ],
            what="storage VM root disk (mkfs.ext4 -d)",
            stream=False,
        )
        shutil.rmtree(rootfs, ignore_errors=True)
        say(f"storage VM image built in {tmp}")


@dataclass(frozen=True)
class BuiltImages:
    tags: dict[str, str]  # arch -> node image tag
    vm: VmArtifacts | None


def build_all(paths: LabPaths, arches: list[str], vm: bool, lab: bool = False) -> BuiltImages:
    """Every image asked for; the arm64 one beside the others when more than one is missing.

    The arm64 rootfs runs dpkg under qemu-user (minutes, one core) while the amd64 image and the
    VM image mostly wait on downloads and disk, so two lanes halve a fresh machine's wait:
    lane 1 the arm64 node image, lane 2 the amd64 node image then the VM image. Each lane's
    command output goes to ``.lab/logs/images-<lane>.log`` (progress lines still print); a
    failure names its lane and ends with its log's last lines. Cached images are only verified.
    ``lab``: the lab images (node image + LAB_PACKAGES) instead of the bare node images.
    """
    bare = {arch: NodeImage(paths, arch) for arch in arches}
    nodes: dict[str, NodeImage | LabImage] = (
        {a: LabImage(b) for a, b in bare.items()} if lab else dict(bare)
    )
    vm_image = StorageVmImage(paths) if vm else None
    slow = [a for a in arches if a == "arm64" and not nodes[a].exists()]  # minutes under qemu
    rest = [a for a in arches if a not in slow]
    tags: dict[str, str] = {}
    artifacts: list[VmArtifacts] = []

    def lane_rest() -> None:
        for arch in rest:
            tags[arch] = nodes[arch].ensure()
        if vm_image is not None:
            artifacts.append(vm_image.ensure())

    # Two lanes only pay when the arm64 image and something else both need a build.
    others = any(not nodes[a].exists() for a in rest) or (
        vm_image is not None and not vm_image.exists()
    )
    if slow and others:
        say("building images in two lanes: arm64 | " + ", ".join(rest + ["VM"] * vm))
        lanes = {"arm64": lambda: tags.__setitem__("arm64", nodes["arm64"].ensure()),
                 "rest": lane_rest}  # fmt: skip
        _run_lanes(paths, lanes)
    else:
        for arch in slow:
            tags[arch] = nodes[arch].ensure()
        lane_rest()
    return BuiltImages(tags={a: tags[a] for a in arches}, vm=artifacts[0] if artifacts else None)


def _run_lanes(paths: LabPaths, lanes: dict[str, Callable[[], None]]) -> None:
    """Run each lane in a thread of its own, its output in a log; raise the first failure."""

    def in_log(name: str, lane: Callable[[], None]) -> None:
        log = paths.state / "logs" / f"images-{name}.log"
        log.unlink(missing_ok=True)
        say(f"images lane {name}: command output in {log}")
        with output_to(log):
            lane()

    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        futures = {name: pool.submit(in_log, name, lane) for name, lane in lanes.items()}
    for name, future in futures.items():
        error = future.exception()
        if error is not None:
            raise CapturelabError(f"images lane {name}: {error}") from error
