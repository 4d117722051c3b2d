"""The collector's sealer: what the edge handed out, numbered and sealed into spool batches.

Invariants: events get the spool's next sequence numbers, in order, and a batch holds at most
``batch_max_events``; after a consent window closed, events stamped at or after its end are
dropped (and counted), never sealed; each batch is signed with the collector key the consent
gate holds at that moment (``identity``), before it reaches the spool; a batch that cannot be
written stays ahead of anything newer in the edge's output (nothing is lost) and the failure is returned, not raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import zstandard

from capturelab.collector.config import CollectorConfig
from capturelab.collector.edge import EdgeFilter, Item, number
from capturelab.collector.spool import Spool
from capturelab.schema import Batch, FrameSigner, encode_batch


class SealCounters(Protocol):
    sealed_events: int
    sealed_batches: int
    discarded_after_consent_end: int
    seal_errors: int


class Sealer:
    def __init__(
        self,
        config: CollectorConfig,
        spool: Spool,
        counters: SealCounters,
        dictionary: zstandard.ZstdCompressionDict | None = None,
        *,
        signer: Callable[[], FrameSigner | None] = lambda: None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.counters = counters
        self.dictionary = dictionary
        self.signer = signer  # the collector key's, asked at each batch (None: unsigned)
        self.pseudonym = b""  # whose events the batches carry (set by the consent gate's verdict)

    def seal(self, edge: EdgeFilter, cutoff_wall_ns: int | None = None) -> str:
        """Seal ``edge.out``; '' on success, else why the spool could not take it."""
        if not edge.out:
            return ""
        items: list[Item] = edge.out
        if cutoff_wall_ns is not None:
            kept = [i for i in items if i[1] < cutoff_wall_ns]
            self.counters.discarded_after_consent_end += len(items) - len(kept)
            items = kept
        edge.out = []
        step = self.config.batch_max_events
        for start in range(0, len(items), step):
            try:
                self._seal_chunk(items[start : start + step])
            except OSError as exc:
                edge.out = [*items[start:], *edge.out]
                self.counters.seal_errors += 1
                return f"cannot write the spool: {exc.strerror}"
        return ""

    def _seal_chunk(self, chunk: list[Item]) -> None:
        events = number(chunk, self.spool.next_seq)
        batch = Batch(self.config.collector_id, self.pseudonym, tuple(events))
        frame = encode_batch(
            batch,
            level=self.config.zstd_level,
            dictionary=self.dictionary,
            signer=self.signer(),
        )
        self.spool.put_batch(frame, events[-1].seq + 1)
        self.counters.sealed_events += len(events)
        self.counters.sealed_batches += 1
