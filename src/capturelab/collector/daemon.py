"""The collector daemon: consent gate -> device reads -> edge policy -> sealed batches -> spool.

One thread captures (devices, context, the control socket, sealing); the ``Delivery`` thread
sends the spool. The capture loop:

1. re-reads the consent record (and the authority's trust file) when either file changes, and
   decides (``consent.decide``) every ``consent_check_interval_s``: nothing is read from a
   device unless the record is signed by a trusted authority key, unaltered, valid now, and
   neither its region nor the host's is excluded. A refused record (unsigned, altered, a bad
   date, an unreadable key) is logged once with the file and the reason and the daemon keeps
   running: it never exits over a record. Expiry stops capture; a revocation stops it and
   queues a ``consent_revoked`` and an ``erasure_requested`` message for the control topic
   (once per revocation), each carrying the authority-signed revoked grant;
2. reads every ready device (``DeviceReader``), counts and quarantines malformed records, and
   passes the rest through the ``EdgeFilter`` (scopes, secure input, text scrubbing);
3. every ``batch_interval_ms`` numbers what the edge handed out with the next sequence numbers
   and seals it into one batch in the spool, once it holds ``batch_min_events`` or the last
   seal is ``batch_max_interval_ms`` old (a slow stream waits a little: fewer headers), and at
   once at ``batch_max_events``;
4. pauses capture while the spool is full (``capture paused: spool full``), and resumes below
   90 % of its bound: nothing sealed is ever dropped;
5. writes ``status.json`` in the spool every ``status_interval_s``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard

from capturelab.authority import Signature, load_trust
from capturelab.collector import evdev, screenshot
from capturelab.collector.config import CollectorConfig
from capturelab.collector.context import ContextSource, open_source
from capturelab.collector.delivery import Delivery
from capturelab.collector.edge import EdgeFilter, Item, number
from capturelab.collector.spool import Spool
from capturelab.consent import (
    ConsentRecord,
    ControlMessage,
    ControlType,
    Decision,
    Status,
    decide,
    grant_fields,
    load_signed_record,
)
from capturelab.durable import write_atomic
from capturelab.errors import InputError
from capturelab.names import person_recogniser
from capturelab.schema import (
    MAX_IMAGE_BYTES,
    Batch,
    encode_batch,
    load_dictionary,
    pseudonymize,
    read_lab_secret,
)
from capturelab.transport import producer_config

log = logging.getLogger("capturelab.collector")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass
class Counters:
    read: int = 0
    malformed: int = 0
    sealed_events: int = 0
    sealed_batches: int = 0
    discarded_after_consent_end: int = 0
    seal_errors: int = 0


class Collector:
    def __init__(
        self,
        config: CollectorConfig,
        *,
        producer_factory: Any = None,
        clock: Any = None,
    ) -> None:
        self.config = config
        self.clock = clock or (lambda: datetime.now(UTC))
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self.secret = read_lab_secret(config.lab_secret_file)
        self.dictionary = self._dictionary()
        # Person names at the edge need the names extra; without it the daemon refuses to start.
        self.recognisers = [person_recogniser()] if config.person_names else []
        self.counters = Counters()
        self.state = "starting"
        self.reason = ""
        self.decision: Decision | None = None
        self.record: ConsentRecord | None = None
        self.grant_signature: Signature | None = None
        self.pseudonym = b""
        self.edge: EdgeFilter | None = None
        self.readers: dict[Path, evdev.DeviceReader] = {}
        self.waiting: dict[Path, str] = {}
        self.context: ContextSource | None = None
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self._consent_mtimes: tuple[float | None, float | None] = (-1.0, -1.0)
        self._next_consent = 0.0
        self._next_rescan = 0.0
        self._next_status = 0.0
        self._seal_at = 0.0
        self._last_seal = time.monotonic()
        self._next_poll = 0.0
        self._next_shot = 0.0
        self.screenshot_note = "off" if config.screenshot_interval_s <= 0 else "waiting"
        self._spool_paused = False
        self._rate = (time.monotonic(), 0, 0.0)
        self._published = self._load_published()
        kafka = producer_config(
            config.bootstrap_servers,
            client_id=f"capturelab-collector-{config.collector_id}",
            security=config.security,
            overrides={"message.timeout.ms": config.message_timeout_ms},
        )
        extra = {} if producer_factory is None else {"producer_factory": producer_factory}
        self.delivery = Delivery(
            self.spool, kafka, config.capture_topic, config.collector_id, **extra
        )
        self._server = self._control_server()
        self._make_injection_fifos()

    def _make_injection_fifos(self) -> None:
        """Where synth injects (no /dev/uinput): the FIFOs belong to the service's group."""
        inject = self.config.inject_dir
        if inject is None:
            return
        inject.mkdir(parents=True, exist_ok=True)
        for name in ("keyboard-0.evdev", "mouse-0.evdev", "context.fifo"):
            if not (inject / name).exists():
                os.mkfifo(inject / name, 0o660)

    def _dictionary(self) -> zstandard.ZstdCompressionDict | None:
        path = self.config.dictionary_file
        return None if path is None else load_dictionary(path)

    # --- consent ----------------------------------------------------------------------------

    def _load_consent(self) -> None:
        """Re-read the record and the trust file when either changed; refuse, never exit."""
        path, trust_path = self.config.consent_file, self.config.consent_authority_file
        mtimes = (_mtime(path), _mtime(trust_path))
        if mtimes == self._consent_mtimes:
            return
        self._consent_mtimes = mtimes
        self.record, self.grant_signature = None, None
        if mtimes[0] is None:
            self.reason = f"no consent record at {path}: nothing is captured"
            return
        try:
            signed = load_signed_record(path, load_trust(trust_path), self.secret)
        except InputError as exc:
            self.reason = f"consent record refused ({exc}): nothing is captured"
            log.error("%s", self.reason)
            return
        self.record, self.grant_signature = signed.record, signed.grant_signature
        log.info("consent record %s: signed by authority key %s", path, signed.signature.key)

    def _region_refusal(self, record: ConsentRecord) -> str:
        """Why an excluded region forbids capture ('' when neither region is excluded)."""
        refusal = self.config.regions.refusal(record.region)
        return f"{refusal}: nothing is captured" if refusal else ""

    def check_consent(self) -> None:
        self._load_consent()
        now = self.clock()
        if self.record is None:
            self.decision = None
            self._stop_capture(None)
            self.state = "refused"
            return
        decision = decide(self.record, now)
        self.decision = decision
        if not decision.allowed:
            self._stop_capture(self.record)
            self.state, self.reason = "refused", decision.reason
            if decision.status is Status.REVOKED:
                self._publish_revocation(self.record)
            return
        refusal = self._region_refusal(self.record)
        if refusal:
            if self.state != "refused" or self.reason != refusal:
                log.error("%s", refusal)
            self._stop_capture(None)
            self.state, self.reason = "refused", refusal
            return
        pseudonym = pseudonymize(self.secret, self.record.participant_id)
        self._publish_grant(self.record, pseudonym)
        if self.edge is None or self.edge.scopes != decision.scopes or pseudonym != self.pseudonym:
            self._stop_capture(None)
            self.pseudonym = pseudonym
            self.edge = EdgeFilter(
                decision.scopes,
                pause_chord=self.config.pause_chord,
                secret_prompts=self.config.secret_prompts,
                idle_flush_ns=self.config.idle_flush_ms * 1_000_000,
                extra_recognisers=self.recognisers,
            )
            self._next_rescan = 0.0
        self.state, self.reason = "capturing", decision.reason

    def _stop_capture(self, ended: ConsentRecord | None) -> None:
        """Seal what the edge holds (up to the consent's end) and close every device."""
        if self.edge is not None:
            self.edge.flush()
            cutoff = None
            if ended is not None:
                cutoff = int(ended.window_end().timestamp() * 1e9)
            self.seal(cutoff_wall_ns=cutoff)
            self.edge = None
        for path in list(self.readers):
            self._close_reader(path)
        if self.context is not None:
            self._unregister(self.context.fileno())
            self.context.close()
            self.context = None

    def _published_path(self) -> Path:
        return self.config.spool_dir / "revocations.json"

    def _load_published(self) -> set[str]:
        try:
            return set(json.loads(self._published_path().read_text()))
        except (OSError, ValueError):
            return set()

    def _remember(self, marker: str) -> None:
        self._published.add(marker)
        write_atomic(
            self._published_path(), json.dumps(sorted(self._published)).encode(), self.spool.tmp
        )

    def _publish_grant(self, record: ConsentRecord, pseudonym: bytes) -> None:
        """Tell the storage node what this participant agreed to (once per grant, no id)."""
        fields = json.dumps(grant_fields(record), sort_keys=True)
        marker = "grant:" + hashlib.sha256(pseudonym + fields.encode()).hexdigest()
        if marker in self._published:
            return
        message = ControlMessage(
            ControlType.CONSENT_GRANTED,
            pseudonym,
            self.config.collector_id,
            record.granted,
            "consent granted on the collector",
            record,
            self.grant_signature,
        )
        self.spool.put_control(self.config.control_topic, message.key, message.encode())
        self._remember(marker)

    def _publish_revocation(self, record: ConsentRecord) -> None:
        pseudonym = pseudonymize(self.secret, record.participant_id)
        revoked = record.window_end()
        marker = hashlib.sha256(pseudonym + revoked.isoformat().encode()).hexdigest()
        if marker in self._published:
            return
        for ctype in (ControlType.CONSENT_REVOKED, ControlType.ERASURE_REQUESTED):
            message = ControlMessage(
                ctype,
                pseudonym,
                self.config.collector_id,
                revoked,
                "consent revoked on the collector",
                record,
                self.grant_signature,
            )
            self.spool.put_control(self.config.control_topic, message.key, message.encode())
        self._remember(marker)
        log.warning("consent revoked: capture stopped, erasure requested for this participant")

    # --- devices ----------------------------------------------------------------------------

    def _wanted_devices(self) -> list[evdev.DeviceInfo]:
        cfg = self.config
        found = evdev.discover(cfg.sysfs_input_dir, cfg.dev_input_dir)
        wanted: list[evdev.DeviceInfo] = []
        if cfg.devices is None:
            wanted = found
        else:
            by_node = {d.path.name: d for d in found}
            for path in cfg.devices:
                node = path.resolve().name if path.exists() else path.name
                if node in by_node:
                    wanted.append(evdev.DeviceInfo(path, by_node[node].device, by_node[node].name))
                elif path not in self.waiting:
                    self.waiting[path] = "waiting: not present (or not a keyboard/mouse/touchpad)"
                    log.warning("device %s is not present: waiting, retrying every %.0f s", path,
                                cfg.device_rescan_interval_s)  # fmt: skip
        if cfg.inject_dir is not None:
            wanted.extend(evdev.discover_injected(cfg.inject_dir))
        return wanted

    def _rescan(self) -> None:
        if self.context is None and self.config.context != "none":
            self.context = open_source(self.config.context, self.config.inject_dir)
            fd = self.context.fileno() if self.context is not None else None
            if fd is not None:
                self.selector.register(fd, selectors.EVENT_READ, "context")
        for info in self._wanted_devices():
            if info.path in self.readers:
                continue
            reader = evdev.DeviceReader(info)
            try:
                reader.open()
            except OSError as exc:
                if self.waiting.get(info.path) != exc.strerror:
                    log.warning("cannot open %s (%s): retrying", info.path, exc.strerror)
                self.waiting[info.path] = str(exc.strerror)
                continue
            self.waiting.pop(info.path, None)
            self.readers[info.path] = reader
            self.selector.register(reader.fd, selectors.EVENT_READ, info.path)
            log.info("reading %s (%s, %s)", info.path, info.device.name.lower(), info.name)

    def _unregister(self, fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)

    def _close_reader(self, path: Path) -> None:
        reader = self.readers.pop(path)
        self._unregister(reader.fd)
        reader.close()

    def _read_device(self, path: Path, edge: EdgeFilter) -> None:
        reader = self.readers[path]
        records = reader.read()
        if records is None:
            log.warning("device %s went away: waiting for it to return", path)
            self._close_reader(path)
            self.waiting[path] = "went away"
            return
        device = reader.info.device
        offset = time.monotonic_ns() - time.time_ns()
        check = evdev.check_raw
        process = edge.process
        n = 0
        for raw in records:
            n += 1
            problem = check(raw, device)
            if problem is not None:
                self.counters.malformed += 1
                self.spool.quarantine(str(path), evdev.pack(*raw), problem)
                continue
            process(device, raw, raw[0] * 1_000_000_000 + raw[1] * 1000 + offset)
        self.counters.read += n

    def _read_context(self, source: ContextSource, edge: EdgeFilter) -> None:
        try:
            changes = source.read()
        except ConnectionError as exc:
            log.warning("context source lost: %s", exc)
            self._unregister(source.fileno())
            source.close()
            self.context = None
            return
        for app, title in changes:
            wall = time.time_ns()
            edge.context(app, title, time.monotonic_ns(), wall)

    # --- screenshots --------------------------------------------------------------------------

    def _screenshot(self, edge: EdgeFilter, now: float) -> None:
        """One screenshot into its own batch, when granted and no secure input holds."""
        if not edge.wants_screenshot():
            self.screenshot_note = "withheld: " + (
                "secure input" if edge.secure else "the consent does not grant screenshots"
            )
            return
        cfg = self.config
        try:
            image, fmt = screenshot.take(
                cfg.screenshot_tool, cfg.screenshot_scale, cfg.screenshot_quality
            )
        except screenshot.ScreenshotUnavailableError as exc:
            self.screenshot_note = f"unavailable: {exc}"
            return
        if len(image) > MAX_IMAGE_BYTES:
            self.screenshot_note = (
                f"last one too large ({len(image)} bytes): lower screenshot_scale"
            )
        else:
            self.screenshot_note = f"taken ({len(image)} bytes)"
        edge.screenshot(image, fmt, time.monotonic_ns(), time.time_ns())
        self.seal()  # a screenshot goes out in the batch it closes
        self._last_seal = now

    # --- sealing ----------------------------------------------------------------------------

    def seal(self, cutoff_wall_ns: int | None = None) -> None:
        """Number what the edge handed out and queue it as one batch (per batch_max_events)."""
        edge = self.edge
        if edge is None or not edge.out:
            return
        items: list[Item] = edge.out
        if cutoff_wall_ns is not None:
            kept = [i for i in items if i[1] < cutoff_wall_ns]
            self.counters.discarded_after_consent_end += len(items) - len(kept)
            items = kept
        edge.out = []
        step = self.config.batch_max_events
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            try:
                self._seal_chunk(chunk)
            except OSError as exc:
                # Keep what could not be written (ahead of anything newer) and pause.
                edge.out = [*items[start:], *edge.out]
                self.counters.seal_errors += 1
                self.state, self.reason = "paused", f"cannot write the spool: {exc.strerror}"
                log.error("%s", self.reason)
                return

    def _seal_chunk(self, chunk: list[Item]) -> None:
        events = number(chunk, self.spool.next_seq)
        batch = Batch(self.config.collector_id, self.pseudonym, tuple(events))
        frame = encode_batch(batch, level=self.config.zstd_level, dictionary=self.dictionary)
        self.spool.put_batch(frame, events[-1].seq + 1)
        self.counters.sealed_events += len(events)
        self.counters.sealed_batches += 1

    # --- control socket (capturelab collector pause|resume|status) --------------------------

    def _control_server(self) -> socket.socket | None:
        path = self.config.control_socket
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            path.chmod(0o660)
            server.listen(4)
            server.setblocking(False)
        except OSError as exc:
            log.warning("no control socket at %s (%s): pause works by chord only", path, exc)
            return None
        self.selector.register(server, selectors.EVENT_READ, "control")
        return server

    def _handle_control(self, server: socket.socket) -> None:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(1.0)
            try:
                command = conn.recv(64).decode(errors="replace").strip()
            except OSError:
                return
            reply: dict[str, Any]
            if command in ("pause", "resume"):
                if self.edge is None:
                    reply = {"ok": False, "error": f"not capturing ({self.state}: {self.reason})"}
                else:
                    self.edge.set_secure("command", command == "pause")
                    reply = {"ok": True, "secure_input": sorted(self.edge.secure_reasons)}
            elif command == "status":
                reply = {"ok": True, "status": self.status()}
            else:
                reply = {"ok": False, "error": f"unknown command {command!r}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    # --- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        items, size = self.spool.depth()
        now = time.monotonic()
        last_t, last_read, rate = self._rate
        if now - last_t >= 1.0:
            current = (self.counters.read - last_read) / (now - last_t)
            rate = current if last_t == 0 else 0.5 * rate + 0.5 * current
            self._rate = (now, self.counters.read, rate)
        decision = self.decision
        record = self.record
        return {
            "collector_id": self.config.collector_id,
            "updated": datetime.now(UTC).isoformat(),
            "state": self.state,
            "reason": self.reason,
            "consent": {
                "status": decision.status.value if decision else Status.MISSING.value,
                "scopes": sorted(record.scopes) if record else [],
                "expires": record.expires.isoformat() if record else None,
                "lawful_basis": record.lawful_basis.value if record else None,
            },
            "pseudonym": self.pseudonym.hex()[:12] if self.pseudonym else None,
            "secure_input": sorted(self.edge.secure_reasons) if self.edge else [],
            "screenshots": self.screenshot_note,
            "spool": {
                "items": items,
                "bytes": size,
                "max_bytes": self.spool.max_bytes,
                "full": self.spool.full(),
                "next_seq": self.spool.next_seq,
            },
            "delivery": self.delivery.snapshot(),
            "events_per_s": round(rate, 1),
            "counters": {**vars(self.counters), **(vars(self.edge.counters) if self.edge else {})},
            "devices": {
                **{
                    str(p): f"reading ({r.info.device.name.lower()})"
                    for p, r in self.readers.items()
                },
                **{str(p): why for p, why in self.waiting.items()},
            },
        }

    def settled(self) -> bool:
        """Everything read so far is sealed and delivered (the spool is empty)."""
        return not (self.edge is not None and self.edge.holding) and self.spool.depth()[0] == 0

    def write_status(self) -> None:
        doc = self.status()
        write_atomic(self.config.status_path, json.dumps(doc, indent=1).encode(), self.spool.tmp)

    # --- the loop ---------------------------------------------------------------------------

    def step(self, timeout: float = 0.05) -> None:
        """One pass of the capture loop (the tests drive it directly)."""
        now = time.monotonic()
        cfg = self.config
        if now >= self._next_consent:
            self.check_consent()
            self._next_consent = now + cfg.consent_check_interval_s
        capturing = self._capture_allowed_by_spool()
        if capturing and now >= self._next_rescan:
            self._rescan()
            self._next_rescan = now + cfg.device_rescan_interval_s
        for key, _mask in self.selector.select(timeout):
            self._dispatch(key.fileobj, key.data)
        edge = self.edge
        if edge is not None:
            if (
                self.context is not None
                and self.context.fileno() is None
                and now >= self._next_poll
            ):
                self._next_poll = now + 1.0
                self._read_context(self.context, edge)
            edge.tick(time.monotonic_ns())
            if cfg.screenshot_interval_s > 0 and now >= self._next_shot:
                self._next_shot = now + cfg.screenshot_interval_s
                self._screenshot(edge, now)
            held = len(edge.out)
            due = now >= self._seal_at and (
                held >= cfg.batch_min_events
                or now >= self._last_seal + cfg.batch_max_interval_ms / 1000
            )
            if due or held >= cfg.batch_max_events:
                if held:
                    self.seal()
                    self._last_seal = now
                self._seal_at = now + cfg.batch_interval_ms / 1000
        if now >= self._next_status:
            self.write_status()
            self._next_status = now + cfg.status_interval_s

    def _capture_allowed_by_spool(self) -> bool:
        """Pause capture (close the devices) while the spool is full; resume below the mark."""
        capturing = self.edge is not None
        if capturing and self.spool.full():
            if not self._spool_paused:
                log.warning("spool full: capture paused until the gateway takes the backlog")
                for path in list(self.readers):
                    self._close_reader(path)
                self._spool_paused = True
            self.state = "paused"
            self.reason = (
                f"capture paused: spool full ({self.spool.depth()[1]} of {self.spool.max_bytes} "
                "bytes); it resumes when the gateway takes the backlog"
            )
            return False
        if self._spool_paused and not self.spool.full():
            log.info("spool below its resume mark: capture resumes")
            self._spool_paused = False
            self._next_rescan = 0.0
            if capturing:
                self.state = "capturing"
        return capturing

    def _dispatch(self, fileobj: Any, data: Any) -> None:
        edge = self.edge
        if data == "control" and isinstance(fileobj, socket.socket):
            self._handle_control(fileobj)
        elif data == "context":
            if edge is not None and self.context is not None:
                self._read_context(self.context, edge)
        elif data in self.readers and edge is not None:
            self._read_device(data, edge)

    def run(self, max_seconds: float | None = None) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self.delivery.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        log.info("collector %s started (spool %s)", self.config.collector_id, self.spool.root)
        try:
            while not self.stopping and (deadline is None or time.monotonic() < deadline):
                self.step()
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stopping = True

    def shutdown(self, drain_s: float = 5.0) -> None:
        """Seal what is held, stop reading, send what Kafka will take within ``drain_s``."""
        self._stop_capture(None)
        self.state, self.reason = "stopped", "the daemon stopped"
        if self.delivery.is_alive():
            self.delivery.stop(drain_s)
        self.write_status()
        if self._server is not None:
            self._server.close()
            self.config.control_socket.unlink(missing_ok=True)
