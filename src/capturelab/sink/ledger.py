"""Which events are already stored: per collector, the stored sequence ranges.

The identity of an event is (collector id, sequence) (design invariants). A redelivered batch
(a consumer restart before its offset was committed, a producer retry) is recognised here and
not written twice. Ranges are kept merged, so the ledger stays small: a collector that never lost
an event has one range.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field


class Seen(enum.Enum):
    NEW = "new"  # no event of the range is stored
    STORED = "stored"  # every event of the range is stored: a redelivery
    PARTIAL = "partial"  # some are: the batch was re-framed differently (quarantine it)


@dataclass
class Ranges:
    """Disjoint, merged, sorted closed intervals of sequence numbers."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, first: int, last: int) -> None:
        i = bisect.bisect_left(self.ends, first - 1)  # first interval that may touch
        j = i
        lo, hi = first, last
        while j < len(self.starts) and self.starts[j] <= last + 1:
            lo = min(lo, self.starts[j])
            hi = max(hi, self.ends[j])
            j += 1
        self.starts[i:j] = [lo]
        self.ends[i:j] = [hi]

    def seen(self, first: int, last: int) -> Seen:
        i = bisect.bisect_left(self.ends, first)
        if i == len(self.starts) or self.starts[i] > last:
            return Seen.NEW
        if self.starts[i] <= first and self.ends[i] >= last:
            return Seen.STORED
        return Seen.PARTIAL

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def count(self) -> int:
        return sum(e - s + 1 for s, e in zip(self.starts, self.ends, strict=True))


@dataclass
class Ledger:
    by_collector: dict[str, Ranges] = field(default_factory=dict)

    def seen(self, collector_id: str, first: int, count: int) -> Seen:
        ranges = self.by_collector.get(collector_id)
        if ranges is None:
            return Seen.NEW
        return ranges.seen(first, first + count - 1)

    def add(self, collector_id: str, first: int, count: int) -> None:
        self.by_collector.setdefault(collector_id, Ranges()).add(first, first + count - 1)
