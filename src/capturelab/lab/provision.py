"""Running a playbook against the lab, and proving a second run changes nothing.

The PLAY RECAP is the contract: every host must be reached, nothing may fail, and on the
second run ``changed=0`` on every host (idempotence), else we say which hosts changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from capturelab.errors import CapturelabError
from capturelab.lab.process import say, venv_tool

RECAP_RE = re.compile(
    r"^(?P<host>[^\s:]+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class HostRecap:
    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int


def parse_recap(output: str) -> dict[str, HostRecap]:
    """Host -> counts from the last PLAY RECAP in ``output``."""
    text = ANSI_RE.sub("", output)
    start = text.rfind("PLAY RECAP")
    if start < 0:
        return {}
    recaps: dict[str, HostRecap] = {}
    for m in RECAP_RE.finditer(text, start):
        recaps[m["host"]] = HostRecap(
            host=m["host"],
            ok=int(m["ok"]),
            changed=int(m["changed"]),
            unreachable=int(m["unreachable"]),
            failed=int(m["failed"]),
        )
    return recaps


def run_playbook(inventory: Path, playbook: Path) -> dict[str, HostRecap]:
    """Run the playbook, streaming its output, and return its recap."""
    if not playbook.is_file():
        raise CapturelabError(f"playbook {playbook} does not exist")
    argv = [venv_tool("ansible-playbook"), "-i", str(inventory), str(playbook)]
    say(f"ansible-playbook -i {inventory} {playbook}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None  # noqa: S101 - requested above
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    rc = proc.wait()
    recap = parse_recap("".join(lines))
    bad = [r.host for r in recap.values() if r.failed or r.unreachable]
    if rc != 0 or bad:
        raise CapturelabError(
            f"{playbook} failed (exit {rc})" + (f" on {', '.join(sorted(bad))}" if bad else "")
        )
    if not recap:
        raise CapturelabError(f"{playbook}: no PLAY RECAP in the output")
    return recap


def check_idempotent(recap: dict[str, HostRecap]) -> None:
    changed = {h: r.changed for h, r in recap.items() if r.changed}
    if changed:
        detail = ", ".join(f"{h} changed={n}" for h, n in sorted(changed.items()))
        raise CapturelabError(f"not idempotent: the second run changed something ({detail})")
