"""Frames for sink tests: realistic little batches from a few collectors and participants."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from capturelab.identity import CollectorKey
from capturelab.schema import Batch, DeviceClass, EventFlag, InputEvent, encode_batch

T0 = int(datetime(2026, 11, 22, 10, 15, tzinfo=UTC).timestamp() * 1e9)


def pseudonym(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def frame(
    collector: str,
    first: int,
    count: int,
    who: str = "p1",
    wall_ns: int = T0,
    *,
    key: CollectorKey | None = None,
) -> bytes:
    """A batch of mouse events; signed with ``key`` when one is given."""
    events = tuple(
        InputEvent(
            seq=first + i,
            mono_ns=1_000_000 * (first + i),
            wall_ns=wall_ns + 8_000_000 * i,
            device=DeviceClass.MOUSE,
            type=2,
            code=i % 2,
            value=(i * 7) % 11 - 5,
            flags=EventFlag.SYNTHETIC,
        )
        for i in range(count)
    )
    signer = None if key is None else key.sign_frame
    return encode_batch(Batch(collector, pseudonym(who), events), signer=signer)


def frames(
    collector: str, batches: int, size: int = 50, who: str = "p1", key: CollectorKey | None = None
) -> list[bytes]:
    return [
        frame(collector, b * size, size, who, T0 + b * size * 8_000_000, key=key)
        for b in range(batches)
    ]
