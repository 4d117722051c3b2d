"""Excluded windows and lock screens through the running daemon: nothing of them is sealed."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from collectorkit import Gate, collector_config, running, typed_text, wait_for, write_consent

from capturelab import keys
from capturelab.collector import synth
from capturelab.collector.daemon import Collector
from capturelab.exclusions import Exclusions
from capturelab.schema import (
    ContextEvent,
    DeviceClass,
    EventFlag,
    InputEvent,
    ScreenshotEvent,
    decode_batch,
)


def _session(steps: list[tuple[str, Any]]) -> synth.Session:
    b = synth._Builder(random.Random(7), 52, 125)  # noqa: S311 - synthetic typing
    for what, arg in steps:
        if what == "focus":
            b.focus(*arg)
        elif what == "type":
            b.type_text(arg)
            b.press("KEY_ENTER")
        else:
            b.move_and_click()
    return b.s


def _sealed() -> list[Any]:
    return [e for t, v in Gate.sent if t == "capture.events" for e in decode_batch(v).events]


def _play(c: Collector, injector: synth.FifoInjector, session: synth.Session) -> None:
    read = c.counters.read
    synth.play(session, injector, 0)
    want = read + len(session.keyboard) + len(session.mouse)
    wait_for(lambda: c.counters.read >= want, "every injected event read")
    wait_for(c.settled, "everything sealed and delivered", timeout=60)


def test_excluded_windows_of_the_defaults_config_and_record_seal_nothing(tmp_path: Path) -> None:
    config = collector_config(tmp_path, "127.0.0.1:9092", exclude={"titles": ["Bank of"]})
    write_consent(
        config.consent_file, ["keys:text", "mouse", "context"], exclude="{apps: ['^signal$']}"
    )
    session = _session(
        [
            ("focus", ("xterm", "alice@lab: ~")),
            ("type", "echo before"),
            ("focus", ("org.keepassxc.KeePassXC", "Passwords.kdbx - KeePassXC")),
            ("type", "CanaryVault1!"),
            ("click", None),
            ("focus", ("firefox", "New Tab — Mozilla Firefox Private Browsing")),
            ("type", "canary private search"),
            ("focus", ("firefox", "Bank of Nowhere — Mozilla Firefox")),  # the config's
            ("type", "canary iban"),
            ("focus", ("signal", "Signal")),  # the record's
            ("type", "canary chat"),
            ("click", None),
            ("focus", ("xterm", "alice@lab: ~")),
            ("type", "echo after"),
        ]
    )
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: c.state == "capturing", "capture to start")
        _play(c, injector, session)
        status = c.status()
    injector.close()
    events = _sealed()
    assert typed_text(events) == "echo before\necho after\n"
    contexts = [(e.app, e.title, e.flags) for e in events if isinstance(e, ContextEvent)]
    assert contexts == [
        ("xterm", "alice@lab: ~", EventFlag.NONE),
        ("", "", EventFlag.EXCLUDED),  # one mark for the four excluded windows in a row
        ("xterm", "alice@lab: ~", EventFlag.NONE),
    ]
    # Between the mark and the next window: not one key, button, motion or sync event.
    mark = next(i for i, e in enumerate(events) if isinstance(e, ContextEvent) and e.flags)
    assert isinstance(events[mark + 1], ContextEvent)
    clicks = [e for e in events if isinstance(e, InputEvent) and e.device is DeviceClass.MOUSE]
    assert clicks == []  # both clicks were in excluded windows
    counters = status["counters"]
    patterns = config.exclude.joined(Exclusions(apps=("^signal$",)))
    want = session.excluded_presses(patterns)  # what synth's manifest would count
    assert (counters["excluded_keys"], counters["excluded_clicks"]) == (
        want["keys"],
        want["clicks"],
    ) == (63, 2)  # fmt: skip
    assert counters["excluded_spans"] == 1 and status["excluded"] == []


def test_a_running_lock_screen_seals_nothing_until_it_ends(tmp_path: Path) -> None:
    config = collector_config(tmp_path, "127.0.0.1:9092", lock_screens=["cl-test-lock"])
    write_consent(config.consent_file, ["keys:text", "mouse", "context"])
    locker = tmp_path / "cl-test-lock"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", locker)
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: c.state == "capturing", "capture to start")
        _play(c, injector, _session([("focus", ("xterm", "~")), ("type", "echo one")]))
        proc = subprocess.Popen([str(locker), "120"])
        try:
            wait_for(lambda: c.status()["excluded"] == ["lock screen"], "the lock to be seen", 10)
            _play(c, injector, _session([("type", "CanaryUnlock9"), ("click", None)]))
        finally:
            proc.kill()
            proc.wait()
        wait_for(lambda: c.status()["excluded"] == [], "the unlock to be seen", 10)
        _play(c, injector, _session([("type", "echo two")]))
        status = c.status()
    injector.close()
    events = _sealed()
    assert typed_text(events) == "echo one\necho two\n"
    contexts = [(e.app, e.title, e.flags) for e in events if isinstance(e, ContextEvent)]
    assert contexts == [("xterm", "~", 0), ("", "", EventFlag.EXCLUDED), ("xterm", "~", 0)]
    assert status["counters"]["excluded_clicks"] == 1
    assert status["counters"]["excluded_keys"] >= len("CanaryUnlock9") + 1


def test_a_consent_re_scoped_while_an_excluded_window_has_focus_keeps_it_excluded(
    tmp_path: Path,
) -> None:
    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:text", "mouse", "context"])
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: c.state == "capturing", "capture to start")
        _play(c, injector, _session([("focus", synth.VAULT), ("type", "first")]))
        first = c.status()["counters"]["excluded_keys"]
        write_consent(config.consent_file, ["keys:timing", "mouse", "context"])  # re-scoped
        wait_for(lambda: c.edge is not None and "keys:text" not in c.edge.scopes, "the re-scope")
        _play(c, injector, _session([("type", "CanaryAfterRescope")]))
        status = c.status()
        _play(c, injector, _session([("focus", ("xterm", "~")), ("type", "back")]))
    injector.close()
    events = _sealed()
    keys_out = [e for e in events if isinstance(e, InputEvent) and e.type == keys.EV_KEY]
    assert status["excluded"] == ["window"]
    assert status["counters"]["excluded_keys"] > first > 0  # counted on, not reset
    assert len(keys_out) == 2 * (len("back") + 1)  # only what was typed in the terminal


def test_a_focus_change_and_keys_ready_together_are_judged_focus_first(tmp_path: Path) -> None:
    """One pass of the loop finds the keyboard and the context source both readable: the focus
    is read first, so keys typed around a switch to the vault are withheld, never sent."""
    from capturelab.collector import evdev  # noqa: PLC0415

    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:text", "mouse", "context"])
    injector = synth.FifoInjector(config.inject_dir)
    c = Collector(config, producer_factory=Gate)
    try:
        injector.focus("xterm", "~")
        deadline = time.monotonic() + 30
        while not (c.edge is not None and not c.edge.excluded and len(c.readers) == 2):
            assert time.monotonic() < deadline, "the collector did not start capturing"
            c.step(0.05)
        t = time.time_ns()
        press = evdev.pack(t // 10**9, t % 10**9 // 1000, keys.EV_KEY, keys.K["KEY_H"], 1)
        release = evdev.pack(t // 10**9, t % 10**9 // 1000, keys.EV_KEY, keys.K["KEY_H"], 0)
        kept = c.edge.counters.kept
        # Whatever order the kernel reports ready files in: here the context source last.
        select = c.selector.select
        c.selector.select = lambda t=None: sorted(  # type: ignore[method-assign]
            select(t), key=lambda r: r[0].data == "context"
        )
        injector.key(DeviceClass.KEYBOARD, press + release)  # the keys are written first
        injector.focus(*synth.VAULT)
        c.step(0.5)
        assert c.edge.excluded_reasons == {"window"}
        counters = c.edge.counters
        assert (counters.kept, counters.excluded_keys, counters.excluded_other) == (kept, 1, 1)
    finally:
        injector.close()
        c.shutdown(drain_s=0)


def test_a_screenshot_is_dropped_when_the_focus_moved_to_the_vault_while_it_was_taken(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import os  # noqa: PLC0415

    fifo = tmp_path / "inject" / "context.fifo"
    grim = tmp_path / "bin" / "grim"
    grim.parent.mkdir()
    grim.write_text(
        "#!/bin/sh\n"
        f'printf \'{{"app": "keepassxc", "title": ""}}\\n\' > {fifo}\n'
        'printf "\\377\\330\\377\\340fake-jpeg"\n'
    )
    grim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{grim.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-1")
    config = collector_config(tmp_path, "127.0.0.1:9092", screenshot_interval_s=3600)
    write_consent(config.consent_file, ["keys:timing", "screenshots", "context"])
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    injector.focus("xterm", "~")
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: c.screenshot_note != "waiting", "the first screenshot attempt")
        wait_for(c.settled, "delivery")
        status = c.status()
    injector.close()
    assert status["screenshots"] == "withheld: an excluded span began while it was taken"
    assert status["counters"]["screenshots_excluded"] == 1
    assert not [e for e in _sealed() if isinstance(e, ScreenshotEvent)]


def _stepped(tmp_path: Path) -> tuple[Collector, synth.FifoInjector]:
    """A collector driven pass by pass (no thread), capturing with the focus in a terminal."""
    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:text", "mouse", "context"])
    injector = synth.FifoInjector(config.inject_dir)
    c = Collector(config, producer_factory=Gate)
    injector.focus("xterm", "~")
    deadline = time.monotonic() + 30
    while not (c.edge is not None and not c.edge.excluded and len(c.readers) == 2):
        assert time.monotonic() < deadline, "the collector did not start capturing"
        c.step(0.05)
    return c, injector


def _h_key() -> bytes:
    from capturelab.collector import evdev  # noqa: PLC0415

    t = time.time_ns()
    sec, usec = t // 10**9, t % 10**9 // 1000
    return b"".join(evdev.pack(sec, usec, keys.EV_KEY, keys.K["KEY_H"], v) for v in (1, 0))


def test_keys_queued_in_the_vault_stay_withheld_when_the_focus_leaves_it(tmp_path: Path) -> None:
    c, injector = _stepped(tmp_path)
    try:
        injector.focus(*synth.VAULT)
        c.step(0.5)
        assert c.edge is not None and c.edge.excluded_reasons == {"window"}
        kept, withheld = c.edge.counters.kept, c.edge.counters.excluded_keys
        injector.key(DeviceClass.KEYBOARD, _h_key())  # typed in the vault...
        injector.focus("xterm", "~")  # ...and the switch back, both ready in one pass
        c.step(0.5)
        assert not c.edge.excluded
        assert (c.edge.counters.kept, c.edge.counters.excluded_keys) == (kept, withheld + 1)
    finally:
        injector.close()
        c.shutdown(drain_s=0)


def test_a_lost_focus_source_withholds_everything_until_it_is_back(tmp_path: Path) -> None:
    class Lost:
        def fileno(self) -> None:
            return None

        def read(self) -> list[tuple[str, str]]:
            raise ConnectionError("sway closed the IPC socket")

        def close(self) -> None:
            pass

    c, injector = _stepped(tmp_path)
    try:
        assert c.edge is not None
        c.devices.context = Lost()
        c.devices.read_context(c.edge)
        assert c.edge.excluded_reasons == {"focus unknown"}
        assert c.status()["focus_source"] == "lost: sway closed the IPC socket"
        kept = c.edge.counters.kept
        injector.key(DeviceClass.KEYBOARD, _h_key())
        c.step(0.2)
        assert c.edge.counters.kept == kept  # the source reopens on the next rescan
    finally:
        injector.close()
        c.shutdown(drain_s=0)
