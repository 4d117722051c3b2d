#!/usr/bin/python
"""Look at the member devices, the md array and its filesystem; decide what may be done.

Pure inspection (changes nothing, safe in check mode). The role acts on ``action``:

- array: ``present`` (the md device is active with exactly these members, level and chunk),
  ``assemble`` (not active, but every member carries this array's superblock), ``create``
  (every member is blank), or ``conflict`` with ``problems`` naming each device and what it carries.
- filesystem: ``present`` (XFS aligned as intended), ``create`` (no signature on the array), or
  ``conflict`` (another filesystem, or XFS with other stripe geometry).
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: storage_array_probe
short_description: Inspect md RAID members, the array and its filesystem (no changes).
options:
  what:
    description: array or filesystem.
    type: str
    choices: [array, filesystem]
    required: true
  devices:
    description: Member devices (by-id paths on real hardware).
    type: list
    elements: str
    required: true
  md_device:
    description: The md device, e.g. /dev/md0.
    type: str
    required: true
  level:
    description: RAID level.
    type: int
    default: 0
  chunk_kib:
    description: Chunk size in KiB.
    type: int
    required: true
"""

RETURN = r"""
action:
  description: present, assemble, create or conflict.
  type: str
  returned: always
problems:
  description: One line per device or setting that stops the role.
  type: list
  returned: always
members:
  description: Canonical member paths, in the given order.
  type: list
  returned: always
"""


def _run(module: AnsibleModule, *argv: str) -> tuple[int, str, str]:
    rc, out, err = module.run_command(list(argv))
    return rc, out, err


def _signatures(module: AnsibleModule, dev: str) -> list[str]:
    rc, out, err = _run(module, "wipefs", "--no-act", "--json", dev)
    if rc != 0:
        module.fail_json(msg=f"wipefs --no-act {dev} failed: {err.strip()}")
    if not out.strip():
        return []
    sigs = json.loads(out).get("signatures", [])
    return [f"{s.get('type')} at offset {s.get('offset')}" for s in sigs]


def _examine(module: AnsibleModule, dev: str) -> dict[str, str]:
    rc, out, _ = _run(module, "mdadm", "--examine", "--export", dev)
    if rc != 0:
        return {}
    info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    rc, out, _ = _run(module, "mdadm", "--examine", dev)
    match = re.search(r"Chunk Size\s*:\s*(\d+)K", out)
    if match:
        info["CHUNK_KIB"] = match.group(1)
    return info


def _holders(dev: str) -> list[str]:
    holders = Path("/sys/class/block") / Path(dev).resolve().name / "holders"
    return sorted(h.name for h in holders.iterdir()) if holders.is_dir() else []


def _sysfs(md_name: str, leaf: str) -> str:
    try:
        return (Path("/sys/block") / md_name / "md" / leaf).read_text().strip()
    except OSError:
        return ""


def _active_array(md_device: str) -> dict[str, object] | None:
    real = Path(md_device).resolve()
    if not real.exists() or not _sysfs(real.name, "level"):
        return None
    slaves = Path("/sys/block") / real.name / "slaves"
    members = sorted(f"/dev/{s.name}" for s in slaves.iterdir()) if slaves.is_dir() else []
    chunk = _sysfs(real.name, "chunk_size")
    return {
        "name": real.name,
        "level": _sysfs(real.name, "level"),
        "chunk_kib": int(chunk) // 1024 if chunk.isdigit() else 0,
        "members": members,
        "state": _sysfs(real.name, "array_state"),
    }


def _members(devices: list[str]) -> tuple[list[str], list[str]]:
    """Canonical member paths, and a problem per device that is missing or not a block device."""
    problems: list[str] = []
    members: list[str] = []
    for dev in devices:
        try:
            mode = Path(dev).stat().st_mode
        except OSError:
            problems.append(f"storage_array_devices: {dev} does not exist")
            continue
        if not stat.S_ISBLK(mode):
            problems.append(f"storage_array_devices: {dev} is not a block device")
            continue
        members.append(str(Path(dev).resolve()))
    if len(set(members)) != len(members):
        problems.append("storage_array_devices: two entries name the same disk")
    return members, problems


