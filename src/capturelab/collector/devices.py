"""The collector's device set: the input devices and the context source it reads, as they come and go.

Invariants: a device that is not there, or cannot be opened, is waited for (its reason is kept
for the status) and retried on every rescan, never fatal; a device that goes away is closed and
waited for again; a malformed record is counted and quarantined in the spool with the reason,
never passed on; every open file descriptor is registered with the capture loop's selector and
unregistered when it closes.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
from pathlib import Path
from typing import Protocol

from capturelab.collector import evdev
from capturelab.collector.config import CollectorConfig
from capturelab.collector.context import ContextSource, open_source
from capturelab.collector.edge import FOCUS_UNKNOWN, EdgeFilter
from capturelab.collector.spool import Spool

log = logging.getLogger("capturelab.collector")


class ReadCounters(Protocol):
    read: int
    malformed: int


class DeviceSet:
    def __init__(
        self,
        config: CollectorConfig,
        selector: selectors.BaseSelector,
        spool: Spool,
        counters: ReadCounters,
    ) -> None:
        self.config = config
        self.selector = selector
        self.spool = spool
        self.counters = counters
        self.readers: dict[Path, evdev.DeviceReader] = {}
        self.waiting: dict[Path, str] = {}
        self.context: ContextSource | None = None
        self.context_note = "none" if config.context == "none" else "not opened yet"

    # --- which devices ------------------------------------------------------------------------

    def wanted(self) -> list[evdev.DeviceInfo]:
        """Every configured device that is present (all of sysfs's with ``devices: auto``)."""
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

    def rescan(self) -> None:
        """Open the context source and every wanted device not open yet."""
        if self.context is None and self.config.context != "none":
            opened = open_source(self.config.context, self.config.inject_dir)
            if isinstance(opened, str):
                if opened != self.context_note:
                    log.warning("context source %s: %s: nothing is captured until it reports "
                                "the focused window", self.config.context, opened)  # fmt: skip
                self.context_note = opened
            else:
                self.context, self.context_note = opened, f"{self.config.context}: open"
                fd = opened.fileno()
                if fd is not None:
                    self.selector.register(fd, selectors.EVENT_READ, "context")
        for info in self.wanted():
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

    # --- closing ------------------------------------------------------------------------------

    def _unregister(self, fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)

    def close(self, path: Path) -> None:
        reader = self.readers.pop(path)
        self._unregister(reader.fd)
        reader.close()

    def close_devices(self) -> None:
        for path in list(self.readers):
            self.close(path)

    def close_all(self) -> None:
        """Every device and the context source."""
        self.close_devices()
        if self.context is not None:
            self._unregister(self.context.fileno())
            self.context.close()
            self.context = None

    # --- reading ------------------------------------------------------------------------------

    def read(self, path: Path, edge: EdgeFilter) -> None:
        """What the device has ready, checked, into the edge (malformed records quarantined)."""
        reader = self.readers[path]
        records = reader.read()
        if records is None:
            log.warning("device %s went away: waiting for it to return", path)
            self.close(path)
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

    def read_context(self, edge: EdgeFilter) -> None:
        """Focus changes into the edge. While the edge withholds everything, the devices are
        drained before each change, so input typed in an excluded span stays withheld. A lost
        source is closed (the focus is unknown: nothing is captured) and reopened on the next
        rescan."""
        source = self.context
        if source is None:
            return
        try:
            changes = source.read()
        except ConnectionError as exc:
            log.warning("context source lost: %s: nothing is captured until it is back", exc)
            self._unregister(source.fileno())
            source.close()
            self.context, self.context_note = None, f"lost: {exc}"
            edge.set_excluded(FOCUS_UNKNOWN, True, time.monotonic_ns(), time.time_ns())
            return
        for app, title in changes:
            if edge.excluded:
                self.drain(edge)  # typed in the span: withheld, not judged under the next window
            edge.context(app, title, time.monotonic_ns(), time.time_ns())

    def drain(self, edge: EdgeFilter) -> None:
        """The input every open device has queued, into the edge now (never blocks)."""
        for path in list(self.readers):
            if path in self.readers:
                self.read(path, edge)

    def describe(self) -> dict[str, str]:
        """Each device and what it is doing (the status's ``devices``)."""
        return {
            **{str(p): f"reading ({r.info.device.name.lower()})" for p, r in self.readers.items()},
            **{str(p): why for p, why in self.waiting.items()},
        }
