"""``capturelab lab ...``: bring the sim lab up and down, build its images, show its state."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from capturelab.errors import HostEnvironmentError
from capturelab.lab import card, containers, engine, wheelhouse
from capturelab.lab.images import ARCHES, StorageVmImage, build_all, pyinfra_deploy
from capturelab.lab.inventory import TIER_GROUPS, LabInventory, LabNode, load_inventory
from capturelab.lab.paths import LabPaths
from capturelab.lab.process import say
from capturelab.lab.provision import (
    HostRecap,
    check_idempotent,
    disjoint_tiers,
    run_playbook,
    run_tiers_side_by_side,
)
from capturelab.lab.vm import LabVm, stop_all

DEFAULT_INVENTORY = Path("inventory/sim")


def _inventory(args: argparse.Namespace, paths: LabPaths) -> LabInventory:
    path = Path(args.inventory)
    if not path.is_absolute():
        path = paths.repo / path
    return load_inventory(path)


def cmd_engine(args: argparse.Namespace) -> int:
    paths = LabPaths.find()
    engine.ensure_all(paths.state, need_arm64=args.arm64)
    say("host tools and docker engine ready")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    paths = LabPaths.find()
    arches: list[str] = args.arch or list(ARCHES)
    engine.ensure_all(paths.state, need_arm64="arm64" in arches)
    built = build_all(paths, arches, vm=args.vm)
    for arch in arches:
        print(built.tags[arch])
    if built.vm is not None:
        print(built.vm.disk)
    return 0


def bring_up(paths: LabPaths, inv: LabInventory) -> None:
    engine.ensure_all(paths.state, need_arm64="arm64" in inv.arches())
    built = build_all(paths, sorted(inv.arches()), vm=bool(inv.vms), lab=True)
    images, vm_image = built.tags, built.vm
    containers.ensure_network(inv)
    for node in inv.containers:
        containers.start_container(inv, node, images[node.arch])
    for node in inv.vms:
        assert vm_image is not None  # noqa: S101 - built above whenever a VM exists
        LabVm(paths, node).start(vm_image)
    for node in inv.containers:
        containers.wait_booted(node)
    for node in inv.vms:
        LabVm(paths, node).wait_ssh()


def tear_down(paths: LabPaths) -> list[str]:
    removed = [f"vm {name}" for name in stop_all(paths.state)]
    removed += containers.remove_all()
    if paths.state.exists():
        shutil.rmtree(paths.state, ignore_errors=True)
        removed.append(f"state {paths.state}")
    return removed


def cmd_up(args: argparse.Namespace) -> int:
    paths = LabPaths.find()
    inv = _inventory(args, paths)
    try:
        bring_up(paths, inv)
    except BaseException:
        if not args.keep_on_failure:
            say("lab up failed: removing what it created (use --keep-on-failure to inspect)")
            tear_down(paths)
        raise
    say(f"sim lab up: {len(inv.containers)} containers, {len(inv.vms)} VM(s)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    paths = LabPaths.find()
    removed = tear_down(paths)
    for item in removed:
        say(f"removed {item}")
    if args.purge_images:
        out = containers.remove_images()
        removed += out
        cache = paths.cache
        if cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
            say(f"removed cache {cache}")
    if not removed:
        say("nothing of the lab was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    paths = LabPaths.find()
    inv = _inventory(args, paths)
    rows = []
    for node in inv.nodes:
        if node.platform == "container":
            state = containers.container_state(node) or "absent"
        else:
            state = "running" if LabVm(paths, node).pid() is not None else "absent"
        rows.append(
            {
                "node": node.name,
                "platform": node.platform,
                "arch": node.arch,
                "groups": list(node.groups),
                "state": state,
            }
        )
    print(json.dumps(rows, indent=2))
    return 0 if all(r["state"] == "running" for r in rows) else 1


def cmd_vm_up(args: argparse.Namespace) -> int:
    """Boot one storage VM outside the lab (molecule's delegated driver); print its connection."""
    paths = LabPaths.find()
    state = Path(args.state).resolve()
    node = LabNode(
        name=args.name,
        platform="vm",
        arch="amd64",
        groups=("storage",),
        ssh_port=args.port,
        memory_mb=args.memory_mb,
        nvme_drives=args.drives,
        nvme_size=args.drive_size,
    )
    engine.ensure_all(paths.state, need_arm64=False)
    vm = LabVm(paths, node, state)
    try:
        vm.start(StorageVmImage(paths).ensure())
        vm.wait_ssh()
    except BaseException:
        stop_all(state)
        raise
    print(
        json.dumps(
            {
                "instance": args.name,
                "address": "127.0.0.1",
                "user": "root",
                "port": args.port,
                "identity_file": str(vm.ssh_key),
            }
        )
    )
    return 0


def cmd_vm_down(args: argparse.Namespace) -> int:
    state = Path(args.state).resolve()
    for name in stop_all(state):
        say(f"stopped vm {name}")
    vm_dir = state / "vm"
    if vm_dir.exists():
        shutil.rmtree(vm_dir, ignore_errors=True)
    return 0


def cmd_wheelhouse(args: argparse.Namespace) -> int:
    out = wheelhouse.build(LabPaths.find(), args.arch, args.python, tuple(args.extra or ()))
    print(out)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    paths = LabPaths.find()
    image = Path(args.image).resolve()
    card.card_partitions(image)  # a clear error before anything runs
    wh = Path(args.wheelhouse) if args.wheelhouse else wheelhouse.build(paths, "arm64", "3.11", ())
    data = {"image": str(image), "hostname": args.hostname, "ssh_key": str(Path(args.ssh_key).resolve()),
            "wheelhouse": str(Path(wh).resolve()), "admin_user": args.admin_user}  # fmt: skip
    for name in ("address", "gateway", "dns"):
        if getattr(args, name):
            data[name] = getattr(args, name)
    pyinfra_deploy(paths, "@local", "pi5/card.py", data, what=f"prepare the card {image.name}")
    say(
        f"{image}: ready for {args.hostname} (no consent or secret on it: the collector role adds them)"
    )
    return 0


def cmd_card_test_image(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="capturelab-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        if args.rootfs:
            rootfs = Path(args.rootfs)
        else:
            say(f"exporting the root filesystem of {args.from_image}")
            export_image_rootfs(args.from_image, rootfs)
        boot, root = card.build_test_card(rootfs, out)
    say(f"{out}: boot at {boot.offset} ({boot.size >> 20} MiB FAT), root at {root.offset} "
        f"({root.size >> 20} MiB ext4)")  # fmt: skip
    return 0


def export_image_rootfs(image: str, dest: Path) -> None:
    """A docker image's filesystem, unpacked into ``dest`` (docker create + export + tar)."""
    cid = subprocess.run(["docker", "create", image], capture_output=True, text=True, check=False)
    if cid.returncode != 0:
        raise HostEnvironmentError(f"docker create {image}: {cid.stderr.strip()} (make images)")
    try:
        export = subprocess.Popen(["docker", "export", cid.stdout.strip()], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=export.stdout, check=True)
        export.wait()
    finally:
        subprocess.run(["docker", "rm", cid.stdout.strip()], capture_output=True, check=False)


def _provision_once(args: argparse.Namespace, run: int) -> dict[str, HostRecap]:
    inventory, playbook = Path(args.inventory), Path(args.playbook)
    if not args.tiers_side_by_side:
        return run_playbook(inventory, playbook)
    paths = LabPaths.find()
    inv = _inventory(args, paths)
    tiers = {t: [n.name for n in inv.nodes if t in n.groups] for t in TIER_GROUPS}
    if not disjoint_tiers(tiers):
        say("a host is in two tier groups: the tiers are provisioned in one run")
        return run_playbook(inventory, playbook)
    return run_tiers_side_by_side(
        inventory, playbook, tiers, paths.state / "logs" / f"provision-{run}"
    )


def cmd_provision(args: argparse.Namespace) -> int:
    first = _provision_once(args, 2 if args.expect_no_change else 1)
    if args.expect_no_change:
        check_idempotent(first)
        say(f"changed=0 on all {len(first)} hosts (idempotent)")
        return 0
    say(f"first run: {sum(r.changed for r in first.values())} change(s) on {len(first)} host(s)")
    if args.twice:
        second = _provision_once(args, 2)
        check_idempotent(second)
        say(f"second run: changed=0 on all {len(second)} hosts (idempotent)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser("lab", help="the sim lab: containers and a VM on this machine")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    def with_inventory(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--inventory",
            "-i",
            default=str(DEFAULT_INVENTORY),
            help="the sim inventory (default: inventory/sim)",
        )
        return p

    p = lab_sub.add_parser("engine", help="install/start the container engine and qemu if missing")
    p.add_argument("--arm64", action="store_true", help="also require arm64 emulation (binfmt)")
    p.set_defaults(handler=cmd_engine)

    p = lab_sub.add_parser("images", help="build the node (and VM) images whose recipe changed")
    p.add_argument("--arch", action="append", choices=ARCHES, help="node image arch (repeatable)")
    p.add_argument("--vm", action="store_true", help="also build the storage VM image")
    p.set_defaults(handler=cmd_images)

    p = with_inventory(lab_sub.add_parser("up", help="start every node of the sim inventory"))
    p.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="leave what was started when a step fails (default: remove it)",
    )
    p.set_defaults(handler=cmd_up)

    p = lab_sub.add_parser("down", help="remove every container, network, VM and state file")
    p.add_argument(
        "--purge-images", action="store_true", help="also remove built images and caches"
    )
    p.set_defaults(handler=cmd_down)

    p = with_inventory(
        lab_sub.add_parser("provision", help="run a playbook; --twice proves idempotence")
    )
    p.add_argument("--playbook", default="playbooks/provision.yml")
    p.add_argument(
        "--twice", action="store_true", help="run again and require changed=0 everywhere"
    )
    p.add_argument(
        "--expect-no-change",
        action="store_true",
        help="run once and require changed=0 everywhere (the second run of --twice, alone)",
    )
    p.add_argument(
        "--tiers-side-by-side",
        action="store_true",
        help="one ansible-playbook --limit <tier> per tier group at once (hosts in one tier each)",
    )
    p.set_defaults(handler=cmd_provision)

    p = lab_sub.add_parser("vm", help="one storage VM outside the lab (molecule scenarios)")
    vm_sub = p.add_subparsers(dest="vm_command", metavar="ACTION", required=True)
    up = vm_sub.add_parser("up", help="boot it (8 emulated NVMe drives by default), wait for SSH")
    up.add_argument("--name", required=True)
    up.add_argument("--state", required=True, help="folder for its disks, key and pidfile")
    up.add_argument("--port", type=int, required=True, help="SSH port on 127.0.0.1")
    up.add_argument("--drives", type=int, default=8)
    up.add_argument("--drive-size", default="1G")
    up.add_argument("--memory-mb", type=int, default=2048)
    up.set_defaults(handler=cmd_vm_up)
    down = vm_sub.add_parser("down", help="stop every VM under --state and delete its disks")
    down.add_argument("--state", required=True)
    down.set_defaults(handler=cmd_vm_down)

    p = lab_sub.add_parser(
        "wheelhouse", help="capturelab + pinned deps as wheels for one arch (cached; no compiling)"
    )
    p.add_argument("--arch", required=True, choices=sorted(wheelhouse.PLATFORMS))
    p.add_argument("--python", default=wheelhouse.DEFAULT_PYTHON)
    p.add_argument("--extra", action="append", help="an optional-dependencies group to include")
    p.set_defaults(handler=cmd_wheelhouse)

    _register_card(lab_sub)

    p = with_inventory(lab_sub.add_parser("status", help="each node's state as JSON"))
    p.set_defaults(handler=cmd_status)


def _register_card(lab_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = lab_sub.add_parser("card", help="turn a Raspberry Pi OS image file into a collector card")
    p.add_argument("--image", required=True, help="the .img file (edited in place)")
    p.add_argument("--hostname", required=True)
    p.add_argument("--ssh-key", required=True, help="the admin's SSH public key file")
    p.add_argument("--admin-user", default="capturelab-admin")
    p.add_argument("--wheelhouse", help="an arm64 wheelhouse (default: build/reuse the cached one)")
    p.add_argument("--address", help="static IPv4/prefix for eth0 (default DHCP)")
    p.add_argument("--gateway")
    p.add_argument("--dns", help="comma-separated resolvers")
    p.set_defaults(handler=cmd_card)

    p = lab_sub.add_parser(
        "card-test-image", help="a small two-partition card from a Debian arm64 rootfs"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--rootfs", help="a root filesystem folder (default: the arm64 node image's)")
    p.add_argument("--from-image", default="capturelab/node:arm64")
    p.set_defaults(handler=cmd_card_test_image)
