"""Erasure on request and retention: whole files go, and a tombstone remembers the erasure.

An erasure request (from a consent revocation on the control topic, or ``capturelab sink erase``)
removes every segment, index entry and quarantined frame of one pseudonym. The tombstone is
written *first* (state ``erasing``) and completed after the files are gone, so a crash in between
finishes the job on the next start; while it exists, batches of that pseudonym captured before
the erasure time (redeliveries, frames still in flight) are discarded, not stored again.
Retention removes hour files older than the configured number of days.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from capturelab.durable import fsync_dir, write_atomic
from capturelab.errors import InputError
from capturelab.sink import grants
from capturelab.sink import index as idx
from capturelab.sink.layout import Layout, check_pseudonym

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tombstone:
    pseudonym: str
    at: datetime  # events captured up to this instant are erased
    reason: str
    state: str  # "erasing" | "erased"
    erased_at: str = ""
    files_removed: int = 0
    batches_removed: int = 0
    events_removed: int = 0

    def to_json(self) -> bytes:
        data: dict[str, Any] = asdict(self)
        data["at"] = self.at.isoformat()
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @classmethod
    def from_file(cls, path: Path) -> Tombstone:
        try:
            data = json.loads(path.read_text())
            return cls(
                pseudonym=check_pseudonym(str(data["pseudonym"])),
                at=datetime.fromisoformat(str(data["at"])),
                reason=str(data.get("reason", "")),
                state=str(data["state"]),
                erased_at=str(data.get("erased_at", "")),
                files_removed=int(data.get("files_removed", 0)),
                batches_removed=int(data.get("batches_removed", 0)),
                events_removed=int(data.get("events_removed", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a valid tombstone ({exc})") from None


class Tombstones:
    """The erased pseudonyms, loaded from ``<root>/tombstones``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.by_pseudonym: dict[str, Tombstone] = {}
        layout.tombstones.mkdir(parents=True, exist_ok=True)
        for path in sorted(layout.tombstones.glob("*.json")):
            stone = Tombstone.from_file(path)
            self.by_pseudonym[stone.pseudonym] = stone

    def path(self, pseudonym: str) -> Path:
        return self.layout.tombstones / f"{check_pseudonym(pseudonym)}.json"

    def erased(self, pseudonym: str, wall_ns: int) -> bool:
        stone = self.by_pseudonym.get(pseudonym)
        return stone is not None and wall_ns <= int(stone.at.timestamp() * 1e9)

    def unfinished(self) -> list[Tombstone]:
        return [t for t in self.by_pseudonym.values() if t.state != "erased"]

    def erase(self, pseudonym: str, at: datetime, reason: str) -> Tombstone:
        """Remove every stored record of ``pseudonym``; the caller closes its open files first."""
        if at.tzinfo is None:
            raise InputError("erasure time must carry a time zone")
        previous = self.by_pseudonym.get(pseudonym)
        if previous is not None and previous.at > at:
            at = previous.at  # an erasure never shrinks
        stone = Tombstone(check_pseudonym(pseudonym), at, reason, "erasing")
        write_atomic(self.path(pseudonym), stone.to_json())
        self.by_pseudonym[pseudonym] = stone

        files = batches = events = 0
        pdir = self.layout.pseudonym_dir(pseudonym)
        for hour in self.layout.hour_files(pseudonym):
            for entry in idx.iter_entries(hour.index):
                batches += 1
                events += entry.count
        if pdir.exists():
            files = sum(1 for p in pdir.rglob("*") if p.is_file())
            shutil.rmtree(pdir)
            fsync_dir(self.layout.segments)
        files += self._erase_quarantine(pseudonym)
        files += grants.forget(self.layout, pseudonym)
        done = Tombstone(
            pseudonym,
            at,
            reason,
            "erased",
            erased_at=datetime.now(UTC).isoformat(),
            files_removed=files + (previous.files_removed if previous else 0),
            batches_removed=batches + (previous.batches_removed if previous else 0),
            events_removed=events + (previous.events_removed if previous else 0),
        )
        write_atomic(self.path(pseudonym), done.to_json())
        self.by_pseudonym[pseudonym] = done
        log.info("erased %s: %d files, %d batches, %d events", pseudonym, files, batches, events)
        return done

    def _erase_quarantine(self, pseudonym: str) -> int:
        removed = 0
        for meta in self.layout.quarantine.glob("*/*.json"):
            try:
                owner = json.loads(meta.read_text()).get("pseudonym")
            except (OSError, ValueError):
                continue
            if owner == pseudonym:
                for path in (meta, meta.parent / f"{meta.name.removesuffix('.json')}.frame"):
                    if path.exists():
                        path.unlink()
                        removed += 1
                fsync_dir(meta.parent)
        return removed


@dataclass(frozen=True)
class Expired:
    files_removed: int
    batches_removed: int
    events_removed: int


def expire(layout: Layout, now: datetime, retention_days: int) -> Expired:
    """Remove every hour file that ended more than ``retention_days`` before ``now``."""
    if retention_days < 1:
        raise InputError(f"sink retention_days must be >= 1, got {retention_days}")
    cutoff = now - timedelta(days=retention_days)
    files = batches = events = 0
    touched: set[Path] = set()
    for hour in list(layout.hour_files()):
        if hour.hour + timedelta(hours=1) > cutoff:
            continue
        for entry in idx.iter_entries(hour.index):
            batches += 1
            events += entry.count
        for path in (hour.segment, hour.index):
            if path.exists():
                path.unlink()
                files += 1
        touched.add(hour.index.parent)
    for d in sorted(touched, key=lambda p: -len(p.parts)):
        _prune_empty(d, layout.segments)
    for qday in layout.quarantine.glob("*"):
        try:
            day = datetime.strptime(qday.name, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            continue
        if day + timedelta(days=1) <= cutoff:
            files += sum(1 for p in qday.iterdir())
            shutil.rmtree(qday)
    if touched:
        fsync_dir(layout.segments)
    return Expired(files, batches, events)


def _prune_empty(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent
