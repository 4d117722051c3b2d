"""The storage layout on the array (``../shared/design.md``, "Storage layout").

``<root>/segments/<pseudonym hex>/<YYYY>/<MM>/<DD>/<HH>.seg`` holds the frames as received, appended;
``<HH>.idx`` beside it holds one index record per frame. ``<root>/quarantine/`` keeps frames that
failed a check, ``<root>/tombstones/`` one record per erased pseudonym, ``<root>/consent/`` the
grants collectors announced (``capturelab.sink.grants``), ``<root>/state/`` the sink's status file.
Hours are UTC, from the batch's first event's wall clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from capturelab.errors import InputError
from capturelab.schema import PSEUDONYM_BYTES

SEGMENT_SUFFIX = ".seg"
INDEX_SUFFIX = ".idx"
_PSEUDONYM_RE = re.compile(rf"^[0-9a-f]{{{PSEUDONYM_BYTES * 2}}}$")
_HOUR_PARTS = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/(\d{2})$")


@dataclass(frozen=True)
class HourFile:
    """One hour of one pseudonym: a segment and its index."""

    pseudonym: str
    hour: datetime  # UTC, minute=second=0
    segment: Path
    index: Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def tombstones(self) -> Path:
        return self.root / "tombstones"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def consent(self) -> Path:
        return self.root / "consent"

    def create(self) -> None:
        for path in (self.segments, self.quarantine, self.tombstones, self.state, self.consent):
            path.mkdir(parents=True, exist_ok=True)

    def hour_file(self, pseudonym: str, wall_ns: int) -> HourFile:
        check_pseudonym(pseudonym)
        hour = datetime.fromtimestamp(wall_ns / 1e9, tz=UTC).replace(
            minute=0, second=0, microsecond=0
        )
        base = self.segments / pseudonym / f"{hour:%Y/%m/%d}" / f"{hour:%H}"
        return HourFile(
            pseudonym, hour, base.with_suffix(SEGMENT_SUFFIX), base.with_suffix(INDEX_SUFFIX)
        )

    def pseudonym_dir(self, pseudonym: str) -> Path:
        return self.segments / check_pseudonym(pseudonym)

    def hour_files(self, pseudonym: str | None = None) -> Iterator[HourFile]:
        """Every hour file with an index, sorted by pseudonym then hour."""
        if not self.segments.is_dir():
            return
        dirs = (
            [self.pseudonym_dir(pseudonym)]
            if pseudonym is not None
            else sorted(p for p in self.segments.iterdir() if _PSEUDONYM_RE.match(p.name))
        )
        for pdir in dirs:
            if not pdir.is_dir():
                continue
            for index in sorted(pdir.glob(f"*/*/*/*{INDEX_SUFFIX}")):
                rel = index.relative_to(pdir).with_suffix("").as_posix()
                match = _HOUR_PARTS.match(rel)
                if match is None:
                    continue
                year, month, day, hour = (int(x) for x in match.groups())
                yield HourFile(
                    pdir.name,
                    datetime(year, month, day, hour, tzinfo=UTC),
                    index.with_suffix(SEGMENT_SUFFIX),
                    index,
                )


def check_pseudonym(pseudonym: str) -> str:
    if not _PSEUDONYM_RE.match(pseudonym):
        raise InputError(
            f"pseudonym {pseudonym!r} must be {PSEUDONYM_BYTES * 2} lower-case hex characters"
        )
    return pseudonym
