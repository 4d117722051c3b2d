"""Running a playbook against the lab, and proving a second run changes nothing.

The PLAY RECAP is the contract: every host must be reached, nothing may fail, and on the
second run ``changed=0`` on every host (idempotence), else we say which hosts changed.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
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


def run_playbook(
    inventory: Path, playbook: Path, limit: str | None = None, log: Path | None = None
) -> dict[str, HostRecap]:
    """Run the playbook, streaming its output (into ``log`` when given), and return its recap."""
    if not playbook.is_file():
        raise CapturelabError(f"playbook {playbook} does not exist")
    argv = [venv_tool("ansible-playbook"), "-i", str(inventory), str(playbook)]
    if limit:
        argv += ["--limit", limit]
    where = f" --limit {limit}" if limit else ""
    say(
        f"ansible-playbook -i {inventory} {playbook}{where}"
        + (f" (output in {log})" if log else "")
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None  # noqa: S101 - requested above
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w", buffering=1)) if log else sys.stdout  # lines
        for line in proc.stdout:
            out.write(line)
            lines.append(line)
    rc = proc.wait()
    recap = parse_recap("".join(lines))
    bad = [r.host for r in recap.values() if r.failed or r.unreachable]
    if rc != 0 or bad:
        raise CapturelabError(
            f"{playbook}{where} failed (exit {rc})"
            + (f" on {', '.join(sorted(bad))}" if bad else "")
            + (f"; its output is in {log}" if log else "")
        )
    if not recap:
        raise CapturelabError(f"{playbook}{where}: no PLAY RECAP in the output")
    return recap


def disjoint_tiers(tiers: dict[str, list[str]]) -> bool:
    """True when no host is in two tier groups (then each tier can run on its own)."""
    hosts = [h for members in tiers.values() for h in members]
    return len(hosts) == len(set(hosts))


def run_tiers_side_by_side(
    inventory: Path, playbook: Path, tiers: dict[str, list[str]], logs: Path
) -> dict[str, HostRecap]:
    """One ``ansible-playbook --limit <tier>`` per tier at once; the recaps merged.

    Every play still runs in its order on each host (common first, then its tier's roles);
    what changes is that the tiers' plays overlap instead of waiting for each other, since
    no provisioning task of one tier reaches another tier's hosts (each is configured from
    the inventory alone). Each tier's output goes to ``logs/<tier>.log`` and is printed whole
    when it ends. The first failure is raised after every tier finished.
    """
    if not disjoint_tiers(tiers):
        raise CapturelabError("a host is in two tier groups: provision the tiers in one run")
    logs.mkdir(parents=True, exist_ok=True)
    printing = threading.Lock()

    def one(tier: str) -> dict[str, HostRecap]:
        log = logs / f"{tier}.log"
        try:
            return run_playbook(inventory, playbook, limit=tier, log=log)
        finally:
            with printing:
                print(f"== provision {tier} ({', '.join(tiers[tier])}): {log}", flush=True)
                sys.stdout.write(log.read_text(errors="replace") if log.exists() else "")
                sys.stdout.flush()

    active = [t for t, members in tiers.items() if members]
    with ThreadPoolExecutor(max_workers=len(active) or 1) as pool:
        futures = {t: pool.submit(one, t) for t in active}
    merged: dict[str, HostRecap] = {}
    errors = [f.exception() for f in futures.values() if f.exception() is not None]
    if errors:
        raise CapturelabError("; ".join(str(e) for e in errors))
    for future in futures.values():
        merged.update(future.result())
    return merged


def check_idempotent(recap: dict[str, HostRecap]) -> None:
    changed = {h: r.changed for h, r in recap.items() if r.changed}
    if changed:
        detail = ", ".join(f"{h} changed={n}" for h, n in sorted(changed.items()))
        raise CapturelabError(f"not idempotent: the second run changed something ({detail})")
