"""The sustained-ingest load: real capture frames offered to the gateway at a fixed rate.

The frames are what a collector sends (``capturelab.schema``: zstd batches with CRC32C), from a
load collector id unique to the run, so its sequences start at 0 and the sink's audit can prove
that every one landed exactly once. The rate is paced by schedule: a frame is due at
``t0 + bytes_sent_before_it / rate`` and frames are sent while their due time is within the
window; the achieved rate is ``bytes / max(window, time of the last send)``, so it reads at
least the offered rate unless the producer fell more than one frame interval behind (the
gateway pushed back). Bounded: the window, and a deadline. The pseudonym belongs to no person.

The storage tier admits only frames signed by a collector key the consent authority certified,
of a participant with a signed grant (issue 18 part 2). So, given the authority's key (the
controller holds it), the load acts as a collector would: it makes a key for this run only,
announces the authority's certificate of it and a grant for the load's pseudonym (its window:
this run) on the control topic, has both acknowledged, then signs every frame. The suite asks
for the pseudonym's erasure when it is done, which removes the grant with the data.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capturelab import identity
from capturelab.authority import Authority
from capturelab.bench.gateway import events_per_frame, synthetic_events
from capturelab.consent import (
    ConsentRecord,
    ControlMessage,
    ControlType,
    LawfulBasis,
    Scope,
    sign_erasure,
    sign_grant,
)
from capturelab.errors import CapturelabError, InputError
from capturelab.schema import Batch, encode_batch, pseudonymize
from capturelab.transport import producer_config

LOAD_SECRET = b"validation-load-not-a-participant"


@dataclass(frozen=True)
class LoadResult:
    collector_id: str
    pseudonym: str
    frames: int
    events: int
    bytes: int
    offered_bytes_per_s: float
    window_seconds: float
    started: float  # wall clock (time.time()) of the first send
    last_sent: float
    last_acked: float
    send_seconds: float  # first send to last send

    @property
    def achieved_bytes_per_s(self) -> float:
        """Bytes over the window, or over the sending time when sending ran past it."""
        return self.bytes / max(self.window_seconds, self.send_seconds)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["achieved_bytes_per_s"] = round(self.achieved_bytes_per_s, 3)
        return out


@dataclass(frozen=True)
class Admission:
    """What the load needs to be admitted by the sink: the consent authority's key, the control
    topic, and the region its grant names (one the storage node does not exclude)."""

    authority: Authority
    control_topic: str
    region: str = ""

    def announce(
        self, producer: Producer, collector_id: str, pseudonym: bytes, seconds: float
    ) -> identity.CollectorKey:
        """A key for this run, its certificate and the load's grant, acknowledged."""
        key = identity.CollectorKey(Ed25519PrivateKey.generate(), f"the load key of {collector_id}")
        now = datetime.now(UTC).replace(microsecond=0)
        certificate = identity.certify(self.authority, collector_id, key.public, now)
        grant = ConsentRecord(
            pseudonym.hex(), frozenset({Scope.KEYS_TIMING, Scope.MOUSE}), LawfulBasis.CONSENT,
            now - timedelta(minutes=5), now + timedelta(seconds=seconds + 600), region=self.region,
        )  # fmt: skip
        message = ControlMessage(
            ControlType.CONSENT_GRANTED, pseudonym, collector_id, grant.granted,
            "validation load, not a person", grant, sign_grant(self.authority, pseudonym, grant),
        )  # fmt: skip
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer.produce(
            self.control_topic,
            value=identity.control_value(certificate),
            key=identity.control_key(certificate),
            callback=report,
        )
        producer.produce(self.control_topic, value=message.encode(), key=message.key,
                         callback=report)  # fmt: skip
        if producer.flush(30) or errors:
            raise CapturelabError(
                f"load: the key certificate and grant of {collector_id} were not acknowledged "
                f"({errors[0] if errors else 'timeout'})"
            )
        return key


def load_identity(run_id: str) -> tuple[str, bytes]:
    if not run_id or not run_id.replace("-", "").isalnum():
        raise InputError(f"load run id {run_id!r} must be letters, digits and dashes")
    return f"validation-load-{run_id}", pseudonymize(LOAD_SECRET, run_id)


def offer(
    bootstrap: str,
    topic: str,
    run_id: str,
    rate_bytes_per_s: float,
    seconds: float,
    *,
    frame_bytes: int = 16384,
    deadline_s: float | None = None,
    admission: Admission | None = None,
) -> LoadResult:
    """Offer ``rate_bytes_per_s`` for ``seconds`` and wait for every acknowledgement."""
    if rate_bytes_per_s <= 0 or seconds <= 0:
        raise InputError(f"load rate {rate_bytes_per_s} and seconds {seconds} must be positive")
    collector_id, pseudonym = load_identity(run_id)
    rng = random.Random(run_id)  # noqa: S311 - synthetic input data
    wall0 = time.time_ns()
    deadline = deadline_s if deadline_s is not None else seconds * 2 + 60
    producer = Producer(producer_config(bootstrap, collector_id))
    key = None
    if admission is not None:
        key = admission.announce(producer, collector_id, pseudonym, deadline)

    def frame(first_seq: int, n: int) -> bytes:
        events = tuple(synthetic_events(rng, first_seq, n, wall0))
        signer = None if key is None else key.sign_frame
        return encode_batch(Batch(collector_id, pseudonym, events), signer=signer)

    per_frame = events_per_frame(frame_bytes, frame)
    errors: list[str] = []
    acked_at = [0.0]

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        acked_at[0] = time.time()

    total = count = 0
    started = time.time()
    t0 = time.monotonic()
    last_sent, last_mono = started, t0
    while (due := t0 + total / rate_bytes_per_s) <= t0 + seconds:
        while (now := time.monotonic()) < due:
            producer.poll(min(due - now, 0.05))
        if now - t0 > deadline:
            raise CapturelabError(
                f"load: {count} frames ({total:,} bytes) sent before the {deadline:.0f} s deadline"
            )
        data = frame(count * per_frame, per_frame)
        while True:
            try:
                producer.produce(topic, value=data, key=collector_id.encode(), callback=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        total += len(data)
        count += 1
        last_sent, last_mono = time.time(), time.monotonic()
        producer.poll(0)
    left = producer.flush(max(5.0, deadline - (time.monotonic() - t0)))
    if left or errors:
        raise CapturelabError(
            f"load: {left} frames unacknowledged, {len(errors)} delivery errors "
            f"({errors[0] if errors else 'timeout'})"
        )
    return LoadResult(
        collector_id=collector_id,
        pseudonym=pseudonym.hex(),
        frames=count,
        events=count * per_frame,
        bytes=total,
        offered_bytes_per_s=rate_bytes_per_s,
        window_seconds=seconds,
        started=started,
        last_sent=last_sent,
        last_acked=acked_at[0],
        send_seconds=last_mono - t0,
    )


def request_erasure(
    bootstrap: str, control_topic: str, run_id: str, reason: str, signer: Authority
) -> None:
    """Ask the sink (over the control topic) to erase the load's data: an erasure signed by the
    consent authority (the sink refuses unsigned ones), sent with the load's collector id."""
    collector_id, pseudonym = load_identity(run_id)
    msg = sign_erasure(signer, pseudonym, collector_id, datetime.now(UTC), reason)
    producer = Producer(producer_config(bootstrap, collector_id))
    producer.produce(control_topic, value=msg.encode(), key=msg.key)
    if producer.flush(30):
        raise CapturelabError(f"load: the erasure request for {collector_id} was not acknowledged")
