"""The collector's parts, each alone: the consent gate, the sealer, the device set, the control socket.

``test_collector_kafka.py`` and friends run them together in the daemon against a real broker;
these drive one class with nothing else around it.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from collectorkit import SECRET, collector_config, write_consent

from capturelab import keys
from capturelab.collector import evdev
from capturelab.collector.control import ControlSocket
from capturelab.collector.daemon import Counters
from capturelab.collector.devices import DeviceSet
from capturelab.collector.edge import EdgeFilter
from capturelab.collector.gate import ConsentGate
from capturelab.collector.sealer import Sealer
from capturelab.collector.spool import Spool
from capturelab.consent import ControlMessage, ControlType, Scope
from capturelab.schema import DeviceClass, decode_batch, pseudonymize

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _gate(tmp_path: Path, **extra: object) -> tuple[ConsentGate, Spool]:
    config = collector_config(tmp_path, "mock:9092", **extra)
    spool = Spool(config.spool_dir, config.spool_max_bytes)
    return ConsentGate(config, SECRET, spool, lambda: NOW), spool


def _announced(spool: Spool) -> list[ControlType]:
    items = [i for i in spool.pending() if i.is_control]
    return [ControlMessage.decode(Spool.read_control(i)[2]).type for i in items]


def test_gate_refuses_without_a_record_then_allows_and_announces_once(tmp_path: Path):
    gate, spool = _gate(tmp_path)
    verdict = gate.check()
    assert not verdict.allowed and "no consent record" in verdict.reason
    write_consent(tmp_path / "consent.yml", ["keys:timing", "mouse"])
    verdict = gate.check()
    assert verdict.allowed and verdict.scopes == {Scope.KEYS_TIMING, Scope.MOUSE}
    assert verdict.pseudonym == pseudonymize(SECRET, "p-0001")
    assert gate.check().allowed
    assert _announced(spool) == [ControlType.CONSENT_GRANTED], "one grant, announced once"


def test_gate_refuses_an_excluded_region_and_announces_nothing(tmp_path: Path):
    gate, spool = _gate(tmp_path)
    write_consent(tmp_path / "consent.yml", ["mouse"], region="eu")
    verdict = gate.check()
    assert not verdict.allowed and verdict.reason.endswith("nothing is captured")
    assert "eu" in verdict.reason and _announced(spool) == []


def test_gate_revocation_ends_the_window_and_is_announced_once(tmp_path: Path):
    gate, spool = _gate(tmp_path)
    write_consent(tmp_path / "consent.yml", ["mouse"], revoked="2026-05-01T00:00:00Z")
    verdict = gate.check()
    assert not verdict.allowed and verdict.ended is not None and "revoked" in verdict.reason
    gate.check()
    announced = _announced(spool)
    assert announced == [ControlType.CONSENT_REVOKED, ControlType.ERASURE_REQUESTED]
    spool.close()
    again, spool_again = _gate(tmp_path)  # a restart remembers what it announced
    again.check()
    assert _announced(spool_again) == announced


def test_gate_refuses_an_altered_record(tmp_path: Path):
    gate, _ = _gate(tmp_path)
    path = tmp_path / "consent.yml"
    write_consent(path, ["mouse"])
    path.write_text(path.read_text().replace("- mouse\n", "- mouse\n- screenshots\n"))
    verdict = gate.check()
    assert not verdict.allowed and "consent record refused" in verdict.reason


def _edge_with(n: int, wall0: int = 1_000) -> EdgeFilter:
    edge = EdgeFilter({Scope.MOUSE})
    edge.out = [(i, wall0 + i, DeviceClass.MOUSE, keys.EV_REL, keys.REL_X, 1, 0) for i in range(n)]
    return edge


def _sealer(tmp_path: Path, **extra: object) -> tuple[Sealer, Spool, Counters]:
    config = collector_config(tmp_path, "mock:9092", **extra)
    spool = Spool(config.spool_dir, config.spool_max_bytes)
    counters = Counters()
    sealer = Sealer(config, spool, counters)
    sealer.pseudonym = pseudonymize(SECRET, "p-0001")
    return sealer, spool, counters


def test_sealer_numbers_in_order_and_splits_at_the_batch_bound(tmp_path: Path):
    sealer, spool, counters = _sealer(tmp_path, batch_max_events=4)
    edge = _edge_with(10)
    assert sealer.seal(edge) == ""
    frames = [decode_batch(i.path.read_bytes()) for i in spool.pending()]
    assert [len(b.events) for b in frames] == [4, 4, 2]
    assert [e.seq for b in frames for e in b.events] == list(range(10))
    assert (counters.sealed_events, counters.sealed_batches, edge.out) == (10, 3, [])


def test_sealer_drops_what_came_after_the_consent_ended(tmp_path: Path):
    sealer, spool, counters = _sealer(tmp_path)
    assert sealer.seal(_edge_with(10), cutoff_wall_ns=1_006) == ""
    assert [len(decode_batch(i.path.read_bytes()).events) for i in spool.pending()] == [6]
    assert counters.discarded_after_consent_end == 4


def test_sealer_keeps_what_the_spool_cannot_take(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sealer, spool, counters = _sealer(tmp_path, batch_max_events=4)

    def full(frame: bytes, next_seq: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "put_batch", full)
    edge = _edge_with(6)
    before = list(edge.out)
    assert sealer.seal(edge) == "cannot write the spool: No space left on device"
    assert edge.out == before and counters.seal_errors == 1 and counters.sealed_events == 0


def test_device_set_reads_injected_devices_and_waits_for_missing_ones(tmp_path: Path):
    missing = tmp_path / "no-such-event9"
    config = collector_config(tmp_path, "mock:9092", devices=[str(missing)], context="none")
    inject = tmp_path / "inject"
    inject.mkdir()
    os.mkfifo(inject / "keyboard-0.evdev")
    spool = Spool(config.spool_dir, config.spool_max_bytes)
    counters = Counters()
    selector = selectors.DefaultSelector()
    devices = DeviceSet(config, selector, spool, counters)
    writer = os.open(inject / "keyboard-0.evdev", os.O_RDWR | os.O_NONBLOCK)
    try:
        devices.rescan()
        assert devices.describe() == {
            str(inject / "keyboard-0.evdev"): "reading (keyboard)",
            str(missing): "waiting: not present (or not a keyboard/mouse/touchpad)",
        }
        edge = EdgeFilter({Scope.KEYS_TIMING})
        os.write(writer, evdev.pack(int(time.time()), 0, keys.EV_KEY, 30, 1))
        os.write(writer, evdev.pack(int(time.time()), 0, 0x20, 0, 0))  # type above EV_MAX
        devices.read(inject / "keyboard-0.evdev", edge)
        assert (counters.read, counters.malformed) == (2, 1)
        assert "above EV_MAX" in (spool.quarantine_dir / "records.jsonl").read_text()
        devices.close_all()
        assert devices.readers == {} and not selector.get_map()
    finally:
        os.close(writer)


def test_control_socket_answers_and_survives_a_silent_client(tmp_path: Path):
    selector = selectors.DefaultSelector()
    control = ControlSocket(tmp_path / "run" / "control.sock", selector, lambda c: {"got": c})
    assert (
        control.server is not None
        and (tmp_path / "run" / "control.sock").stat().st_mode & 0o777 == 0o660
    )

    def ask(text: str) -> dict[str, str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "run" / "control.sock"))
            client.sendall(text.encode())
            control.accept()
            return dict(json.loads(client.recv(256)))

    assert ask("status\n") == {"got": "status"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(tmp_path / "run" / "control.sock"))
        started = time.monotonic()
        control.accept()  # nothing sent: one second at most, no error
        assert time.monotonic() - started < 3
    control.close()
    assert not (tmp_path / "run" / "control.sock").exists()


def test_control_socket_that_cannot_bind_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "file").write_text("not a folder")
    control = ControlSocket(tmp_path / "file" / "control.sock", selectors.DefaultSelector(), dict)
    assert control.server is None and "pause works by chord only" in caplog.text
    control.accept()
    control.close()
