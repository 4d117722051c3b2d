"""The sink service: a Kafka consumer group that lands capture batches and acts on erasures.

Loop: act on new control messages (``capturelab.sink.control``: every instance reads all of them),
consume up to ``flush_max_messages`` capture messages (or ``flush_interval_ms``), put each frame
into the store, ``flush`` (fsync), then commit the next offsets synchronously. A crash anywhere
before the commit means redelivery, which the ledger turns into "already stored": every event lands
exactly once. More instances with the same ``group_id`` share the capture partitions. A full volume
pauses every assigned partition, keeps the unprocessed messages in memory, and resumes when space
is back; control messages (erasures free space) are still acted on while paused.

Admission (``authenticate``, ``cover``): a frame is stored only when a collector key the consent authority
certified for its collector signed it, and a signed grant of its participant kept here covers
the frame's first event (granted <= wall clock < revoked or expires). The certificates and grants
come on the control topic, which the collector writes (and has acknowledged) before any frame
that needs them. So for a frame that cannot be judged yet, the sink makes what came before it
durable and acts on the control topic up to the end it has *now* (asked of the broker after the
frame was fetched, so it holds whatever the frame needs); only then is the frame judged for good:
quarantined (no certified key signed it) or not kept (no grant), counted and logged. Should the
control topic not be read to that end (a broker away, 10 s passed), nothing is judged: the
frame is read again later. One catch-up serves every frame fetched before it was asked.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from capturelab import identity
from capturelab.authority import Signature, TrustFile
from capturelab.consent import ConsentRecord, ControlMessage, ControlType, verify_control
from capturelab.durable import write_atomic
from capturelab.errors import InputError
from capturelab.schema import FrameHeader, load_dictionary
from capturelab.sink import grants
from capturelab.sink.config import DIRECT_IO_MODES, SinkConfig
from capturelab.sink.control import ControlFeed
from capturelab.sink.erasure import Tombstones, expire
from capturelab.sink.layout import Layout
from capturelab.sink.store import Admission, DiskFullError, Outcome, SegmentStore

log = logging.getLogger(__name__)
RETENTION_EVERY_S = 3600.0
RESUME_CHECK_S = 2.0
CONTROL_BATCH = 100
CATCH_UP_S = 10.0  # how long a frame waits for the control topic to be read to its end


def _window(grant: ConsentRecord) -> tuple[int, int]:
    """A grant's window in wall-clock nanoseconds: [granted, revoked or expires)."""
    return int(grant.granted.timestamp() * 1e9), int(grant.window_end().timestamp() * 1e9)


def _iso(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9, UTC).isoformat()


class _RewoundError(Exception):
    """A flush failed: everything since the last commit was rolled back and will be redelivered."""


def consumer_config(config: SinkConfig) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "client.id": config.client_id,
        # Static membership: a restarted instance takes its partitions back at once instead of
        # waiting out the session of its dead predecessor (client ids are unique per instance).
        "group.instance.id": config.client_id,
        "enable.auto.commit": False,  # commits follow fsync, never a timer
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group reads the whole buffer: nothing skipped
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        "session.timeout.ms": 45_000,
        "max.poll.interval.ms": 300_000,
    }
    if config.security is not None:
        conf.update(config.security.librdkafka())
    return conf


def control_consumer_config(config: SinkConfig) -> dict[str, Any]:
    """The control topic's reader: partitions assigned by hand, never a group member, never
    committing (librdkafka still wants a ``group.id``: the sink's own, which its ACL allows)."""
    conf = consumer_config(config)
    del conf["group.instance.id"]
    conf["client.id"] = f"{config.client_id}-control"
    return conf


def _usable(msg: Message, source: str) -> bool:
    """False for an event in place of a message (logged); a fatal one stops the service."""
    err = msg.error()
    if err is None:
        return True
    if err.fatal():
        raise KafkaException(err)
    log.warning("%s: %s", source, err)
    return False


@dataclass
class Status:
    state: str = "starting"
    reason: str = ""
    assigned: list[str] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    last_commit: str = ""
    control_messages: int = 0
    bad_control_messages: int = 0
    # Signed by no trusted key, or claiming what its signer cannot (consent.verify_control):
    # ignored, counted, logged; nothing is stored or deleted for them.
    refused_control_messages: int = 0
    last_refused: str = ""
    erasures: int = 0
    grants: int = 0  # consent grants kept (capturelab.sink.grants)
    collector_keys: int = 0  # collector key certificates kept (capturelab.identity)
    catch_ups: int = 0  # times a frame waited for the control topic to be read to its end


class SinkService:
    def __init__(
        self,
        config: SinkConfig,
        *,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.clock = clock
        refusal = config.regions.host_refusal()
        if refusal:  # before anything is created or read
            raise InputError(
                f"sink config: field region {config.region!r}: {refusal} "
                "(set lawful_basis_override): nothing is stored"
            )
        self.trust = TrustFile(config.consent_authority_file)  # an unreadable one: InputError
        self.layout = Layout(config.root)
        self.layout.create()
        self.tombstones = Tombstones(self.layout)
        self.refusals = grants.refusals(self.layout)  # pseudonym -> why its frames are refused
        self.keyring = identity.Keyring(self.layout.root / "collectors", self.trust.current())
        self.granted = self._load_windows()  # pseudonym -> the windows its kept grants cover
        dictionaries = [load_dictionary(p) for p in config.dictionaries]
        self.store = SegmentStore(
            config.root,
            min_free_bytes=config.min_free_bytes,
            erased=self.tombstones.erased,
            refused=lambda pseudonym: self.refusals.get(pseudonym, ""),
            admit=self,
            dictionaries={d.dict_id(): d for d in dictionaries},
            direct_io=DIRECT_IO_MODES[config.direct_io],
        )
        for stone in self.tombstones.unfinished():  # a crash mid-erasure: finish it
            self.tombstones.erase(stone.pseudonym, stone.at, stone.reason)
        self.status = Status()
        self.consumer = consumer_factory(consumer_config(config))
        self.control = ControlFeed(
            consumer_factory(control_consumer_config(config)),
            config.control_topic,
            self.layout.state,
        )
        self._offsets: dict[tuple[str, int], int] = {}  # next offset to commit
        self._first_pending: dict[tuple[str, int], int] = {}  # first offset since the last commit
        self._backlog: list[Message] = []
        self._consumed_at = 0.0  # when the batch in hand was fetched (time.monotonic)
        self._caught_up_at = -1.0  # when the last complete catch-up asked for the control's end
        self._paused = False
        self._stop = False
        self._last_status = 0.0
        self._last_retention = 0.0
        self._last_resume_check = 0.0

    # --- lifecycle -----------------------------------------------------------------------------

    def request_stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self._stop = True

    def run(self, *, max_seconds: float | None = None, install_signals: bool = True) -> None:
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self.consumer.subscribe(
            [self.config.capture_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self.control.start()
        self.status.state = "running"
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop and (deadline is None or time.monotonic() < deadline):
                self.step()
        finally:
            self._checkpoint()
            self.status.state = "stopped"
            self.write_status(force=True)
            self.consumer.close()
            self.control.close()
            self.store.close()

    def step(self) -> None:
        now = time.monotonic()
        if now - self._last_retention >= RETENTION_EVERY_S:
            self._last_retention = now
            self.retention()
        self.control_step()
        if self._paused:
            if now - self._last_resume_check >= RESUME_CHECK_S:
                self._last_resume_check = now
                self._try_resume()
            self._consumed_at = time.monotonic()
            held = self.consumer.poll(0.2)  # keeps the group membership alive while paused
            if held is not None and held.error() is None:
                self._backlog.append(held)  # fetched before the pause took effect: keep it
            self.write_status()
            return
        self._consumed_at = time.monotonic()
        messages = self.consumer.consume(
            num_messages=self.config.flush_max_messages,
            timeout=self.config.flush_interval_ms / 1000,
        )
        self._process(messages)
        self.write_status()

    # --- processing ----------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        consumed_at = self._consumed_at
        for i, msg in enumerate(messages):
            if not _usable(msg, "consumer"):
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            origin = f"{topic}-{partition}-{offset}"
            try:
                # Final at once when the control topic was read to an end asked for after this
                # batch was fetched: whatever the frame needs was written before that end.
                final = self._caught_up_at >= consumed_at
                outcome = self.store.put(msg.value() or b"", origin, final=final)
                if outcome is Outcome.UNKNOWN:
                    caught_up = self._catch_up(messages[i:])
                    if caught_up is None:
                        return  # rolled back and paused: all of it comes again
                    if not caught_up:
                        self._seek_back(messages[i:])  # not judged: read again, judged later
                        return
                    outcome = self.store.put(msg.value() or b"", origin, final=True)
            except DiskFullError as exc:
                self._pause(str(exc), messages[i:])
                return
            if outcome is Outcome.UNKNOWN:  # pragma: no cover - put(final=True) judges
                raise AssertionError(f"{origin}: not judged with final=True")
            self._offsets[(topic, partition)] = offset + 1
            self._first_pending.setdefault((topic, partition), offset)
        self._checkpoint()

    # --- admission (see the module's docstring) -------------------------------------------------

    def authenticate(self, frame: bytes, header: FrameHeader, final: bool) -> tuple[Admission, str]:
        if not self.config.require_collector_auth:
            return Admission.STORE, ""
        verdict, why = self.keyring.check(frame, header)
        if verdict is identity.Verdict.OK:
            return Admission.STORE, ""
        if verdict is identity.Verdict.UNKNOWN and not final:
            return Admission.UNKNOWN, why
        return Admission.FORGED, why

    def cover(self, pseudonym: str, wall_ns: int, final: bool) -> tuple[Admission, str]:
        windows = self.granted.get(pseudonym, ())
        if not self.config.require_grant or any(a <= wall_ns < b for a, b in windows):
            return Admission.STORE, ""
        if not final:
            return Admission.UNKNOWN, ""
        if windows:
            return Admission.UNGRANTED, (
                f"no grant signed by the consent authority and kept here covers {_iso(wall_ns)}"
            )
        return Admission.UNGRANTED, "no grant signed by the consent authority is kept for them"

    def _load_windows(self) -> dict[str, list[tuple[int, int]]]:
        """The windows of every grant kept on this array that the authority signed."""
        out: dict[str, list[tuple[int, int]]] = {}
        for path in sorted(self.layout.consent.glob("*.json")):
            kept, refused = grants.load_verified(self.layout, path.stem, self.trust.current())
            for reason in refused:
                log.error("grant not used for admission: %s", reason)
            out[path.stem] = [_window(g) for g in kept]
        return out

    def _catch_up(self, rest: list[Message]) -> bool | None:
        """Make what came before ``rest`` durable, then act on the control topic up to the end
        it has now. True: read to that end; False: not (a broker away, too slow; nothing was
        judged); None: a rollback paused intake, and every partition was sought back to its
        first uncommitted message, ``rest`` included (held in the backlog meanwhile)."""
        held = [m for m in rest if m.error() is None]
        self._backlog[:0] = held
        try:
            if not self._checkpoint():
                return None
            self.status.catch_ups += 1
            asked = time.monotonic()
            done = self._read_control_to_end()
        finally:
            if not self._paused:
                del self._backlog[: len(held)]
        if self._paused:
            return None
        if done:
            self._caught_up_at = asked
        return done

    def _read_control_to_end(self) -> bool:
        self.control.refresh(force=True)
        behind = self.control.behind()
        if behind is None:
            return False
        deadline = time.monotonic() + CATCH_UP_S
        while behind and not self._paused and time.monotonic() < deadline:
            self.control_step(timeout=0.2)
            behind = {p: h for p, h in behind.items() if self.control.next.get(p, 0) < h}
        return not behind and not self._paused

    def control_step(self, timeout: float = 0) -> None:
        """Act on the control messages that arrived, in order; keep the position once durable."""
        self.control.refresh()
        for msg in self.control.poll(CONTROL_BATCH, timeout):
            if not _usable(msg, "control consumer"):
                continue
            try:
                self._control(msg)
            except _RewoundError:
                self.control.retry(msg)  # the capture side could not be made durable: later
                break
            self.control.done(msg)
        self.control.save()

    def _control(self, msg: Message) -> None:
        self.status.control_messages += 1
        where = f"{msg.topic()}-{msg.partition()}@{msg.offset()}"
        try:
            certificate = identity.control_certificate(msg.value() or b"", where)
            if certificate is not None:
                self._certificate(certificate, where)
                return
            control = ControlMessage.decode(msg.value() or b"")
        except InputError as exc:
            self.status.bad_control_messages += 1
            self.store.quarantine(
                msg.value() or b"", f"{msg.topic()}-{msg.partition()}-{msg.offset()}", str(exc)
            )
            return
        try:
            verify_control(control, self.trust.current(), self.clock(), where)
        except InputError as exc:
            self._refuse_control(str(exc))
            return
        signature = control.signature
        if (
            control.grant is not None
            and signature is not None
            and control.type is ControlType.CONSENT_GRANTED
        ):
            self._grant(control.pseudonym.hex(), control.grant, signature, where)
            return
        stone = self.tombstones.by_pseudonym.get(control.pseudonym.hex())
        if stone is not None and stone.state == "erased" and stone.at >= control.at:
            return  # already done (a replay): erasing again would take a later consent's data
        # Everything consumed before the erasure is made durable first, then erased with it.
        if not self._checkpoint():
            raise _RewoundError
        self.store.close(control.pseudonym.hex())
        self.tombstones.erase(control.pseudonym.hex(), control.at, control.type.value)
        self.refusals.pop(control.pseudonym.hex(), None)
        self.granted.pop(control.pseudonym.hex(), None)
        self.status.erasures += 1

    def _certificate(self, certificate: identity.Certificate, where: str) -> None:
        """Keep a collector key the authority certified; refuse (count, log) any other."""
        try:
            if self.keyring.add(certificate, self.trust.current(), where):
                self.status.collector_keys += 1
                log.info("%s: collector %r key %s certified", where, certificate.collector_id,
                         certificate.key_id)  # fmt: skip
        except InputError as exc:
            self._refuse_control(str(exc))

    def _refuse_control(self, reason: str) -> None:
        self.status.refused_control_messages += 1
        self.status.last_refused = reason
        log.warning("control message refused, nothing stored or erased: %s", reason)

    def _grant(
        self, pseudonym: str, grant: ConsentRecord, signature: Signature, where: str
    ) -> None:
        """Keep a verified grant, unless this node's region policy refuses it: then it is not
        kept, and none of the participant's frames are stored while no grant is kept."""
        refusal = self.config.regions.refusal(grant.region)
        if refusal:
            reason = f"{where}: grant refused: {refusal}"
            self._refuse_control(reason)
            if not grants.kept(self.layout, pseudonym):
                grants.refuse(self.layout, pseudonym, reason)  # durable before the commit
                self.refusals[pseudonym] = reason
            return
        stone = self.tombstones.by_pseudonym.get(pseudonym)
        if stone is None or grant.granted > stone.at:
            grants.record(self.layout, grant, signature)  # fsynced before the commit
            self.refusals.pop(pseudonym, None)
            self.granted.setdefault(pseudonym, []).append(_window(grant))
            self.status.grants += 1

    def _checkpoint(self) -> bool:
        """fsync, then commit: the only place offsets are committed. False: rolled back."""
        try:
            self.store.flush()
        except DiskFullError as exc:
            # Nothing since the last commit is durable: redeliver it all after space returns.
            self.store.discard_pending()
            self._offsets.clear()
            self._rewind_and_pause(str(exc))
            return False
        if self._offsets:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._offsets.items())]
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self._offsets.clear()
            self.status.last_commit = self.clock().isoformat()
        self._first_pending.clear()
        return True

    # --- full volume ---------------------------------------------------------------------------

    def _pause(self, reason: str, unprocessed: list[Message]) -> None:
        # Held first: if the checkpoint fails, the rewind must cover them too (their partitions
        # may have had nothing processed yet in this batch).
        self._backlog = [m for m in unprocessed if m.error() is None] + self._backlog
        if self._checkpoint():
            self._pause_all(reason)

    def _rewind_and_pause(self, reason: str) -> None:
        """Seek every partition back to its first uncommitted message (processed or held)."""
        self._seek_back(self._backlog, dict(self._first_pending))
        self._first_pending.clear()
        self._backlog.clear()
        self._pause_all(reason)

    def _seek_back(
        self, messages: list[Message], rewind: dict[tuple[str, int], int] | None = None
    ) -> None:
        """Seek each partition back to the first of ``messages`` (or of ``rewind``) in it."""
        rewind = rewind or {}
        for msg in messages:
            if msg.error() is not None:
                continue
            key = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset() or 0
            rewind[key] = min(offset, rewind.get(key, offset))
        for (topic, partition), offset in sorted(rewind.items()):
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _pause_all(self, reason: str) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self._paused = True
        self.status.state = "paused"
        self.status.reason = reason
        log.error("intake paused: %s", reason)
        self.write_status(force=True)

    def _try_resume(self) -> None:
        if self.store.free_bytes() < self.config.min_free_bytes + (8 << 20):
            return
        self._paused = False
        self.status.state = "running"
        self.status.reason = ""
        backlog, self._backlog = self._backlog, []
        log.info("space is back: resuming with %d held messages", len(backlog))
        self._process(backlog)
        if not self._paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)

    # --- rebalance -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.status.assigned = sorted(f"{p.topic}-{p.partition}" for p in partitions)
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._checkpoint()
        lost = {(p.topic, p.partition) for p in partitions}
        self._backlog = [m for m in self._backlog if (m.topic(), m.partition()) not in lost]
        self.status.assigned = []

    # --- housekeeping --------------------------------------------------------------------------

    def retention(self) -> None:
        self._checkpoint()
        self.store.close()
        gone = expire(self.layout, self.clock(), self.config.retention_days)
        if gone.files_removed:
            log.info(
                "retention (%d days): removed %d files, %d events",
                self.config.retention_days,
                gone.files_removed,
                gone.events_removed,
            )

    def lag(self) -> dict[str, int]:
        """Messages behind the high watermark per assigned partition (from the fetch responses:
        no broker round trip, so the status never stalls the consume loop)."""
        out: dict[str, int] = {}
        assignment = self.consumer.assignment()
        if not assignment:
            return out
        for tp in self.consumer.position(assignment):
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or tp.offset < 0:
                continue  # not fetched yet: unknown, not zero
            out[f"{tp.topic}-{tp.partition}"] = max(0, high - tp.offset)
        return out

    def write_status(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < self.config.status_interval_s:
            return
        self._last_status = now
        if self.status.state in ("running", "paused"):
            self.status.lag = self.lag()
        doc = {
            "updated": self.clock().isoformat(),
            "state": self.status.state,
            "reason": self.status.reason,
            "group_id": self.config.group_id,
            "client_id": self.config.client_id,
            "assigned": self.status.assigned,
            "lag": self.status.lag,
            "total_lag": sum(self.status.lag.values()),
            "last_commit": self.status.last_commit,
            "held_messages": len(self._backlog),
            "free_bytes": self.store.free_bytes(),
            "min_free_bytes": self.config.min_free_bytes,
            "counters": self.store.counters.to_dict(),
            "write_mode": self.store.write_mode,
            "control_messages": self.status.control_messages,
            "control_partitions": self.control.partitions,
            "control_next": {str(p): o for p, o in sorted(self.control.next.items())},
            "bad_control_messages": self.status.bad_control_messages,
            "refused_control_messages": self.status.refused_control_messages,
            "last_refused_control_message": self.status.last_refused,
            "erasures": self.status.erasures,
            "collector_keys": sum(len(k) for k in self.keyring.keys.values()),
            "collector_keys_added": self.status.collector_keys,
            "control_catch_ups": self.status.catch_ups,
            "require_collector_auth": self.config.require_collector_auth,
            "require_grant": self.config.require_grant,
            "tombstones": len(self.tombstones.by_pseudonym),
            "refused_participants": len(self.refusals),
            "region": self.config.region,
            "excluded_regions": list(self.config.excluded_regions),
        }
        write_atomic(self.config.status_path, json.dumps(doc, indent=1, sort_keys=True).encode())
