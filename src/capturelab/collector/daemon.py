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

Each responsibility is a class of its own, tested alone: ``ConsentGate`` (gate.py: the record,
the decision, the announcements), ``DeviceSet`` (devices.py: devices and the context source),
``Sealer`` (sealer.py: numbering and sealing), ``ControlSocket`` (control.py). ``Collector``
holds the loop, the edge filter and the state they share.
"""

from __future__ import annotations

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

from capturelab.collector import evdev, screenshot
from capturelab.collector.config import CollectorConfig
from capturelab.collector.context import ContextSource, running_lock_screen
from capturelab.collector.control import ControlSocket
from capturelab.collector.delivery import Delivery
from capturelab.collector.devices import DeviceSet
from capturelab.collector.edge import FOCUS_UNKNOWN, LOCK_SCREEN, EdgeFilter
from capturelab.collector.gate import ConsentGate, Verdict
from capturelab.collector.sealer import Sealer
from capturelab.collector.spool import Spool
from capturelab.consent import ConsentRecord, Scope, Status
from capturelab.durable import write_atomic
from capturelab.exclusions import Exclusions
from capturelab.names import person_recogniser
from capturelab.schema import MAX_IMAGE_BYTES, FrameSigner, load_dictionary, read_lab_secret
from capturelab.transport import producer_config

log = logging.getLogger("capturelab.collector")


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
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        secret = read_lab_secret(config.lab_secret_file)
        # Person names at the edge need the names extra; without it the daemon refuses to start.
        self.recognisers = [person_recogniser()] if config.person_names else []
        self.counters = Counters()
        self.state = "starting"
        self.reason = ""
        self.edge: EdgeFilter | None = None
        self.selector = selectors.DefaultSelector()
        self.gate = ConsentGate(config, secret, self.spool, clock or (lambda: datetime.now(UTC)))
        self.devices = DeviceSet(config, self.selector, self.spool, self.counters)
        self.sealer = Sealer(
            config, self.spool, self.counters, self._dictionary(), signer=self._signer
        )
        self.stopping = False
        self._next_consent = 0.0
        self._next_rescan = 0.0
        self._next_status = 0.0
        self._seal_at = 0.0
        self._last_seal = time.monotonic()
        self._next_poll = 0.0
        self._next_lock_check = 0.0
        self.lock_check = "not yet"
        self._next_shot = 0.0
        self.screenshot_note = "off" if config.screenshot_interval_s <= 0 else "waiting"
        self._spool_paused = False
        self._rate = (time.monotonic(), 0, 0.0)
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
        self.control = ControlSocket(config.control_socket, self.selector, self._command)
        self._make_injection_fifos()

    # What the tests and the status read, kept where they always were.
    @property
    def readers(self) -> dict[Path, evdev.DeviceReader]:
        return self.devices.readers

    @property
    def waiting(self) -> dict[Path, str]:
        return self.devices.waiting

    @property
    def context(self) -> ContextSource | None:
        return self.devices.context

    @property
    def pseudonym(self) -> bytes:
        return self.sealer.pseudonym

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

    def check_consent(self) -> None:
        """Ask the gate; start, re-scope or stop capture by its verdict."""
        verdict = self.gate.check()
        if not verdict.allowed:
            self._stop_capture(verdict.ended)
            self.state, self.reason = "refused", verdict.reason
            return
        edge = self.edge
        exclude = self.config.exclude.joined(verdict.exclude)
        if (
            edge is None
            or edge.scopes != verdict.scopes
            or edge.exclusions != exclude
            or verdict.pseudonym != self.pseudonym
        ):
            self._start_capture(verdict, exclude)
        self.state, self.reason = "capturing", verdict.reason

    def _start_capture(self, verdict: Verdict, exclude: Exclusions) -> None:
        """A new edge for the verdict. One that follows another (a re-scope) takes over its
        held keys, modes and last focus; a first one withholds everything until the context
        source reports the focus (when there is a source)."""
        old = self.edge
        self._stop_capture(None, keep_context=old is not None)
        self.sealer.pseudonym = verdict.pseudonym
        edge = EdgeFilter(
            verdict.scopes,
            pause_chord=self.config.pause_chord,
            secret_prompts=self.config.secret_prompts,
            idle_flush_ns=self.config.idle_flush_ms * 1_000_000,
            extra_recognisers=self.recognisers,
            exclusions=exclude,
            watch_focus=self.config.context != "none",
        )
        if old is not None:
            edge.inherit(old)
            if self.devices.context is None and self.config.context != "none":
                edge.set_excluded(FOCUS_UNKNOWN, True, time.monotonic_ns(), time.time_ns())
        self.edge = edge
        self._next_rescan = 0.0
        self._next_lock_check = 0.0  # before the first device is read

    def _stop_capture(self, ended: ConsentRecord | None, *, keep_context: bool = False) -> None:
        """Seal what the edge holds (up to the consent's end) and close every device (and the
        context source, unless a new edge takes over at once)."""
        if self.edge is not None:
            self.edge.flush()
            cutoff = None
            if ended is not None:
                cutoff = int(ended.window_end().timestamp() * 1e9)
            self.seal(cutoff_wall_ns=cutoff)
            self.edge = None
        if keep_context:
            self.devices.close_devices()
        else:
            self.devices.close_all()

    def _check_lock_screen(self, edge: EdgeFilter) -> None:
        """While a screen locker runs, the edge withholds everything (its password first)."""
        try:
            locker = running_lock_screen(self.config.lock_screens)
            self.lock_check = "on" if self.config.lock_screens else "off (lock_screens is [])"
        except OSError as exc:
            locker = ""
            if not self.lock_check.startswith("failed"):
                log.error("cannot look for a lock screen in /proc: %s", exc)
            self.lock_check = f"failed: {exc} (a lock screen is not seen)"
        if not locker and LOCK_SCREEN in edge.excluded_reasons:
            self.devices.drain(edge)  # typed at the lock screen: withheld with it
        if bool(locker) != (LOCK_SCREEN in edge.excluded_reasons):
            log.info("screen %s: %s", "locked" if locker else "unlocked",
                     "nothing is captured until it ends" if locker else "capture resumes")  # fmt: skip
        edge.set_excluded(LOCK_SCREEN, bool(locker), time.monotonic_ns(), time.time_ns())

    # --- screenshots --------------------------------------------------------------------------

    def _screenshot(self, edge: EdgeFilter, now: float) -> None:
        """One screenshot into its own batch, when granted and no secure input holds."""
        refusal = edge.screenshot_refusal()
        if refusal:
            self.screenshot_note = f"withheld: {refusal}"
            if edge.excluded and Scope.SCREENSHOTS in edge.scopes:
                edge.counters.screenshots_excluded += 1
            return
        cfg = self.config
        spans = edge.counters.excluded_spans
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
        self.devices.read_context(edge)  # the focus may have moved while the tool ran
        if edge.excluded or edge.counters.excluded_spans != spans:
            # An excluded window had focus for some of the time the tool ran: not kept.
            self.screenshot_note = "withheld: an excluded span began while it was taken"
            edge.counters.screenshots_excluded += 1
            return
        edge.screenshot(image, fmt, time.monotonic_ns(), time.time_ns())
        self.seal()  # a screenshot goes out in the batch it closes
        self._last_seal = now

    # --- sealing ----------------------------------------------------------------------------

    def seal(self, cutoff_wall_ns: int | None = None) -> None:
        """Seal what the edge handed out; pause (keeping it) when the spool cannot take it."""
        if self.edge is None:
            return
        problem = self.sealer.seal(self.edge, cutoff_wall_ns)
        if problem:
            self.state, self.reason = "paused", problem
            log.error("%s", self.reason)

    # --- control socket (capturelab collector pause|resume|status) --------------------------

    def _command(self, command: str) -> dict[str, Any]:
        if command in ("pause", "resume"):
            if self.edge is None:
                return {"ok": False, "error": f"not capturing ({self.state}: {self.reason})"}
            self.edge.set_secure("command", command == "pause")
            return {"ok": True, "secure_input": sorted(self.edge.secure_reasons)}
        if command == "status":
            return {"ok": True, "status": self.status()}
        return {"ok": False, "error": f"unknown command {command!r}"}

    # --- status -----------------------------------------------------------------------------

    def _signer(self) -> FrameSigner | None:
        """The collector key's frame signer while the gate holds a certified key."""
        return None if self.gate.key is None else self.gate.key.sign_frame

    def _frame_key(self) -> str:
        """Which key signs the frames, or why none does."""
        key = self.gate.key
        if self.config.identity_key is None:
            return "unsigned: identity_key is not set"
        if self.gate.key_refused:
            held = f"; what was captured before is sealed with {key.key_id}" if key else ""
            return f"refused (see reason){held}"
        return key.key_id if key else "not loaded yet"

    def _events_per_s(self) -> float:
        now = time.monotonic()
        last_t, last_read, rate = self._rate
        if now - last_t >= 1.0:
            current = (self.counters.read - last_read) / (now - last_t)
            rate = current if last_t == 0 else 0.5 * rate + 0.5 * current
            self._rate = (now, self.counters.read, rate)
        return rate

    def status(self) -> dict[str, Any]:
        items, size = self.spool.depth()
        decision, record = self.gate.decision, self.gate.record
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
            # Whose key signs the frames: its id, or why frames go unsigned.
            "frame_key": self._frame_key(),
            "secure_input": sorted(self.edge.secure_reasons) if self.edge else [],
            "excluded": sorted(self.edge.excluded_reasons) if self.edge else [],
            "lock_screen_check": self.lock_check,
            "focus_source": self.devices.context_note,
            "screenshots": self.screenshot_note,
            "spool": {
                "items": items,
                "bytes": size,
                "max_bytes": self.spool.max_bytes,
                "full": self.spool.full(),
                "next_seq": self.spool.next_seq,
            },
            "delivery": self.delivery.snapshot(),
            "events_per_s": round(self._events_per_s(), 1),
            "counters": {**vars(self.counters), **(vars(self.edge.counters) if self.edge else {})},
            "devices": self.devices.describe(),
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
        if self.edge is not None and now >= self._next_lock_check:
            self._next_lock_check = now + 1.0
            self._check_lock_screen(self.edge)
        if capturing and now >= self._next_rescan:
            self.devices.rescan()
            self._next_rescan = now + cfg.device_rescan_interval_s
        edge = self.edge
        polled = self.context is not None and self.context.fileno() is None
        if edge is not None and polled and now >= self._next_poll:  # X11: before any input
            self._next_poll = now + 1.0
            self.devices.read_context(edge)
        # The focus before the input of the same pass: a key typed after a focus change is
        # judged under the new window.
        ready = sorted(self.selector.select(timeout), key=lambda r: r[0].data != "context")
        for key, _mask in ready:
            self._dispatch(key.fileobj, key.data)
        edge = self.edge
        if edge is not None:
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
        """Pause capture (close the devices) while the spool is full or cannot be written;
        resume below the mark, or once the file system has room again. A consent check in
        between does not resume it (this runs after it, every pass)."""
        capturing = self.edge is not None
        if capturing and self.spool.full():
            self.state, self.reason = "paused", f"capture paused: {self.spool.pause_reason()}"
            if not self._spool_paused:
                log.warning("%s", self.reason)
                self.devices.close_devices()
                self._spool_paused = True
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
            self.control.accept()
        elif data == "context":
            if edge is not None:
                self.devices.read_context(edge)
        elif data in self.readers and edge is not None:
            self.devices.read(data, edge)

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
        self.control.close()
        self.spool.close()  # the next daemon on this spool may start
