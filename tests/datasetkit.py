"""A store on disk for dataset tests: synth sessions landed through the sink's store.

``edge_events`` runs a synth session through the collector's edge filter (what a collector
sends); ``raw_events`` skips the edge (as if a collector had sent everything unscrubbed), so a
test can prove the dataset builder's own redaction and consent filter.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consentkit import AUTHORITY, trust_file

from capturelab.collector.edge import EdgeFilter, number
from capturelab.collector.synth import Session, as_events
from capturelab.consent import ConsentRecord, LawfulBasis, Scope, sign_grant
from capturelab.dataset.build import BuildOptions
from capturelab.schema import Batch, Event, encode_batch
from capturelab.sink import grants
from capturelab.sink.layout import Layout
from capturelab.sink.store import SegmentStore

HOUR_NS = 3600 * 10**9
T0 = int(datetime(2026, 11, 22, 9, 0, tzinfo=UTC).timestamp() * 1e9)


def raw_events(session: Session, first_seq: int = 0, t0: int = T0) -> list[Event]:
    return as_events(session, first_seq, t0)


def edge_events(
    session: Session, scopes: Iterable[Scope], first_seq: int = 0, t0: int = T0
) -> list[Event]:
    edge = EdgeFilter(scopes)
    for item in session.merged():
        t = item[0]
        wall = t0 + t
        if isinstance(item[1], str):
            edge.context(item[1], str(item[2]), t, wall)
        else:
            _t, device, etype, code, value = item
            edge.process(
                device, (wall // 1_000_000_000, wall % 1_000_000_000 // 1000, etype, code, value), t
            )
            edge.tick(t)
    edge.flush()
    return number(edge.out, first_seq)


def land(
    root: Path, collector: str, pseudonym: bytes, events: list[Event], batch: int = 200
) -> int:
    """Encode ``events`` in batches and put them through the sink's store; returns frames."""
    store = SegmentStore(root)
    n = 0
    for i in range(0, len(events), batch):
        frame = encode_batch(Batch(collector, pseudonym, tuple(events[i : i + batch])))
        store.put(frame, f"test-{collector}-{i}")
        n += 1
    store.flush()
    store.close()
    return n


def grant(
    root: Path,
    pseudonym: bytes,
    scopes: Iterable[Scope],
    granted: str = "2026-01-01T00:00:00+00:00",
    expires: str = "2027-01-01T00:00:00+00:00",
    *,
    region: str = "us",
) -> None:
    record = ConsentRecord(
        pseudonym.hex(),
        frozenset(scopes),
        LawfulBasis.CONSENT,
        datetime.fromisoformat(granted),
        datetime.fromisoformat(expires),
        region=region,
    )
    grants.record(Layout(root), record, sign_grant(AUTHORITY, pseudonym, record))


_KEYS = Path(tempfile.mkdtemp(prefix="capturelab-test-trust-"))
atexit.register(shutil.rmtree, _KEYS, True)
TRUST = trust_file(_KEYS)


def options(**kwargs: Any) -> BuildOptions:
    """Build options that trust the tests' consent authority (the one ``grant`` signs with)."""
    return BuildOptions(trust_file=TRUST, **kwargs)