def probe_array(module: AnsibleModule) -> dict[str, object]:
    p = module.params
    members, problems = _members(p["devices"])
    if problems:
        return {"action": "conflict", "problems": problems, "members": members}

    want_level = f"raid{p['level']}"
    active = _active_array(p["md_device"])
    if active is not None:
        if (
            active["level"] == want_level
            and active["chunk_kib"] == p["chunk_kib"]
            and active["members"] == sorted(members)
        ):
            return {"action": "present", "problems": [], "members": members, "array": active}
        return {
            "action": "conflict",
            "members": members,
            "array": active,
            "problems": [
                f"{p['md_device']} is active as {active['level']}, chunk {active['chunk_kib']} KiB, "
                f"members {', '.join(active['members'])}; wanted {want_level}, chunk "
                f"{p['chunk_kib']} KiB, members {', '.join(sorted(members))}"
            ],
        }

    sigs = {m: _signatures(module, m) for m in members}
    if not any(sigs.values()):
        return {"action": "create", "problems": [], "members": members}

    exams = {m: _examine(module, m) for m in members}
    uuids = {e.get("MD_UUID") for e in exams.values()}
    ours = (
        len(uuids) == 1
        and None not in uuids
        and all(
            e.get("MD_LEVEL") == want_level
            and e.get("MD_DEVICES") == str(len(members))
            and e.get("CHUNK_KIB") == str(p["chunk_kib"])
            for e in exams.values()
        )
        and all(not _holders(m) for m in members)
    )
    if ours:
        return {"action": "assemble", "problems": [], "members": members}
    for m in members:
        held = _holders(m)
        if held:
            problems.append(
                f"{m} is in use by {', '.join(held)} (an active array: stop it, or set "
                f"storage_array_md_device to /dev/{held[0]} if it is this array)"
            )
        elif sigs[m]:
            what = "; ".join(sigs[m])
            md = exams[m]
            if md:
                what += (
                    f" (md array {md.get('MD_UUID')}, {md.get('MD_LEVEL')}, "
                    f"{md.get('MD_DEVICES')} devices, chunk {md.get('CHUNK_KIB', '?')} KiB)"
                )
            problems.append(f"{m} carries {what}")
    return {"action": "conflict", "problems": problems, "members": members}


def probe_filesystem(module: AnsibleModule) -> dict[str, object]:
    p = module.params
    md = p["md_device"]
    rc, out, _ = _run(module, "blkid", "-p", "-o", "export", md)
    info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line) if rc == 0 else {}
    fstype = info.get("TYPE", "")
    if not fstype:
        return {"action": "create", "problems": [], "fstype": ""}
    if fstype != "xfs":
        return {
            "action": "conflict",
            "fstype": fstype,
            "problems": [f"{md} carries a {fstype} filesystem, not the XFS this role makes"],
        }
    rc, out, err = _run(module, "xfs_info", md)
    if rc != 0:
        module.fail_json(msg=f"xfs_info {md} failed: {err.strip()}")
    bsize = re.search(r"^data\s+=\s+bsize=(\d+)", out, re.MULTILINE)
    stripe = re.search(r"sunit=(\d+)\s+swidth=(\d+) blks", out)
    if not bsize or not stripe:
        module.fail_json(msg=f"cannot read the geometry from xfs_info {md}: {out}")
    block = int(bsize.group(1))
    sunit_bytes = int(stripe.group(1)) * block
    swidth_bytes = int(stripe.group(2)) * block
    want_su = p["chunk_kib"] * 1024
    want_sw = want_su * len(p["devices"])
    geometry = {"bsize": block, "sunit_bytes": sunit_bytes, "swidth_bytes": swidth_bytes}
    if (sunit_bytes, swidth_bytes) != (want_su, want_sw):
        return {
            "action": "conflict",
            "fstype": fstype,
            "geometry": geometry,
            "problems": [
                f"{md}: XFS stripe unit {sunit_bytes} B and width {swidth_bytes} B, wanted "
                f"{want_su} B and {want_sw} B (chunk x {len(p['devices'])} members)"
            ],
        }
    return {
        "action": "present",
        "problems": [],
        "fstype": fstype,
        "uuid": info.get("UUID", ""),
        "geometry": geometry,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "what": {"type": "str", "required": True, "choices": ["array", "filesystem"]},
            "devices": {"type": "list", "elements": "str", "required": True},
            "md_device": {"type": "str", "required": True},
            "level": {"type": "int", "default": 0},
            "chunk_kib": {"type": "int", "required": True},
        },
        supports_check_mode=True,
    )
    result = probe_array(module) if module.params["what"] == "array" else probe_filesystem(module)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
